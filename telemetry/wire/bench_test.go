package wire

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/hoststat/hoststat/telemetry/sample"
)

// benchSample is the 4-CPU sample of the tests, or a random one for big
// shapes; random counters are full 64-bit and so larger on the wire than
// real ones.
func benchSample(cpus, nets int) *sample.Sample {
	if cpus == 4 {
		return smallSample()
	}
	return randomSample(rand.New(rand.NewPCG(1, 2)), cpus, nets)
}

func BenchmarkEncode(b *testing.B) {
	for _, bc := range []struct {
		name       string
		cpus, nets int
		key        []byte
	}{{"4cpu", 4, 3, nil}, {"4cpu-hmac", 4, 3, testKey}, {"1024cpu-64net-hmac", 1024, 64, testKey}} {
		b.Run(bc.name, func(b *testing.B) {
			s := benchSample(bc.cpus, bc.nets)
			e := NewEncoder(bc.key)
			var bufs [][]byte
			seq := uint32(0)
			b.ReportAllocs()
			for b.Loop() {
				seq++
				bufs, _ = e.AppendStatus(bufs[:0], 1, seq, s)
			}
			b.ReportMetric(float64(len(bufs)), "datagrams")
		})
	}
}

// BenchmarkParseAndAssemble is the master's work per datagram from steady
// senders: Parse, then Add into a reused sample ("parse+add"), or both at
// once with Receive ("receive", what recvstats does).
func BenchmarkParseAndAssemble(b *testing.B) {
	for _, bc := range []struct {
		name       string
		cpus, nets int
		key        []byte
	}{{"4cpu", 4, 3, nil}, {"4cpu-hmac", 4, 3, testKey}, {"1024cpu-64net-hmac", 1024, 64, testKey}} {
		for _, receive := range []bool{false, true} {
			name := bc.name + "/parse+add"
			if receive {
				name = bc.name + "/receive"
			}
			b.Run(name, func(b *testing.B) {
				s := benchSample(bc.cpus, bc.nets)
				e := NewEncoder(bc.key)
				// Pre-encode many samples so the loop measures only the receiver.
				const samples = 64
				var stream [][]byte
				for seq := uint32(1); seq <= samples; seq++ {
					parts, _ := e.AppendStatus(nil, 1, seq, s)
					stream = append(stream, parts...)
				}
				per := len(stream) / samples
				ps := NewParser(bc.key)
				var got sample.Sample
				i := 0
				a := NewAssembler(16, time.Second)
				b.ReportAllocs()
				for b.Loop() {
					if i == len(stream) {
						// Forgetting the sender makes the same stream fresh again.
						i = 0
						a.Forget(Sender{Node: 1})
					}
					if receive {
						if _, _, err := a.Receive(ps, stream[i], node7Addr, t0, &got); err != nil {
							b.Fatal(err)
						}
					} else {
						p, err := ps.Parse(stream[i])
						if err != nil {
							b.Fatal(err)
						}
						if _, err := a.Add(Sender{Node: 1}, &p, t0, &got); err != nil {
							b.Fatal(err)
						}
					}
					i++
				}
				b.ReportMetric(float64(per), "datagrams/sample")
			})
		}
	}
}
