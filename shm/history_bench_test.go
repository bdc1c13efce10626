package shm

import (
	"strconv"
	"testing"
	"time"
)

// One Append of a node that has a slot, round robin over 1024 nodes, a
// new second each round (a new minute every 60 rounds): what recvstats
// adds to each stored packet.
func BenchmarkHistoryAppend(b *testing.B) {
	w := create(b, b.TempDir(), WriterOptions{})
	b.Cleanup(func() { w.Close() })
	h, err := w.OpenHistory(HistoryOptions{Nodes: 1024, Initial: 1024})
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

// One node's history read (beostat --history, a beostatus detail), the
// last node of a file holding nodes slots, 15 minutes of points each.
func BenchmarkHistoryRead(b *testing.B) {
	for _, nodes := range []int{1024, 16384} {
		b.Run("nodes="+strconv.Itoa(nodes), func(b *testing.B) {
			dir := benchHistoryDir(b)
			w := create(b, dir, WriterOptions{})
			b.Cleanup(func() { w.Close() })
			h, err := w.OpenHistory(HistoryOptions{Nodes: nodes, Initial: nodes})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { h.Close() })
			t := time.Unix(1_800_000_000, 0)
			for n := range nodes {
				if err := h.Append(n, t, figuresAt(n)); err != nil {
					b.Fatal(err)
				}
			}
			r, err := OpenHistoryReader(dir)
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { r.Close() })
			for b.Loop() {
				if _, fine, ok, err := r.Read(nodes-1, time.Time{}); !ok || err != nil || len(fine) != 1 {
					b.Fatal(ok, err, len(fine))
				}
			}
		})
	}
}
