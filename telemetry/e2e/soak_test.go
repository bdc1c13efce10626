package e2e_test

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/hoststat/hoststat/internal/netlab"
	"github.com/hoststat/hoststat/shm"
	"github.com/hoststat/hoststat/telemetry/e2e/memnet"
	"github.com/hoststat/hoststat/telemetry/recv"
	"github.com/hoststat/hoststat/telemetry/sample"
	"github.com/hoststat/hoststat/telemetry/wire"
)

// Bounds of the soak test, stated in docs/benchmarks.md.
const (
	soakHonest  = 1000
	soakSpoofed = 100_000 // packets from spoofed source addresses
	soakNumbers = 100_000 // packets with random node numbers
	// The table file: 1,000 honest nodes plus what the admission bucket
	// let in (burst 1,000 and 100 a second for the few seconds of the
	// test), at about 1.3 KB a node, rounded up.
	soakMaxTable = 8 << 20
	// Live heap growth over the flood.
	soakMaxHeap = 32 << 20
)

// The soak test: a master serving 1,000 honest unnumbered, unsigned
// nodes takes 100,000 packets from spoofed source addresses and 100,000
// with random node numbers, interleaved with the honest nodes' samples.
// Every honest node keeps its number and shows its latest sample; the
// table, the reassembly state and the heap stay within the stated bounds.
func TestSoakSpoofedFlood(t *testing.T) {
	n := memnet.New()
	dir := t.TempDir()
	master := netip.MustParseAddrPort("10.0.0.1:3040")
	ep, err := n.Listen(master)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := recv.NewServer(recv.Config{Transport: memnet.RecvTransport{Endpoint: ep}, ShmDir: dir, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	netlab.Serve(t, srv.Serve, srv.Close)
	r, err := shm.OpenReader(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()

	enc := wire.NewEncoder(nil)
	addr := func(i int) netip.AddrPort {
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 2, byte(i >> 8), byte(i)}), 3040)
	}
	boot := time.Now().Add(-time.Hour).Truncate(time.Second)
	var buf [][]byte
	send := func(from netip.AddrPort, node uint32, seq uint32, s *sample.Sample) {
		buf, err = enc.AppendStatus(buf[:0], node, seq, s)
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range buf {
			n.SendAs(from, master, b)
		}
	}
	honestSample := func(i int, seq uint32) *sample.Sample {
		return &sample.Sample{Time: time.Now(), BootTime: boot, BootID: [16]byte{1, byte(i >> 8), byte(i)},
			CPUs: make([]sample.CPU, 2), Memory: sample.Memory{Total: uint64(i)<<20 | uint64(seq)}}
	}
	seq := uint32(0)
	round := func() {
		seq++
		for i := range soakHonest {
			send(addr(i), wire.NoNode, seq, honestSample(i, seq))
		}
	}
	// settled waits until every honest node shows sample seq, and
	// returns their numbers.
	settled := func() map[int]int {
		numbers := map[int]int{}
		netlab.WaitFor(t, 20*time.Second, fmt.Sprintf("round %d of the honest nodes", seq), func() error {
			clear(numbers)
			for node := range r.Info().NodeLimit {
				s, ok, err := r.Summary(node)
				if err != nil || !ok || s.Addr.Addr().As4()[1] != 2 {
					continue
				}
				i := int(s.Memory.Total >> 20)
				if s.Memory.Total&(1<<20-1) != uint64(seq) || s.Addr != addr(i) {
					return fmt.Errorf("node %d: %v holds %x, want round %d", node, s.Addr, s.Memory.Total, seq)
				}
				numbers[i] = node
			}
			if len(numbers) != soakHonest {
				return fmt.Errorf("%d honest nodes show round %d", len(numbers), seq)
			}
			return nil
		})
		return numbers
	}
	for range 3 { // established: three samples each
		round()
	}
	before := settled()
	heap0 := liveHeap()

	rng := rand.New(rand.NewPCG(8, 9))
	spoof := func() netip.AddrPort {
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte{172, byte(16 + rng.IntN(16)), byte(rng.Uint32()), byte(rng.Uint32())}), uint16(rng.Uint32()))
	}
	start := time.Now()
	const rounds = 10
	for k := range rounds {
		for range soakSpoofed / rounds {
			s := &sample.Sample{Time: time.Now(), BootTime: boot, BootID: [16]byte{2, byte(rng.Uint32()), byte(rng.Uint32())}, CPUs: make([]sample.CPU, 2)}
			send(spoof(), wire.NoNode, rng.Uint32(), s)
		}
		for range soakNumbers / rounds {
			s := &sample.Sample{Time: time.Now(), BootTime: boot, BootID: [16]byte{3, byte(rng.Uint32())}, CPUs: make([]sample.CPU, 2)}
			send(spoof(), rng.Uint32N(wire.NoNode), rng.Uint32(), s)
		}
		round()
		_ = k
	}
	after := settled()
	elapsed := time.Since(start)
	for i, node := range before {
		if after[i] != node {
			t.Errorf("honest node %v moved from number %d to %d", addr(i), node, after[i])
		}
	}
	admitted := recv.DefaultAdmitBurst + int(elapsed.Seconds()+2)*recv.DefaultAdmitRate
	heap := liveHeap() - heap0
	fi, err := os.Stat(srv.TablePath())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("flood of %d packets in %v: %d nodes, %d reassembly senders, table %d bytes, heap +%d KiB",
		soakSpoofed+soakNumbers, elapsed.Round(time.Millisecond), srv.Nodes(), srv.Senders(), fi.Size(), heap>>10)
	if srv.Nodes() > soakHonest+admitted {
		t.Errorf("%d nodes in the table, want at most %d honest and %d admitted", srv.Nodes(), soakHonest, admitted)
	}
	if srv.Senders() > soakHonest+admitted {
		t.Errorf("reassembly keeps %d senders, want at most %d", srv.Senders(), soakHonest+admitted)
	}
	if fi.Size() > soakMaxTable {
		t.Errorf("table file %d bytes, want at most %d", fi.Size(), soakMaxTable)
	}
	if heap > soakMaxHeap {
		t.Errorf("live heap grew by %d bytes, want at most %d", heap, soakMaxHeap)
	}
}

// liveHeap is the heap in use after a collection.
func liveHeap() int64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}
