package recv

import (
	"encoding/binary"
	"io"
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"github.com/hoststat/hoststat/telemetry/sample"
	"github.com/hoststat/hoststat/telemetry/wire"
)

type nullTransport struct{ addr netip.AddrPort }

func (nullTransport) ReadBatch([]Message) (int, error)     { return 0, nil }
func (nullTransport) SetReadDeadline(time.Time) error      { return nil }
func (nullTransport) WriteTo([]byte, netip.AddrPort) error { return nil }
func (n nullTransport) LocalAddr() netip.AddrPort          { return n.addr }
func (nullTransport) Close() error                         { return nil }

// BenchmarkHandle is the per-packet cost of recvstats without the socket:
// parse, reassemble, node table, shared-memory write, for 10,000 nodes.
func BenchmarkHandle(b *testing.B) {
	const nodes = 10_000
	// Unsigned numbered nodes, pinned by the node map.
	pins := NodeMap{}
	for n := range nodes {
		pins[netip.AddrFrom4([4]byte{10, 0, byte(n >> 8), byte(n)})] = n
	}
	s, err := NewServer(Config{Transport: nullTransport{netip.MustParseAddrPort("127.0.0.1:1")}, ShmDir: b.TempDir(),
		InitialNodes: nodes, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), NodeMap: pins})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	enc := wire.NewEncoder(nil)
	smp := &sample.Sample{Time: time.Now(), BootTime: time.Now().Add(-time.Hour), CPUs: make([]sample.CPU, 4),
		Net: []sample.NetDev{{Name: "lo"}, {Name: "eth0"}, {Name: "ib0"}}, Memory: sample.Memory{Total: 64 << 30}}
	for i := range smp.CPUs {
		smp.CPUs[i] = sample.CPU{MHz: 2400, Model: "Bench CPU", Ticks: sample.Ticks{User: 100, Idle: 1000}}
	}
	msgs := make([]Message, nodes)
	for n := range nodes {
		smp.BootID = [16]byte{byte(n), byte(n >> 8), 1}
		bufs, _ := enc.AppendStatus(nil, uint32(n), 0, smp)
		msgs[n] = Message{Buf: bufs[0], N: len(bufs[0]), From: netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, byte(n >> 8), byte(n)}), 3040)}
	}
	now := time.Now()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		m := &msgs[i%nodes]
		binary.BigEndian.PutUint32(m.Buf[wire.SeqOffset:], uint32(i/nodes+1))
		s.handle(m, now)
	}
	if d := s.Drops(); d.Total() != 0 {
		b.Errorf("drops %v", d.String())
	}
}
