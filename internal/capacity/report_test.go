package capacity

import (
	"strings"
	"testing"
)

// The report reads the points right: CPU per packet ratios, ranges over
// repeats, loss from both ends, and the highest loss-free node count.
func TestReportFromPoints(t *testing.T) {
	pt := func(m Mode, n int, cpu float64, sent, recv, drops uint64) Point {
		return Point{Mode: m, Nodes: n, Rate: 1, Window: 10, ReceiverCPU: cpu, ReceivedInWindow: uint64(n) * 10,
			Sent: Sent{Samples: sent}, Received: recv, KernelDrops: drops, Memory: Memory{Peak: uint64(n) * 2048, RSS: 1},
			Load: [2]float64{0.5, 0.7}}
	}
	points := []Point{
		pt(ModeBare, 10000, 0.10, 130000, 130000, 0), pt(ModeBackground, 10000, 0.15, 130000, 130000, 0), pt(ModeDebug, 10000, 0.18, 130000, 130000, 0),
		pt(ModeBare, 10000, 0.12, 130000, 130000, 0), pt(ModeBackground, 10000, 0.15, 130000, 130000, 0), pt(ModeDebug, 10000, 0.18, 130000, 130000, 0),
		pt(ModeBare, 100000, 0.40, 1300000, 1300000, 0), pt(ModeBackground, 100000, 0.60, 1300000, 1299000, 1000), pt(ModeDebug, 100000, 0.90, 1300000, 1200000, 100000),
	}
	r := Report(points, "make bench-capacity", "recvstats (hoststat) v1")
	for _, want := range []string{
		"| 10,000 | 10–12 % | 15 % | 1.25–1.50× | 18 % (1.20×) | 0 / 0 / 0 (0 / 0 / 0) | 20 MiB | 2.0 KiB |",
		"| 100,000 | 40 % | 60 % | 1.50× | 90 % (1.50×) | 0 / 1000 / 100000 (0 / 1000 / 100000) |",
		"Highest node count with no loss, recvstats: **10,000**.",
		"Highest node count with no loss, recvstats -d: **10,000**.",
		"make bench-capacity\n",
		", recvstats (hoststat) v1,",
		"| 0.5–0.7 |",
		"growth of recvstats' peak RSS from 10,000 to 100,000 nodes): **2048 bytes**.",
	} {
		if !strings.Contains(r, want) {
			t.Errorf("report lacks %q:\n%s", want, r)
		}
	}
}
