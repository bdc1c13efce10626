package main

import (
	"bufio"
	"io"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/hoststat/hoststat/beostat"
	"github.com/hoststat/hoststat/beostat/beostattest"
	"github.com/hoststat/hoststat/shm"
)

const benchNodes = 100_000

// benchTable opens a table of 100,000 nodes written by the real writer,
// each with two samples. With BEOSTAT_BENCH_DIR set the table is made
// there and left behind, for measuring the built command on it
// (docs/benchmarks.md).
func benchTable(b *testing.B) *beostat.Table {
	dir := os.Getenv("BEOSTAT_BENCH_DIR")
	if dir == "" {
		dir = b.TempDir()
	}
	w, err := shm.Create(dir, shm.WriterOptions{InitialNodes: benchNodes, MaxNodes: benchNodes,
		DownAfter: time.Hour, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		b.Fatal(err)
	}
	defer w.Close()
	now := time.Now()
	for n := range benchNodes {
		if err := beostattest.PutTwoSamples(w, n, now); err != nil {
			b.Fatal(err)
		}
	}
	t, err := beostat.Open(dir)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { t.Close() })
	return t
}

// countingWriter counts the bytes written through it.
type countingWriter struct{ n int64 }

func (c *countingWriter) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }

func benchShow(b *testing.B, o options) {
	t := benchTable(b)
	var c countingWriter
	out := bufio.NewWriterSize(&c, 64<<10)
	b.ReportAllocs()
	for b.Loop() {
		c.n = 0
		if err := show(out, t, o, time.Now()); err != nil {
			b.Fatal(err)
		}
		out.Flush()
	}
	b.ReportMetric(float64(c.n)/benchNodes, "B/node")
}

// The table of 100,000 nodes as beostat prints it.
func BenchmarkTable100k(b *testing.B) { benchShow(b, options{format: "text"}) }

// The same as --json.
func BenchmarkJSON100k(b *testing.B) { benchShow(b, options{format: "json"}) }

// The same as --format csv --fields node,state,cpu,load1,mem_used.
func BenchmarkCSVFields100k(b *testing.B) {
	f, err := beostat.ParseFields("node,state,cpu,load1,mem_used")
	if err != nil {
		b.Fatal(err)
	}
	benchShow(b, options{format: "csv", fields: f})
}
