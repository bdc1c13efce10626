package e2e_test

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hoststat/hoststat/internal/netlab"
	"github.com/hoststat/hoststat/shm"
	"github.com/hoststat/hoststat/telemetry/e2e/memnet"
	"github.com/hoststat/hoststat/telemetry/recv"
	"github.com/hoststat/hoststat/telemetry/sample"
	"github.com/hoststat/hoststat/telemetry/send"
	"github.com/hoststat/hoststat/telemetry/wire"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// fakeNode produces samples whose CPU counters grow.
func fakeNode(id byte) func(*sample.Sample) error {
	var ticks atomic.Uint64
	boot := time.Now().Add(-time.Hour).Truncate(time.Second)
	return func(s *sample.Sample) error {
		t := ticks.Add(100)
		*s = sample.Sample{Time: time.Now(), BootTime: boot, BootID: [16]byte{id},
			Total: sample.Ticks{User: t, Idle: t}, CPUs: []sample.CPU{{Ticks: sample.Ticks{User: t, Idle: t}, Model: "mem"}},
			Memory: sample.Memory{Total: uint64(id) << 30}, Net: []sample.NetDev{{Name: "eth0", RxBytes: t}}}
		return nil
	}
}

type memMaster struct {
	srv  *recv.Server
	stop func()
}

func startMemMaster(t *testing.T, n *memnet.Network, dir string) *memMaster {
	t.Helper()
	ep, err := n.Listen(netip.MustParseAddrPort("10.0.0.1:3040"))
	if err != nil {
		t.Fatal(err)
	}
	ep.Join(wire.DefaultGroup)
	// The nodes (startMemNode) send their numbers unsigned: pinned here.
	pins := recv.NodeMap{}
	for i := 1; i <= 3; i++ {
		pins[memNodeAddr(i).Addr()] = i
	}
	srv, err := recv.NewServer(recv.Config{Transport: memnet.RecvTransport{Endpoint: ep}, Interface: "mem", ShmDir: dir,
		DownAfter: time.Second, Logger: quiet, NodeMap: pins})
	if err != nil {
		t.Fatal(err)
	}
	return &memMaster{srv: srv, stop: netlab.Serve(t, srv.Serve, srv.Close)}
}

func memNodeAddr(i int) netip.AddrPort {
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, 0, byte(10 + i)}), 3040)
}

type memNode struct {
	s    *send.Sender
	stop func()
}

func startMemNode(t *testing.T, n *memnet.Network, i int, rate time.Duration) *memNode {
	t.Helper()
	ep, err := n.Listen(memNodeAddr(i))
	if err != nil {
		t.Fatal(err)
	}
	ep.Join(wire.DefaultGroup)
	s, err := send.New(send.Config{Transport: memnet.SendTransport{Endpoint: ep}, Interface: "mem", Node: i, Rate: rate,
		Collect: fakeNode(byte(i)), Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	return &memNode{s: s, stop: netlab.Serve(t, s.Run, s.Close)}
}

// The same protocol code over the in-memory network: three nodes by
// multicast reach the master; a silent node makes the master ask (and
// the others answer); a restarted master has the live nodes back at once
// although they send every 30 s.
func TestInMemoryCluster(t *testing.T) {
	n := memnet.New()
	dir := t.TempDir()
	m := startMemMaster(t, n, dir)
	r, err := shm.OpenReader(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	seen := func(node int, since time.Time) error {
		s, ok, err := r.Summary(node)
		switch {
		case err != nil:
			return err
		case !ok:
			return fmt.Errorf("node %d missing", node)
		case !s.LastSeen.After(since):
			return fmt.Errorf("node %d not seen since %v", node, since)
		case s.Memory.Total != uint64(node)<<30:
			return fmt.Errorf("node %d has the data of another: %+v", node, s)
		}
		return nil
	}
	start := time.Now()
	nodes := []*memNode{startMemNode(t, n, 1, 100*time.Millisecond), startMemNode(t, n, 2, 100*time.Millisecond), startMemNode(t, n, 3, 100*time.Millisecond)}
	for i := 1; i <= 3; i++ {
		netlab.WaitFor(t, 3*time.Second, fmt.Sprintf("node %d", i), func() error { return seen(i, start) })
	}
	// Node 3 falls silent: the master asks within ~2× its interval plus
	// the request gap, and the others answer the multicast request.
	before := m.srv.Requests()
	nodes[2].stop()
	netlab.WaitFor(t, 3*time.Second, "an update request for the silent node", func() error {
		if m.srv.Requests() == before {
			return errors.New("no request")
		}
		return nil
	})
	netlab.WaitFor(t, 2*time.Second, "answers", func() error {
		if nodes[0].s.Answered() == 0 || nodes[1].s.Answered() == 0 {
			return errors.New("no answer yet")
		}
		return nil
	})

	// Slow nodes, master restart.
	nodes[0].stop()
	nodes[1].stop()
	slow := time.Now()
	for i := range 2 {
		nodes[i] = startMemNode(t, n, i+1, 30*time.Second)
	}
	for i := 1; i <= 2; i++ { // their first samples, sent at start, are in
		netlab.WaitFor(t, 2*time.Second, fmt.Sprintf("node %d slow", i), func() error { return seen(i, slow) })
	}
	m.stop()
	restart := time.Now()
	startMemMaster(t, n, dir)
	for i := 1; i <= 2; i++ {
		netlab.WaitFor(t, 2*time.Second, fmt.Sprintf("node %d back", i), func() error { return seen(i, restart) })
	}
	if seen(3, restart) == nil {
		t.Error("stopped node 3 back")
	}
}
