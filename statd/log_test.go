package statd

import (
	"fmt"
	"testing"
	"time"
)

func TestRefusalLoggedOncePerCallerAndReason(t *testing.T) {
	r := newRefusalLog()
	now := time.Now()
	if log, _ := r.first("10.0.0.1", "remote SM_MON", now); !log {
		t.Fatal("first refusal not logged")
	}
	if log, _ := r.first("10.0.0.1", "remote SM_MON", now); log {
		t.Fatal("second identical refusal not suppressed")
	}
	for _, k := range [][2]string{{"10.0.0.2", "remote SM_MON"}, {"10.0.0.1", "bad mon_name"}} {
		if log, _ := r.first(k[0], k[1], now); !log {
			t.Fatalf("distinct refusal %q suppressed", k)
		}
	}
}

// A spray of refusals from ever new (spoofed) callers writes at most the
// burst at once; the next record, once the budget is back, says how many
// went unlogged.
func TestRefusalsFromManyCallersBounded(t *testing.T) {
	r := newRefusalLog()
	now := time.Now()
	logged := 0
	for i := range 5000 {
		if log, _ := r.first(fmt.Sprintf("10.%d.%d.%d", i>>16, (i>>8)&255, i&255), "bad mon_name", now); log {
			logged++
		}
	}
	if logged != refusalBurst {
		t.Fatalf("%d of 5000 first refusals logged at once, want %d", logged, refusalBurst)
	}
	log, skipped := r.first("192.0.2.1", "bad mon_name", now.Add(time.Second))
	if !log || skipped != 5000-refusalBurst {
		t.Fatalf("a second later: logged %v, unlogged before %d, want %d", log, skipped, 5000-refusalBurst)
	}
}
