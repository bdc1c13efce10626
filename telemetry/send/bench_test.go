package send

import (
	"io"
	"log/slog"
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// BenchmarkSample is one sendstats period: read /proc, encode, send by
// unicast to two masters (over loopback, to sockets nobody reads, so
// their cost is not counted). It reports the CPU time of the whole
// process per sample (goal ≤ 50 µs).
func BenchmarkSample(b *testing.B) {
	var masters []netip.AddrPort
	for range 2 {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		masters = append(masters, c.LocalAddr().(*net.UDPAddr).AddrPort())
	}
	s, err := New(Config{Masters: masters, Node: 1, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	s.sendSample(false) // warm: cpuinfo read, buffers sized
	var r0, r1 unix.Rusage
	unix.Getrusage(unix.RUSAGE_SELF, &r0)
	b.ReportAllocs()
	for b.Loop() {
		s.sendSample(false)
	}
	unix.Getrusage(unix.RUSAGE_SELF, &r1)
	cpu := time.Duration(r1.Utime.Nano() + r1.Stime.Nano() - r0.Utime.Nano() - r0.Stime.Nano())
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N)/1e3, "cpu-µs/sample")
	b.ReportMetric(float64(s.sent), "datagrams/sample")
}
