package statd

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hoststat/hoststat/nsm"
	"github.com/hoststat/hoststat/oncrpc"
)

// BenchmarkSMMonLoopback: durable SM_MON per second against an in-process
// daemon on loopback UDP (no root needed), callers concurrent clients.
func BenchmarkSMMonLoopback(b *testing.B) {
	for _, callers := range []int{16, 64, 256} {
		b.Run(fmt.Sprintf("callers=%d", callers), func(b *testing.B) {
			td := newTestDaemon(b, func(c *Config) { c.Logger = nil })
			clients := make([]*oncrpc.Client, callers)
			for i := range clients {
				c, err := oncrpc.Dial(context.Background(), "udp", td.udp, oncrpc.WithRetransmit(time.Second, 2*time.Second))
				if err != nil {
					b.Fatal(err)
				}
				defer c.Close()
				clients[i] = c
			}
			b.ResetTimer()
			acked, took := monLoad(clients, b.N, time.Time{}, 0)
			b.ReportMetric(float64(acked)/took.Seconds(), "mon/s")
		})
	}
}

// monLoad makes SM_MON calls on every client at once, each for a new host
// 10.prefix.x.y (address literals: nfs-utils resolves every mon_name), up to
// max calls in all or until deadline (zero: none), and returns the calls
// acknowledged with stat_succ and the time taken.
func monLoad(clients []*oncrpc.Client, max int, deadline time.Time, prefix int) (int, time.Duration) {
	var next, acked atomic.Int64
	start := time.Now()
	var wg sync.WaitGroup
	for _, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for deadline.IsZero() || time.Now().Before(deadline) {
				i := next.Add(1)
				if i > int64(max) {
					return
				}
				name := fmt.Sprintf("10.%d.%d.%d", prefix+int(i>>16), (i>>8)&255, i&255)
				r, err := callMon(context.Background(), c, nsm.Mon{ID: nsm.MonID{MonName: name,
					MyID: nsm.MyID{Name: "127.0.0.1", Prog: 100021, Vers: 4, Proc: 16}}})
				if err == nil && r.Res == nsm.StatSucc {
					acked.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	return int(acked.Load()), time.Since(start)
}
