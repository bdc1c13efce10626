package recv_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hoststat/hoststat/internal/capacity"
	"github.com/hoststat/hoststat/telemetry/recv"
	"github.com/hoststat/hoststat/telemetry/sample"
	"github.com/hoststat/hoststat/telemetry/wire"
)

// roundTransport hands the server one round of datagrams (every node
// once) in recvmmsg-sized batches, then blocks until the benchmark gives
// it the next round: the server's receive loop runs as it does over UDP,
// without the socket.
type roundTransport struct {
	rounds chan [][]byte
	done   chan struct{} // a round handled
	busy   bool          // a round is being handled
	cur    [][]byte
	from   netip.AddrPort
	now    *atomic.Int64 // the server's clock, Unix nanoseconds
	step   time.Duration // clock advance per datagram
	closed chan struct{}
}

func (t *roundTransport) ReadBatch(ms []recv.Message) (int, error) {
	if len(t.cur) == 0 {
		if t.busy {
			// The server asks for more: it has handled the whole round.
			t.busy = false
			t.done <- struct{}{}
		}
		select {
		case t.cur = <-t.rounds:
			t.busy = true
		case <-t.closed:
			return 0, os.ErrDeadlineExceeded
		case <-time.After(50 * time.Millisecond):
			return 0, os.ErrDeadlineExceeded
		}
	}
	n := min(len(ms), len(t.cur))
	for i := range n {
		m := &ms[i]
		m.N = copy(m.Buf, t.cur[i])
		m.From, m.Truncated, m.Multicast = t.from, false, false
	}
	t.cur = t.cur[n:]
	t.now.Add(int64(n) * int64(t.step))
	return n, nil
}
func (*roundTransport) SetReadDeadline(time.Time) error      { return nil }
func (*roundTransport) WriteTo([]byte, netip.AddrPort) error { return nil }
func (t *roundTransport) LocalAddr() netip.AddrPort          { return t.from }
func (t *roundTransport) Close() error                       { return nil }

// BenchmarkPerPacket is recvstats' work per signed status packet, as
// deployed but without the socket: the receive loop (Serve) over batches
// of 64, HMAC check, parse, replay window, node table, figures, the
// shared-memory record, the history (--history-nodes at its default) and
// events, for N nodes of the capacity benchmark's fleet each sending once
// a (simulated) second. Every datagram is encoded and signed between
// rounds, with the timer stopped; ns/op is the server's time per packet,
// cpu-ns/op the process's CPU time (getrusage) while the server handled
// the rounds, which a loaded machine disturbs less.
func BenchmarkPerPacket(b *testing.B) {
	for _, nodes := range []int{10_000, 100_000} {
		b.Run(fmt.Sprintf("nodes=%d", nodes), func(b *testing.B) { benchPerPacket(b, nodes, 0) })
	}
}

// BenchmarkPerSampleWithDetails is the same for nodes that also report a
// hostname, two disks and two filesystems, sent in a details datagram
// before the status of one sample in every (sendstats --details-every):
// ns/op is per sample stored, whatever its datagrams.
func BenchmarkPerSampleWithDetails(b *testing.B) {
	for _, every := range []int{1, 10} {
		b.Run(fmt.Sprintf("nodes=10000/every=%d", every), func(b *testing.B) { benchPerPacket(b, 10_000, every) })
	}
}

// benchPerPacket runs nodes through the server; with detailsEvery > 0
// they have details, sent before one sample in detailsEvery.
func benchPerPacket(b *testing.B, nodes, detailsEvery int) {
	key := []byte("hoststat-capacity-benchmark-key!")
	start := time.Unix(1_800_000_000, 0)
	var clock atomic.Int64
	clock.Store(start.UnixNano())
	tr := &roundTransport{rounds: make(chan [][]byte), done: make(chan struct{}), from: netip.MustParseAddrPort("127.0.0.1:40000"),
		now: &clock, step: time.Second / time.Duration(nodes), closed: make(chan struct{})}
	srv, err := recv.NewServer(recv.Config{Transport: tr, ShmDir: b.TempDir(), Key: key,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Now:    func() time.Time { return time.Unix(0, clock.Load()) }})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	defer func() {
		cancel()
		close(tr.closed)
		if err := <-done; err != nil {
			b.Error(err)
		}
		srv.Close()
	}()

	fleet := capacity.Fleet{Rate: 1, Start: start}
	enc := wire.NewEncoder(key)
	bufs := make([][]byte, nodes)
	details := make([][]byte, nodes)
	var dgs [][]byte
	var round uint64
	sent := uint64(0)
	var cpu time.Duration // the process's CPU time while the server handled rounds
	// feed encodes round r (timer stopped) and hands the first n nodes'
	// datagrams of it to the server, then waits until the server has
	// stored their samples.
	feed := func(n int) {
		b.StopTimer()
		round++
		t := start.Add(time.Duration(round) * time.Second)
		dgs = dgs[:0]
		for node := range n {
			smp := fleet.Sample(node, round, t)
			if detailsEvery > 0 {
				smp.Hostname = fmt.Sprintf("node-%06d.cluster.example.org", node)
				smp.Disks = []sample.Disk{{Name: "nvme0n1", ReadBytes: round << 20, WriteBytes: round << 21, IOMillis: round * 10},
					{Name: "sda", ReadBytes: round << 10, WriteBytes: round << 11, IOMillis: round}}
				smp.Filesystems = []sample.Filesystem{{Mount: "/", Type: "ext4", Total: 100 << 30, Free: 40 << 30, Avail: 35 << 30},
					{Mount: "/scratch", Type: "xfs", Total: 1 << 40, Free: 1 << 39, Avail: 1 << 39}}
				if (int(round)+node)%detailsEvery == 0 {
					details[node], _ = enc.AppendDetails(details[node][:0], uint32(node), uint32(round), smp)
					dgs = append(dgs, details[node])
				}
			}
			out, err := enc.AppendStatus(bufs[node:node:node+1], uint32(node), uint32(round), smp)
			if err != nil || len(out) != 1 {
				b.Fatalf("encode node %d: %v, %d datagrams", node, err, len(out))
			}
			bufs[node] = out[0]
			dgs = append(dgs, out[0])
		}
		b.StartTimer()
		var r0, r1 unix.Rusage
		unix.Getrusage(unix.RUSAGE_SELF, &r0)
		tr.rounds <- dgs
		<-tr.done
		unix.Getrusage(unix.RUSAGE_SELF, &r1)
		cpu += time.Duration(r1.Utime.Nano() + r1.Stime.Nano() - r0.Utime.Nano() - r0.Stime.Nano())
		sent += uint64(n)
		if d := srv.Drops(); srv.Stored()+d.Total() != sent {
			b.Fatalf("round %d: %d stored and %d dropped of %d", round, srv.Stored(), d.Total(), sent)
		}
	}
	// Warm-up: every node once, the table and the buffers grown.
	feed(nodes)
	base := srv.Stored()
	cpu = 0
	b.ResetTimer()
	b.ReportAllocs()
	for left := b.N; left > 0; left -= nodes {
		feed(min(left, nodes))
	}
	b.StopTimer()
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/op")
	if d := srv.Drops(); d.Total() != 0 {
		b.Fatalf("drops: %v", d.String())
	}
	if got := srv.Stored() - base; got != uint64(b.N) {
		b.Fatalf("stored %d of %d", got, b.N)
	}
}
