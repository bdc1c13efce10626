package capacity

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/hoststat/hoststat/telemetry/wire"
)

// Every node sends once a round with a growing sequence number, nodes in
// turn, all signed; the bare receiver counts what arrived, and what did
// not is in the socket's drop counter.
func TestGeneratorPlaysEveryNodeEachRound(t *testing.T) {
	const nodes, rate = 100, 20.0
	sock, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:0")))
	if err != nil {
		t.Fatal(err)
	}
	defer sock.Close()
	sock.SetReadBuffer(4 << 20)
	target := sock.LocalAddr().(*net.UDPAddr).AddrPort()

	sent, err := Generate(context.Background(), GenConfig{Target: target, Nodes: nodes, FirstNode: 5, Rate: rate, Key: testKey, Duration: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if sent.Samples != nodes*10 || sent.Datagrams != sent.Samples || sent.Unsent != 0 || !sent.Signed {
		t.Fatalf("sent %+v, want %d samples in as many signed datagrams", sent, nodes*10)
	}
	p := wire.NewParser(testKey)
	seqs := map[uint32][]uint32{}
	buf := make([]byte, wire.MaxDatagram+64)
	var got uint64
	for k := 0; ; k++ {
		sock.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		n, err := sock.Read(buf)
		if err != nil {
			break
		}
		got++
		pk, err := p.Parse(buf[:n])
		if err != nil {
			t.Fatalf("datagram %d: %v", k, err)
		}
		seqs[pk.Node] = append(seqs[pk.Node], pk.Seq)
	}
	s, err := UDPSocket(target.Port())
	if err != nil {
		t.Fatal(err)
	}
	if got+s.Drops != sent.Samples {
		t.Fatalf("received %d + kernel drops %d != sent %d", got, s.Drops, sent.Samples)
	}
	if s.Drops > 0 {
		t.Logf("%d datagrams dropped by the kernel (busy machine); checking order only", s.Drops)
	}
	if len(seqs) != nodes && s.Drops == 0 {
		t.Fatalf("%d distinct nodes, want %d", len(seqs), nodes)
	}
	for node, ss := range seqs {
		if node < 5 || node >= 5+nodes {
			t.Errorf("node %d outside 5..%d", node, 5+nodes-1)
		}
		for i := 1; i < len(ss); i++ {
			if ss[i] <= ss[i-1] {
				t.Errorf("node %d: seq %d after %d", node, ss[i], ss[i-1])
			}
		}
		if s.Drops == 0 && len(ss) != 10 {
			t.Errorf("node %d sent %d samples, want 10", node, len(ss))
		}
	}
}

// A generator far behind its pace (the machine cannot send 10⁸ samples
// a second) still stops when told, in the middle of catching up: the
// harness stops it with SIGTERM after each window (at 150,000 nodes
// beside a busy recvstats it did not, and the run failed).
func TestGeneratorBehindItsPaceStops(t *testing.T) {
	sock, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:0")))
	if err != nil {
		t.Fatal(err)
	}
	defer sock.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan Sent, 1)
	go func() {
		sent, err := Generate(ctx, GenConfig{Target: sock.LocalAddr().(*net.UDPAddr).AddrPort(), Nodes: 1_000_000, Rate: 100, Key: testKey})
		if err != nil {
			t.Error(err)
		}
		done <- sent
	}()
	// Past the first few milliseconds' 100,000s of samples: inside a catch-up of
	// tens of millions.
	buf := make([]byte, wire.MaxDatagram+64)
	for got := 0; got < 500_000; got++ {
		sock.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := sock.Read(buf); err != nil {
			t.Fatalf("after %d datagrams: %v", got, err)
		}
	}
	cancel()
	select {
	case sent := <-done:
		if sent.Datagrams < 500_000 {
			t.Errorf("sent %+v", sent)
		}
	case <-time.After(30 * time.Second): // a minute's catch-up would not stop before
		t.Fatal("the generator did not stop within 30 s of being told")
	}
}

func TestGenerateRejectsBadConfig(t *testing.T) {
	to := netip.MustParseAddrPort("127.0.0.1:9")
	for _, c := range []GenConfig{{Target: to, Nodes: 0, Rate: 1}, {Target: to, Nodes: 1, Rate: 0}, {Target: to, Nodes: 2, FirstNode: int(wire.NoNode) - 1, Rate: 1}} {
		if _, err := Generate(context.Background(), c); err == nil {
			t.Errorf("%+v: no error", c)
		}
	}
}
