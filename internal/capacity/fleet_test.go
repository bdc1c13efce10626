package capacity

import (
	"net/netip"
	"reflect"
	"testing"
	"time"

	"github.com/hoststat/hoststat/telemetry/sample"
	"github.com/hoststat/hoststat/telemetry/wire"
)

var testKey = []byte("capacity-test-key-0123456789")

// The generator's samples must be what recvstats accepts from real nodes:
// one signed datagram each, decoded back to the same figures, counters
// that only grow, and nodes that differ.
func TestFleetSamplesDecodeAndGrow(t *testing.T) {
	start := time.Now()
	f := Fleet{Rate: 1, Start: start}
	enc := wire.NewEncoder(testKey)
	p := wire.NewParser(testKey)
	asm := wire.NewAssembler(16, 0)
	cpuCounts := map[int]bool{}
	distinctUser := map[uint64]bool{}
	for node := 0; node < 200; node++ {
		var prev sample.Sample
		for round := uint64(0); round < 3; round++ {
			s := f.Sample(node, round, start.Add(time.Duration(round)*time.Second))
			out, err := enc.AppendStatus(nil, uint32(node), uint32(round+1), s)
			if err != nil {
				t.Fatalf("node %d round %d: %v", node, round, err)
			}
			if len(out) != 1 {
				t.Fatalf("node %d: %d datagrams, want 1", node, len(out))
			}
			var got sample.Sample
			h, complete, err := asm.Receive(p, out[0], netip.MustParseAddr("127.0.0.1"), s.Time, &got)
			if err != nil || !complete {
				t.Fatalf("node %d round %d: receive: complete %v, %v", node, round, complete, err)
			}
			if h.Node != uint32(node) || h.Flags&wire.FlagAuthenticated == 0 {
				t.Fatalf("node %d: header node %d flags %#x", node, h.Node, h.Flags)
			}
			if got.Memory != s.Memory || len(got.CPUs) != len(s.CPUs) || len(got.Net) != len(s.Net) || got.BootID != s.BootID {
				t.Fatalf("node %d round %d: decoded %+v, sent %+v", node, round, got, *s)
			}
			if round > 0 {
				for i := range s.CPUs {
					a, b := prev.CPUs[i].Ticks, s.CPUs[i].Ticks
					if b.All() <= a.All() || b.User < a.User || b.Idle < a.Idle {
						t.Fatalf("node %d cpu %d: ticks went from %+v to %+v", node, i, a, b)
					}
				}
				for i := range s.Net {
					if s.Net[i].RxBytes < prev.Net[i].RxBytes {
						t.Fatalf("node %d %s: rx bytes went back", node, s.Net[i].Name)
					}
				}
			}
			prev = got
			prev.CPUs = append([]sample.CPU(nil), s.CPUs...)
			prev.Net = append([]sample.NetDev(nil), s.Net...)
			cpuCounts[len(s.CPUs)] = true
			distinctUser[s.Total.User] = true
		}
	}
	if len(cpuCounts) < 3 {
		t.Errorf("CPU counts %v: nodes should differ", cpuCounts)
	}
	if len(distinctUser) < 500 {
		t.Errorf("%d distinct user tick totals in 600 samples: figures should vary per node and round", len(distinctUser))
	}
	if !reflect.DeepEqual(f.Sample(7, 1, start).BootID, f.Sample(7, 2, start).BootID) {
		t.Error("a node's boot id changed between rounds")
	}
}
