package recv_test

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/hoststat/hoststat/internal/netlab"
	"github.com/hoststat/hoststat/shm"
	"github.com/hoststat/hoststat/telemetry/recv"
	"github.com/hoststat/hoststat/telemetry/sample"
	"github.com/hoststat/hoststat/telemetry/send"
	"github.com/hoststat/hoststat/telemetry/wire"
)

// testKey signs the packets of tests whose senders share 127.0.0.1 and
// tell their node numbers apart: only a signed number is believed.
var testKey = []byte("hoststat-test-key-0123456789")

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("HOSTSTAT_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// startServer runs a master on 127.0.0.1, with a fresh table unless
// cfg names one; stop ends it (else the test's end does).
func startServer(t testing.TB, cfg recv.Config) (srv *recv.Server, dir string, stop func()) {
	t.Helper()
	if cfg.ShmDir == "" {
		cfg.ShmDir = t.TempDir()
	}
	if !cfg.Listen.IsValid() && cfg.Transport == nil {
		cfg.Listen = netip.MustParseAddr("127.0.0.1")
	}
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	srv, err := recv.NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return srv, cfg.ShmDir, netlab.Serve(t, srv.Serve, srv.Close)
}

func startSender(t testing.TB, cfg send.Config) *send.Sender {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	s, err := send.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	netlab.Serve(t, s.Run, s.Close)
	return s
}

func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	netlab.WaitFor(t, timeout, what, func() error {
		if !cond() {
			return errors.New("not yet")
		}
		return nil
	})
}

func summary(t testing.TB, r *shm.Reader, node int) (shm.Summary, bool) {
	t.Helper()
	s, ok, err := r.Summary(node)
	if err != nil {
		t.Fatalf("reading node %d: %v", node, err)
	}
	return s, ok
}

func openReader(t testing.TB, dir string) *shm.Reader {
	t.Helper()
	r, err := shm.OpenReader(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// Real sendstats cores reading the real /proc reach a master by unicast
// over loopback: explicit and derived node numbers both land in the table.
func TestLoopbackUnicast(t *testing.T) {
	srv, dir, _ := startServer(t, recv.Config{Key: testKey})
	for _, n := range []int{3, 5} {
		startSender(t, send.Config{Node: n, Key: testKey, Masters: []netip.AddrPort{srv.Addr()}, Rate: 50 * time.Millisecond})
	}
	r := openReader(t, dir)
	waitFor(t, 5*time.Second, "nodes 3 and 5 in the table", func() bool {
		_, ok3 := summary(t, r, 3)
		_, ok5 := summary(t, r, 5)
		return ok3 && ok5
	})
	s, _ := summary(t, r, 3)
	if s.CPUs == 0 || s.Memory.Total == 0 || s.Addr.Addr() != netip.MustParseAddr("127.0.0.1") {
		t.Errorf("node 3 record: %+v", s)
	}
	waitFor(t, 5*time.Second, "CPU percent of node 3", func() bool {
		s, _ := summary(t, r, 3)
		return s.TotalPercent > 0
	})
	if d := srv.Drops(); d.Total() != 0 {
		t.Errorf("drops: %v", d.String())
	}
}

// Unnumbered senders from distinct addresses get distinct numbers, first
// come first assigned, and keep them across a master restart.
func TestDerivedNodeNumbersSurviveRestart(t *testing.T) {
	srv, dir, stop := startServer(t, recv.Config{})
	addr := srv.Addr()
	// Senders on 127.0.0.2 and 127.0.0.3 (all of 127/8 is loopback).
	sendFrom := func(ip string, seq uint32) {
		conn, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(ip), 0)))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		enc := wire.NewEncoder(nil)
		smp := &sample.Sample{Time: time.Now(), BootID: [16]byte{ip[len(ip)-1]}, CPUs: make([]sample.CPU, 2)}
		bufs, err := enc.AppendStatus(nil, wire.NoNode, seq, smp)
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range bufs {
			conn.WriteToUDPAddrPort(b, addr)
		}
	}
	sendFrom("127.0.0.2", 1)
	r := openReader(t, dir)
	waitFor(t, 2*time.Second, "first sender as node 0", func() bool { _, ok := summary(t, r, 0); return ok })
	sendFrom("127.0.0.3", 1)
	waitFor(t, 2*time.Second, "second sender as node 1", func() bool { _, ok := summary(t, r, 1); return ok })
	if s, _ := summary(t, r, 1); s.Addr.Addr() != netip.MustParseAddr("127.0.0.3") {
		t.Errorf("node 1 is %v, want 127.0.0.3", s.Addr)
	}
	stop()

	// Restart: 127.0.0.3 speaks first this time and must still be node 1.
	srv2, _, _ := startServer(t, recv.Config{ShmDir: dir})
	addr = srv2.Addr()
	before, _ := summary(t, r, 1)
	sendFrom("127.0.0.3", 2)
	waitFor(t, 2*time.Second, "node 1 updated after restart", func() bool {
		s, _ := summary(t, r, 1)
		return s.LastSeen.After(before.LastSeen)
	})
	if s, _ := summary(t, r, 1); s.Addr.Addr() != netip.MustParseAddr("127.0.0.3") {
		t.Errorf("after restart node 1 is %v, want 127.0.0.3", s.Addr)
	}
	if _, ok := summary(t, r, 2); ok {
		t.Error("a restarted master gave a known sender a new number")
	}
}

