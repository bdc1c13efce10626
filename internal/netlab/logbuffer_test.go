package netlab

import (
	"strings"
	"sync"
	"testing"
)

// A LogBuffer takes writes from many goroutines and, with a Limit, keeps
// the newest output and says that older output was dropped.
func TestLogBuffer(t *testing.T) {
	var all LogBuffer
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 100 {
				all.Write([]byte("0123456789\n"))
			}
		}()
	}
	wg.Wait()
	if got := all.String(); len(got) != 8*100*11 || strings.Contains(got, "dropped") {
		t.Fatalf("unlimited buffer kept %d bytes, want %d", len(got), 8*100*11)
	}

	tail := LogBuffer{Limit: 100}
	for i := range 50 {
		tail.Write([]byte(strings.Repeat(string(rune('a'+i%26)), 9) + "\n"))
	}
	got := tail.String()
	if !strings.HasPrefix(got, "[…earlier output dropped…]\n") || !strings.HasSuffix(got, "xxxxxxxxx\n") {
		t.Fatalf("limited buffer: %q", got)
	}
	if n := len(strings.TrimPrefix(got, "[…earlier output dropped…]\n")); n < 50 || n > 100 {
		t.Fatalf("limited buffer kept %d bytes, want 50 to 100", n)
	}
}
