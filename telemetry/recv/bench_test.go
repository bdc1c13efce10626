package recv_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"hash"
	"net"
	"net/netip"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/ipv4"

	"github.com/hoststat/hoststat/telemetry/recv"
	"github.com/hoststat/hoststat/telemetry/sample"
	"github.com/hoststat/hoststat/telemetry/wire"
)

var benchKey = []byte("hoststat-benchmark-key")

const (
	benchNodes = 10_000
	// window bounds the packets in flight, well inside the socket
	// buffer: the generator never outruns the receiver, so nothing is
	// lost and the rate measured is the rate without loss.
	window = 4096
)

// loadGen sends status packets of benchNodes distinct nodes (one datagram
// each: 4 CPUs, 3 devices) with sendmmsg, each node's sequence number
// growing, as fast as the receiver takes them.
type loadGen struct {
	conn *net.UDPConn
	pc   *ipv4.PacketConn
	pkts [][]byte
	seq  []uint32
	msgs []ipv4.Message
	mac  hash.Hash
}

func newLoadGen(b *testing.B, to netip.AddrPort) *loadGen {
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close() })
	g := &loadGen{conn: conn, pc: ipv4.NewPacketConn(conn), seq: make([]uint32, benchNodes), mac: hmac.New(sha256.New, benchKey)}
	// Signed: the loopback generator sends as 10,000 nodes from one
	// address, and a node number is believed only when signed.
	enc := wire.NewEncoder(benchKey)
	smp := &sample.Sample{Time: time.Now(), BootTime: time.Now().Add(-time.Hour), CPUs: make([]sample.CPU, 4),
		Net: []sample.NetDev{{Name: "lo"}, {Name: "eth0"}, {Name: "ib0"}}, Memory: sample.Memory{Total: 64 << 30}}
	for i := range smp.CPUs {
		smp.CPUs[i] = sample.CPU{MHz: 2400, Model: "Bench CPU", Ticks: sample.Ticks{User: 100, Idle: 1000}}
	}
	for n := range benchNodes {
		smp.BootID = [16]byte{byte(n), byte(n >> 8), 1}
		bufs, err := enc.AppendStatus(nil, uint32(n), 0, smp)
		if err != nil || len(bufs) != 1 {
			b.Fatalf("encode: %v, %d datagrams", err, len(bufs))
		}
		g.pkts = append(g.pkts, bufs[0])
	}
	dst := net.UDPAddrFromAddrPort(to)
	g.msgs = make([]ipv4.Message, 64)
	for i := range g.msgs {
		g.msgs[i].Addr = dst
		g.msgs[i].Buffers = make([][]byte, 1)
	}
	return g
}

// run sends total packets, keeping at most window ahead of processed().
func (g *loadGen) run(b *testing.B, total int, processed func() uint64) {
	next := 0
	for sent := 0; sent < total; {
		for uint64(sent)-processed() > window-64 {
			// Sleep, not spin: on two cores a spinning generator takes
			// the receiver's CPU.
			time.Sleep(50 * time.Microsecond)
		}
		n := min(len(g.msgs), total-sent)
		for i := range n {
			node := next % benchNodes
			next++
			g.seq[node]++
			p := g.pkts[node]
			binary.BigEndian.PutUint32(p[wire.SeqOffset:], g.seq[node])
			// Signed again for the new seq (as a node would sign it).
			g.mac.Reset()
			g.mac.Write(p[:len(p)-wire.MACLen])
			g.mac.Sum(p[:len(p)-wire.MACLen])
			g.msgs[i].Buffers[0] = p
		}
		for off := 0; off < n; {
			k, err := g.pc.WriteBatch(g.msgs[off:n], 0)
			if err != nil {
				b.Fatalf("sendmmsg: %v", err)
			}
			off += k
		}
		sent += n
	}
	deadline := time.Now().Add(10 * time.Second)
	for processed() < uint64(total) {
		if time.Now().After(deadline) {
			b.Fatalf("receiver processed %d of %d packets", processed(), total)
		}
		time.Sleep(time.Millisecond)
	}
}