// With a key, packets signed with another key or none are dropped and
// counted as authentication drops; signed ones are stored.
func TestKeyOverLoopback(t *testing.T) {
	k1, k2 := []byte("0123456789abcdef-one"), []byte("0123456789abcdef-two")
	srv, dir, _ := startServer(t, recv.Config{Key: k1})
	startSender(t, send.Config{Node: 2, Key: k2, Masters: []netip.AddrPort{srv.Addr()}, Rate: 20 * time.Millisecond})
	startSender(t, send.Config{Node: 3, Masters: []netip.AddrPort{srv.Addr()}, Rate: 20 * time.Millisecond})
	startSender(t, send.Config{Node: 1, Key: k1, Masters: []netip.AddrPort{srv.Addr()}, Rate: 20 * time.Millisecond})
	r := openReader(t, dir)
	waitFor(t, 5*time.Second, "node 1", func() bool { _, ok := summary(t, r, 1); return ok })
	waitFor(t, 5*time.Second, "auth drops", func() bool { d := srv.Drops(); return d[recv.DropAuth] >= 4 })
	for _, n := range []int{2, 3} {
		if _, ok := summary(t, r, n); ok {
			t.Errorf("node %d without the key in the table", n)
		}
	}
	if d := srv.Drops(); d.Total() != d[recv.DropAuth] {
		t.Errorf("drops other than auth: %v", d.String())
	}
}

// A restarted master gets a unicast node that sends every 30 s back at
// once: it asks the address the table remembered.
func TestRestartAsksUnicastNodes(t *testing.T) {
	srv, dir, stop := startServer(t, recv.Config{Key: testKey})
	s := startSender(t, send.Config{Node: 6, Key: testKey, Masters: []netip.AddrPort{srv.Addr()}, Rate: 30 * time.Second})
	r := openReader(t, dir)
	waitFor(t, 5*time.Second, "node 6", func() bool { _, ok := summary(t, r, 6); return ok })
	stop()

	restart := time.Now()
	srv2, _, _ := startServer(t, recv.Config{ShmDir: dir, Port: int(srv.Addr().Port()), Key: testKey})
	waitFor(t, 2*time.Second, "node 6 back", func() bool {
		sm, _ := summary(t, r, 6)
		return sm.LastSeen.After(restart)
	})
	if s.Answered() != 1 || srv2.Requests() == 0 {
		t.Errorf("answered %d, requests %d; want the node back by one answer", s.Answered(), srv2.Requests())
	}
}

// IPv6 unicast: --listen ::1, sendstats -a [::1]:PORT.
func TestLoopbackIPv6(t *testing.T) {
	c, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback})
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	c.Close()
	srv, dir, _ := startServer(t, recv.Config{Listen: netip.IPv6Loopback(), Key: testKey})
	startSender(t, send.Config{Node: 4, Key: testKey, Masters: []netip.AddrPort{srv.Addr()}, Rate: 50 * time.Millisecond})
	r := openReader(t, dir)
	waitFor(t, 5*time.Second, "node 4 over IPv6", func() bool {
		s, ok := summary(t, r, 4)
		return ok && s.Addr.Addr() == netip.IPv6Loopback()
	})
}

// The wire and the table hold to one set of limits: the largest sample the
// wire carries is stored whole, and a larger one cannot be sent.
func TestLargestSampleFitsTable(t *testing.T) {
	if wire.MaxCPUs != shm.MaxCPUs || wire.MaxNetDevs != shm.MaxNetDevs || recv.MaxNodes != shm.MaxNodes {
		t.Fatalf("limits differ: wire %d CPUs %d devices, table %d and %d; nodes %d and %d",
			wire.MaxCPUs, wire.MaxNetDevs, shm.MaxCPUs, shm.MaxNetDevs, recv.MaxNodes, shm.MaxNodes)
	}
	if _, err := wire.NewEncoder(nil).AppendStatus(nil, 1, 1, &sample.Sample{CPUs: make([]sample.CPU, wire.MaxCPUs+1)}); err == nil {
		t.Error("a sample of more CPUs than the table holds was encoded")
	}
	srv, dir, _ := startServer(t, recv.Config{Key: testKey})
	conn, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(srv.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	send := func(node uint32, cpus int) {
		s := sample.Sample{Time: time.Now(), BootTime: time.Now().Add(-time.Hour), CPUs: make([]sample.CPU, cpus)}
		s.BootID[0] = byte(node)
		pkts, err := wire.NewEncoder(testKey).AppendStatus(nil, node, 1, &s)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range pkts {
			if _, err := conn.Write(p); err != nil {
				t.Fatal(err)
			}
			time.Sleep(50 * time.Microsecond) // pace: no loss in the socket buffer
		}
	}
	send(1, wire.MaxCPUs)
	r := openReader(t, dir)
	waitFor(t, 10*time.Second, "node 1 with every CPU", func() bool { s, ok := summary(t, r, 1); return ok && s.CPUs == wire.MaxCPUs })
	if d := srv.Drops(); d.Total() != 0 {
		t.Errorf("drops: %v", d.String())
	}
}
