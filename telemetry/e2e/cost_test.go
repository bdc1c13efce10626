package e2e_test

import (
	"bufio"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hoststat/hoststat/internal/netlab"
	"github.com/hoststat/hoststat/telemetry/wire"
)

// cpuTime is the CPU time of every thread of pid, from schedstat (ns,
// unlike the 10 ms ticks of /proc/PID/stat).
func cpuTime(t testing.TB, pid int) time.Duration {
	tasks, err := filepath.Glob(filepath.Join("/proc", strconv.Itoa(pid), "task", "*", "schedstat"))
	if err != nil || len(tasks) == 0 {
		t.Fatalf("no schedstat for pid %d", pid)
	}
	var sum int64
	for _, f := range tasks {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		if n, err := strconv.ParseInt(strings.Fields(string(b))[0], 10, 64); err == nil {
			sum += n
		}
	}
	return time.Duration(sum)
}

// peakRSS is VmHWM of pid in bytes.
func peakRSS(t testing.TB, pid int) int64 {
	f, err := os.Open(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	t.Fatal("no VmHWM")
	return 0
}

// BenchmarkSendstatsProcess measures the real sendstats daemon, as
// deployed (in the background, logging at info, unicast to a socket of
// ours), at a period of 1 s (the default) and 0.1 s: CPU time of all its
// threads per sample received, and its peak RSS (goals ≤ 50 µs, ≤ 15 MiB).
// Beside it, over the same window, runs the baseline: a Go program that
// does nothing but wake on a time.Ticker of the same period (testdata/
// ticker), whose CPU per tick is what the Go runtime and the machine charge
// for one wake-up. SENDSTATS_BENCH_RATE=SECONDS measures that one period
// instead. The window is 20 periods, at least 5 s.
func BenchmarkSendstatsProcess(b *testing.B) {
	rates := []string{"1", "0.1"}
	if r := os.Getenv("SENDSTATS_BENCH_RATE"); r != "" {
		rates = []string{r}
	}
	_, sendstats := bins(b)
	ticker := filepath.Join(netlab.BuildCommands(b, "./telemetry/e2e/testdata/ticker"), "ticker")
	for _, rate := range rates {
		b.Run("rate="+rate+"s", func(b *testing.B) {
			period, err := time.ParseDuration(rate + "s")
			if err != nil {
				b.Fatal(err)
			}
			measureSendstats(b, sendstats, ticker, rate, max(5*time.Second, 20*period))
		})
	}
}

func measureSendstats(b *testing.B, sendstats, ticker, rate string, window time.Duration) {
	sink, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	defer sink.Close()
	sink.SetReadBuffer(4 << 20)
	args := []string{"-a", sink.LocalAddr().String(), "--node", "1", "-r", rate}
	if r := runCmd(b, 30*time.Second, sendstats, args...); r.code != 0 {
		b.Fatalf("sendstats: exit %d: %s", r.code, r.stderr)
	}
	pid := daemonPID(b, sendstats, args...)
	if pid == 0 {
		b.Fatal("background sendstats not found")
	}
	defer killPID(b, pid)
	base := exec.Command(ticker, rate)
	if err := base.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { base.Process.Kill(); base.Wait() }()

	count := func(d time.Duration) int {
		buf := make([]byte, 2048)
		n := 0
		deadline := time.Now().Add(d)
		for {
			sink.SetReadDeadline(deadline)
			m, _, err := sink.ReadFrom(buf)
			if err != nil {
				return n
			}
			// One sample: part 0 of its status (its details datagram
			// and further parts are not samples).
			if m >= wire.HeaderLen && wire.Kind(buf[wire.KindOffset]) == wire.KindStatus && buf[40] == 0 && buf[41] == 0 {
				n++
			}
		}
	}
	count(time.Second) // past start-up
	c0, t0 := cpuTime(b, pid), cpuTime(b, base.Process.Pid)
	start := time.Now()
	samples := count(window)
	cpu, tcpu := cpuTime(b, pid)-c0, cpuTime(b, base.Process.Pid)-t0
	took := time.Since(start)
	rss := peakRSS(b, pid)
	if samples == 0 {
		b.Fatal("no samples received")
	}
	period, _ := time.ParseDuration(rate + "s")
	ticks := float64(took) / float64(period)
	perSample := float64(cpu.Nanoseconds()) / 1e3 / float64(samples)
	perTick := float64(tcpu.Nanoseconds()) / 1e3 / ticks
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(perSample, "cpu-µs/sample")
	b.ReportMetric(float64(rss)/(1<<20), "peak-RSS-MiB")
	b.ReportMetric(perTick, "go-ticker-cpu-µs/tick")
	b.ReportMetric(perSample/perTick, "x-go-ticker")
	b.ReportMetric(float64(samples)/took.Seconds(), "samples/s")
}