// bareReceiver is the limit: recvmmsg batches, discarded.
func bareReceiver(b *testing.B) (netip.AddrPort, func() uint64, func()) {
	u, err := recv.ListenUDP(recv.UDPConfig{Listen: netip.MustParseAddr("127.0.0.1"), ReadBuffer: recv.DefaultReadBuffer})
	if err != nil {
		b.Fatal(err)
	}
	var count atomic.Uint64
	done := make(chan struct{})
	go func() {
		defer close(done)
		ms := make([]recv.Message, 64)
		for i := range ms {
			ms[i].Buf = make([]byte, wire.MaxDatagram+64)
		}
		for {
			n, err := u.ReadBatch(ms)
			count.Add(uint64(n))
			if err != nil {
				return
			}
		}
	}()
	return u.LocalAddr(), count.Load, func() { u.Close(); <-done }
}

// serverReceiver is recvstats: decode, table, shared memory.
func serverReceiver(b *testing.B) (netip.AddrPort, func() uint64, func()) {
	srv, err := recv.NewServer(recv.Config{Listen: netip.MustParseAddr("127.0.0.1"), ShmDir: b.TempDir(),
		InitialNodes: benchNodes, Logger: testLogger(b), Key: benchKey})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(ctx) }()
	processed := func() uint64 { d := srv.Drops(); return srv.Stored() + d.Total() }
	return srv.Addr(), processed, func() {
		cancel()
		<-done
		if d := srv.Drops(); d.Total() != 0 {
			b.Errorf("drops: %v", d.String())
		}
		srv.Close()
	}
}

// receiver is one receive loop under test, with its own generator.
type receiver struct {
	g         *loadGen
	processed func() uint64
	stop      func()
	packets   int
	took      time.Duration
}

func startReceiver(b *testing.B, start func(*testing.B) (netip.AddrPort, func() uint64, func())) *receiver {
	addr, processed, stop := start(b)
	rx := &receiver{g: newLoadGen(b, addr), processed: processed, stop: stop}
	rx.g.run(b, benchNodes, processed) // warm up: every node once, the table laid out
	return rx
}

// measure pushes n more packets through rx, adds up the time and returns
// the rate of this round.
func (rx *receiver) measure(b *testing.B, n int) float64 {
	base := rx.processed()
	t0 := time.Now()
	rx.g.run(b, n, func() uint64 { return rx.processed() - base })
	took := time.Since(t0)
	rx.took += took
	rx.packets += n
	return float64(n) / took.Seconds()
}

func (rx *receiver) rate() float64 { return float64(rx.packets) / rx.took.Seconds() }

// BenchmarkIngest pushes b.N status packets from 10,000 simulated nodes
// (the same datagrams, one per node in turn, each node's seq growing)
// over loopback through a bare recvmmsg loop (the limit) and through
// recvstats' server, and reports both rates and their ratio (goal:
// recvstats ≥ 80 % of the bare loop). Both receivers are warmed up first
// (every node once: the table laid out, the buffers grown), then measured
// in rounds of alternating order (bare, server; server, bare; …); the
// ratio is the median of the rounds', so that a burst of load from
// elsewhere on the machine, which falls on one round, does not decide it.
// Flow control keeps both lossless; the server must count no drop.
func BenchmarkIngest(b *testing.B) {
	const rounds = 10
	total := max(b.N, 20_000)
	bare := startReceiver(b, bareReceiver)
	defer bare.stop()
	full := startReceiver(b, serverReceiver)
	defer full.stop()
	ratios := make([]float64, rounds)
	for r := range rounds {
		if r%2 == 0 {
			br := bare.measure(b, total/rounds)
			ratios[r] = full.measure(b, total/rounds) / br
		} else {
			fr := full.measure(b, total/rounds)
			ratios[r] = fr / bare.measure(b, total/rounds)
		}
	}
	slices.Sort(ratios)
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(bare.rate(), "bare-pkt/s")
	b.ReportMetric(full.rate(), "recvstats-pkt/s")
	b.ReportMetric(100*(ratios[rounds/2-1]+ratios[rounds/2])/2, "%-of-bare")
	b.ReportMetric(100*ratios[0], "%-of-bare-min")
}
