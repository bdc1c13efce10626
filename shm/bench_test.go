package shm

import (
	"os"
	"testing"

	"github.com/hoststat/hoststat/telemetry/rates"
	"github.com/hoststat/hoststat/telemetry/sample"
)

func benchTable(b *testing.B, nodes, cpus, nets int) *Reader {
	dir := b.TempDir()
	w := create(b, dir, WriterOptions{InitialNodes: nodes})
	b.Cleanup(func() { w.Close() })
	for n := range nodes {
		if err := putCounter(w, n, uint64(n), cpus, nets); err != nil {
			b.Fatal(err)
		}
	}
	return openReader(b, dir)
}

// One node lookup, fixed part only (goal ≤ 200 ns).
func BenchmarkSummary(b *testing.B) {
	r := benchTable(b, 10_000, 4, 3)
	n := 0
	for b.Loop() {
		if _, ok, err := r.Summary(n); !ok || err != nil {
			b.Fatal(ok, err)
		}
		n = (n + 7919) % 10_000
	}
}

// One node's whole record: 4 CPUs, 3 devices.
func BenchmarkRead(b *testing.B) {
	r := benchTable(b, 10_000, 4, 3)
	var rec Record
	n := 0
	for b.Loop() {
		if ok, err := r.Read(n, &rec); !ok || err != nil {
			b.Fatal(ok, err)
		}
		n = (n + 7919) % 10_000
	}
}

// One big node's whole record: 1024 CPUs, 64 devices.
func BenchmarkReadBig(b *testing.B) {
	r := benchTable(b, 4, 1024, 64)
	var rec Record
	for b.Loop() {
		if ok, err := r.Read(1, &rec); !ok || err != nil {
			b.Fatal(ok, err)
		}
	}
}

// A scan of the fixed part of 10,000 nodes.
func BenchmarkScan10000(b *testing.B) {
	r := benchTable(b, 10_000, 4, 3)
	for b.Loop() {
		for n := range 10_000 {
			if _, ok, err := r.Summary(n); !ok || err != nil {
				b.Fatal(ok, err)
			}
		}
	}
}

// A full scan of 10,000 nodes' whole records.
func BenchmarkScanRead10000(b *testing.B) {
	r := benchTable(b, 10_000, 4, 3)
	var rec Record
	for b.Loop() {
		for n := range 10_000 {
			if ok, err := r.Read(n, &rec); !ok || err != nil {
				b.Fatal(ok, err)
			}
		}
	}
}

func benchPut(b *testing.B, nodes, cpus, nets int) {
	dir := b.TempDir()
	w := create(b, dir, WriterOptions{InitialNodes: nodes})
	defer w.Close()
	samples := make([]*sample.Sample, nodes)
	for n := range samples {
		samples[n] = counterSample(uint64(n), cpus, nets)
	}
	c := uint64(0)
	var last sample.Sample
	var fig rates.Rates
	for b.Loop() {
		n := int(c % uint64(nodes))
		s := samples[n]
		s.Time = s.Time.Add(1e9)
		s.CPUs[0].Ticks.User += 10
		s.Net[0].RxBytes += 1000
		// As recvstats does: figures against the stored sample.
		var prev *sample.Sample
		if w.Last(n, &last) {
			prev = &last
		}
		fig.Between(prev, s)
		if err := w.PutRates(n, addrOf(n), s.Time, s, &fig); err != nil {
			b.Fatal(err)
		}
		c++
	}
}

// Writer Put of a small node (4 CPUs, 3 devices) into a 10,000-node table,
// with its figures derived against the stored sample as recvstats does.
func BenchmarkPut(b *testing.B) { benchPut(b, 10_000, 4, 3) }

// The same for a 1024-CPU, 64-device node.
func BenchmarkPutBig(b *testing.B) { benchPut(b, 4, 1024, 64) }

// benchHistoryDir is a tmpfs directory when the machine has /dev/shm (as
// /var/shm is on a master), else a test directory.
func benchHistoryDir(b *testing.B) string {
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		dir, err := os.MkdirTemp("/dev/shm", "hoststat-bench-")
		if err == nil {
			b.Cleanup(func() { os.RemoveAll(dir) })
			return dir
		}
	}
	return b.TempDir()
}
