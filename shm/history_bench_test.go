package shm

import (
	"testing"
	"time"
)

// One Append of a node that has a slot, round robin over 1024 nodes, a
// new second each round (a new minute every 60 rounds): what recvstats
// adds to each stored packet.
func BenchmarkHistoryAppend(b *testing.B) {
	w := create(b, b.TempDir(), WriterOptions{})
	b.Cleanup(func() { w.Close() })
	h, err := w.OpenHistory(HistoryOptions{Nodes: 1024})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { h.Close() })
	t := time.Unix(1_800_000_000, 0)
	i := 0
	for b.Loop() {
		n := i % 1024
		if n == 0 {
			t = t.Add(time.Second)
		}
		if err := h.Append(n, t, figuresAt(i)); err != nil {
			b.Fatal(err)
		}
		i++
	}
}
