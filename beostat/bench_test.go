package beostat

import (
	"testing"
	"time"

	"github.com/hoststat/hoststat/beostat/beostattest"
	"github.com/hoststat/hoststat/shm"
)

// benchTable opens a table of nodes nodes, each with two samples.
func benchTable(b testing.TB, nodes int) *Table {
	dir := b.TempDir()
	w, err := shm.Create(dir, shm.WriterOptions{InitialNodes: nodes, Logger: quiet})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { w.Close() })
	now := time.Now()
	for n := range nodes {
		if err := beostattest.PutTwoSamples(w, n, now); err != nil {
			b.Fatal(err)
		}
	}
	t, err := Open(dir)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { t.Close() })
	return t
}

// The overview of 10,000 nodes, as beostat prints it.
func BenchmarkStatus10000(b *testing.B) {
	t := benchTable(b, 10_000)
	for b.Loop() {
		st, err := t.Status()
		if err != nil || len(st) != 10_000 {
			b.Fatal(len(st), err)
		}
	}
}

// One node in full, as beostat --node prints it.
func BenchmarkDetail(b *testing.B) {
	t := benchTable(b, 16)
	for b.Loop() {
		if _, err := t.Detail(7); err != nil {
			b.Fatal(err)
		}
	}
}
