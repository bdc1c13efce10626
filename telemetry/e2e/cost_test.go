package e2e_test

import (
	"bufio"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
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
// deployed (in the background, logging at info): it samples /proc every
// millisecond towards a socket of ours for two seconds; CPU time of all
// its threads per sample received, and its peak RSS (goals ≤ 50 µs,
// ≤ 15 MiB). SENDSTATS_BENCH_RATE overrides the period (seconds).
func BenchmarkSendstatsProcess(b *testing.B) {
	_, sendstats := bins(b)
	sink, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	defer sink.Close()
	sink.SetReadBuffer(4 << 20)
	rate := "0.001"
	if r := os.Getenv("SENDSTATS_BENCH_RATE"); r != "" {
		rate = r // e.g. 1 for the deployed default; then run for longer
	}
	args := []string{"-a", sink.LocalAddr().String(), "--node", "1", "-r", rate}
	if r := runCmd(b, 30*time.Second, sendstats, args...); r.code != 0 {
		b.Fatalf("sendstats: exit %d: %s", r.code, r.stderr)
	}
	pid := daemonPID(b, sendstats, args...)
	if pid == 0 {
		b.Fatal("background sendstats not found")
	}
	defer killPID(b, pid)

	count := func(d time.Duration) int {
		buf := make([]byte, 2048)
		n := 0
		deadline := time.Now().Add(d)
		for {
			sink.SetReadDeadline(deadline)
			if _, _, err := sink.ReadFrom(buf); err != nil {
				return n
			}
			n++
		}
	}
	count(500 * time.Millisecond) // past start-up
	c0 := cpuTime(b, pid)
	samples := count(2 * time.Second)
	cpu := cpuTime(b, pid) - c0
	rss := peakRSS(b, pid)
	if samples == 0 {
		b.Fatal("no samples received")
	}
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(float64(cpu.Microseconds())/float64(samples), "cpu-µs/sample")
	b.ReportMetric(float64(rss)/(1<<20), "peak-RSS-MiB")
	b.ReportMetric(float64(samples)/2, "samples/s")
}
