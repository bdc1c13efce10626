package recv_test

import (
	"net"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/hoststat/hoststat/telemetry/recv"
	"github.com/hoststat/hoststat/telemetry/sample"
	"github.com/hoststat/hoststat/telemetry/wire"
)

// sendAs sends the datagrams bufs to the master from ip (any of 127/8).
func sendAs(t *testing.T, ip string, to netip.AddrPort, bufs ...[]byte) {
	t.Helper()
	conn, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(ip), 0)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for _, b := range bufs {
		if _, err := conn.WriteToUDPAddrPort(b, to); err != nil {
			t.Fatal(err)
		}
	}
}

func encode(t *testing.T, key []byte, node uint32, seq uint32, s *sample.Sample) []byte {
	t.Helper()
	bufs, err := wire.NewEncoder(key).AppendStatus(nil, node, seq, s)
	if err != nil || len(bufs) != 1 {
		t.Fatalf("encode: %d datagrams, %v", len(bufs), err)
	}
	return bufs[0]
}

func testSample(boot byte) *sample.Sample {
	return &sample.Sample{Time: time.Now(), BootTime: time.Now().Add(-time.Hour).Truncate(time.Second),
		BootID: [16]byte{boot}, CPUs: make([]sample.CPU, 2), Memory: sample.Memory{Total: uint64(boot) << 30}}
}

// One unsigned 157-byte datagram claiming node 1048575 used to make the
// table 1.4 GB: its number is not believed (no key, no pin), so it is
// stored under a number from its address and the table stays small.
func TestForgedNodeNumberDoesNotGrowTable(t *testing.T) {
	srv, dir, _ := startServer(t, recv.Config{})
	sendAs(t, "127.0.0.1", srv.Addr(), encode(t, nil, 1<<20-1, 1, testSample(1)))
	r := openReader(t, dir)
	waitFor(t, 5*time.Second, "the sample stored", func() bool { return srv.Stored() == 1 })
	if _, ok := summary(t, r, 0); !ok {
		t.Error("the sender is not node 0, the first number from its address")
	}
	fi, err := os.Stat(srv.TablePath())
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() > 8<<20 {
		t.Errorf("table is %d bytes after one forged node number", fi.Size())
	}
}

// With a key, a captured sample is refused after a restart of recvstats
// (the replay window is kept beside the table), whether replayed from the
// node's address or from another one.
func TestReplayAfterRestart(t *testing.T) {
	srv, dir, stop := startServer(t, recv.Config{Key: testKey})
	numbered := encode(t, testKey, 3, 10, testSample(3))
	unnumbered := encode(t, testKey, wire.NoNode, 10, testSample(4))
	sendAs(t, "127.0.0.1", srv.Addr(), numbered)
	sendAs(t, "127.0.0.5", srv.Addr(), unnumbered)
	r := openReader(t, dir)
	waitFor(t, 5*time.Second, "both samples stored", func() bool { return srv.Stored() == 2 })
	stop()

	srv2, _, _ := startServer(t, recv.Config{Key: testKey, ShmDir: dir})
	before3, _ := summary(t, r, 3)
	sendAs(t, "127.0.0.1", srv2.Addr(), numbered)
	sendAs(t, "127.0.0.6", srv2.Addr(), numbered, unnumbered)
	sendAs(t, "127.0.0.5", srv2.Addr(), unnumbered)
	waitFor(t, 5*time.Second, "four drops", func() bool { d := srv2.Drops(); return d.Total() == 4 })
	if srv2.Stored() != 0 {
		t.Errorf("%d replayed samples stored after the restart", srv2.Stored())
	}
	if s, _ := summary(t, r, 3); !s.LastSeen.Equal(before3.LastSeen) {
		t.Error("node 3 shown heard again by a replay")
	}
	// A fresh sample of node 3 is still taken.
	sendAs(t, "127.0.0.1", srv2.Addr(), encode(t, testKey, 3, 11, testSample(3)))
	waitFor(t, 5*time.Second, "the fresh sample", func() bool { return srv2.Stored() == 1 })
}

// fakeClock is the master's injected clock.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// The server loop runs on the injected clock: a node silent for
// --forget-after by that clock is forgotten, its record removed from the
// table and its number given to the next new sender.
func TestServerForgetsSilentNodes(t *testing.T) {
	clock := &fakeClock{now: time.Now()}
	srv, dir, _ := startServer(t, recv.Config{Now: clock.Now, Table: recv.TableConfig{ForgetAfter: time.Hour}})
	for seq := uint32(1); seq <= 3; seq++ {
		sendAs(t, "127.0.0.3", srv.Addr(), encode(t, nil, wire.NoNode, seq, testSample(3)))
	}
	r := openReader(t, dir)
	waitFor(t, 5*time.Second, "node 0", func() bool { _, ok := summary(t, r, 0); return ok && srv.Stored() == 3 })
	clock.Add(59 * time.Minute)
	time.Sleep(300 * time.Millisecond) // ticks at the new time
	if _, ok := summary(t, r, 0); !ok || srv.Forgotten() != 0 {
		t.Fatal("node forgotten before --forget-after")
	}
	clock.Add(2 * time.Minute)
	waitFor(t, 5*time.Second, "node 0 forgotten", func() bool { _, ok := summary(t, r, 0); return !ok && srv.Forgotten() == 1 })
	sendAs(t, "127.0.0.4", srv.Addr(), encode(t, nil, wire.NoNode, 1, testSample(4)))
	waitFor(t, 5*time.Second, "the new sender as node 0", func() bool {
		s, ok := summary(t, r, 0)
		return ok && s.Addr.Addr() == netip.MustParseAddr("127.0.0.4")
	})
}
