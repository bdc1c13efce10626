package capacity

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/hoststat/hoststat/internal/netlab"
)

// The benchmark's plumbing end to end, on loopback, small: the generator,
// the bare receiver and a real recvstats (background and -d), measured as
// make bench-capacity measures them. It asserts what was counted, never
// how fast.
func TestMeasureEndToEnd(t *testing.T) {
	bin := netlab.BuildCommands(t, "./cmd/recvstats", "./internal/capacity/cmd/loadgen", "./internal/capacity/cmd/barerecv")
	const nodes, rate = 500, 10.0
	o := Options{Bin: bin, Rate: rate, Warmup: 500 * time.Millisecond, Window: 2 * time.Second}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var points []Point
	for _, m := range Modes {
		p, err := Measure(ctx, o, m, nodes)
		if err != nil {
			t.Fatalf("%s: %v", m, err)
		}
		t.Logf("%s: %+v", m, p)
		points = append(points, p)

		s := p.Sent
		// The generator ran through warm-up and window: at least the
		// window's 2 s of 500 nodes at 10 Hz.
		if s.Samples < nodes*rate*2 || s.Datagrams != s.Samples || s.Unsent != 0 || !s.Signed {
			t.Errorf("%s: sent %+v, want ≥ %v signed samples, none refused", m, s, nodes*rate*2)
		}
		// Every sample sent is in the receiver's count or in the
		// kernel's drop counter: nothing is lost between the two ends.
		if p.Received+p.KernelDrops != s.Samples {
			t.Errorf("%s: received %d + kernel drops %d != sent %d", m, p.Received, p.KernelDrops, s.Samples)
		}
		if p.ReceivedInWindow == 0 || p.ReceivedInWindow > p.Received {
			t.Errorf("%s: %d received in the window of %d", m, p.ReceivedInWindow, p.Received)
		}
		if p.ReceiverCPU <= 0 || p.GeneratorCPU <= 0 || p.Memory.RSS == 0 || p.Memory.Peak < p.Memory.RSS {
			t.Errorf("%s: CPU %v / %v, memory %+v: the kernel's accounting was not read", m, p.ReceiverCPU, p.GeneratorCPU, p.Memory)
		}
		if m != ModeBare && (p.TableNodes != nodes || p.FreshNodes != nodes) {
			t.Errorf("%s: %d nodes in the table, %d updated in the window, want %d", m, p.TableNodes, p.FreshNodes, nodes)
		}
		// The receiver, also the background daemon that is not our
		// child, is gone.
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", p.ReceiverPID)); err == nil {
			if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.ReceiverPID)); !strings.Contains(string(b), ") Z") {
				t.Errorf("%s: receiver pid %d still runs after the measurement", m, p.ReceiverPID)
			}
		}
	}
	// The bare receiver must face bursts with recvstats' receive buffer.
	if _, err := exec.LookPath("ss"); err == nil {
		if a, z := points[0].ReadBuffer, points[1].ReadBuffer; a == 0 || a != z || points[2].ReadBuffer != z {
			t.Errorf("receive buffers: bare %d, recvstats %d, -d %d: capacity.DefaultReadBuffer must follow recvstats'", a, z, points[2].ReadBuffer)
		}
	}
	if points[1].ReceiverPID == 0 || points[1].ReceiverPID == points[2].ReceiverPID {
		t.Errorf("background recvstats pid %d", points[1].ReceiverPID)
	}
	table := Table(points)
	if !strings.Contains(table, "| 500 |") || !strings.Contains(table, "nodes at 10 Hz") {
		t.Errorf("table:\n%s", table)
	}
}

// With PerfDir the receiver's window is profiled and the report written
// beside the data, after the run.
func TestMeasureWithPerf(t *testing.T) {
	if _, err := exec.LookPath("perf"); err != nil {
		t.Skip("perf(1) is not installed: the profile option cannot be checked")
	}
	bin := netlab.BuildCommands(t, "./cmd/recvstats", "./internal/capacity/cmd/loadgen", "./internal/capacity/cmd/barerecv")
	dir := t.TempDir()
	o := Options{Bin: bin, Rate: 10, Warmup: 300 * time.Millisecond, Window: time.Second, PerfDir: dir}
	p, err := Measure(context.Background(), o, ModeBare, 200)
	if err != nil {
		t.Fatal(err)
	}
	if p.Profile == "" || !strings.HasPrefix(p.Profile, dir) {
		t.Fatalf("profile %q, want one in %s", p.Profile, dir)
	}
	report, err := os.ReadFile(strings.TrimSuffix(p.Profile, ".data") + ".txt")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(report), "# Samples:") {
		t.Fatalf("perf report without samples:\n%.2000s", report)
	}
}
