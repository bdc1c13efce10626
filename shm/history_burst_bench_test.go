package shm

import (
	"slices"
	"strconv"
	"testing"
	"time"
)

// A fresh master that a whole cluster reaches at once: every node's first
// point at the rate of 100,000 new nodes a second (10 µs apart, the
// capacity benchmark's top rate), into a history of --history-nodes
// slots starting small, and a second round a second later. What
// recvstats' socket must absorb is the longest single Append
// (max-append-µs; p999-append-µs the 99.9th percentile);
// nodes-without-history is how many had no point kept after the second
// round. Public API only, so that the same file runs on older layouts.
func BenchmarkHistoryFreshBurst(b *testing.B) {
	for _, nodes := range []int{1024, 16384} {
		b.Run("nodes="+strconv.Itoa(nodes), func(b *testing.B) { benchHistoryFreshBurst(b, nodes) })
	}
}

func benchHistoryFreshBurst(b *testing.B, nodes int) {
	var took []time.Duration
	var missing, runs int
	for b.Loop() {
		b.StopTimer()
		dir := benchHistoryDir(b)
		w := create(b, dir, WriterOptions{})
		h, err := w.OpenHistory(HistoryOptions{Nodes: nodes})
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		start := time.Unix(1_800_000_000, 0)
		next := time.Now()
		for round := range 2 {
			if round > 0 {
				next = next.Add(time.Second - time.Duration(nodes)*10*time.Microsecond)
			}
			for n := range nodes {
				for time.Now().Before(next) {
				}
				next = next.Add(10 * time.Microsecond)
				t0 := time.Now()
				h.Append(n, start.Add(time.Duration(round)*time.Second), figuresAt(n))
				took = append(took, time.Since(t0))
			}
		}
		b.StopTimer()
		r, err := OpenHistoryReader(dir)
		if err != nil {
			b.Fatal(err)
		}
		for n := range nodes {
			if _, fine, ok, err := r.Read(n, time.Time{}); err != nil || !ok || len(fine) == 0 {
				missing++
			}
		}
		runs++
		r.Close()
		h.Close()
		w.Close()
		b.StartTimer()
	}
	slices.Sort(took)
	b.ReportMetric(float64(took[len(took)-1].Microseconds()), "max-append-µs")
	b.ReportMetric(float64(took[len(took)*999/1000].Microseconds()), "p999-append-µs")
	b.ReportMetric(float64(missing)/float64(runs), "nodes-without-history")
}
