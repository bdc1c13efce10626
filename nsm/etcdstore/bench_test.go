package etcdstore

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hoststat/hoststat/internal/etcdlab"
	"github.com/hoststat/hoststat/nsm"
)

// BenchmarkDurableSMMON measures durable SM_MON/s with 256 concurrent
// callers, each call returning only once its registration is committed:
// on local etcd clusters of one and three members on loopback (fsync of
// etcd's WAL, on a quorum) beside the bbolt store (fsync of the file), on
// the same disk in the same run.
func BenchmarkDurableSMMON(b *testing.B) {
	const callers = 256
	b.Run("store=bbolt", func(b *testing.B) {
		s, err := nsm.OpenStore(filepath.Join(b.TempDir(), "statd.db"))
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		monitorConcurrently(b, s, callers)
	})
	for _, members := range []int{1, 3} {
		b.Run(fmt.Sprintf("store=etcd/members=%d", members), func(b *testing.B) {
			c := etcdlab.Start(b, members)
			s := openStore(b, storeClient(b, c), IdentityPrefix("/bench", "srv"))
			monitorConcurrently(b, s, callers)
			b.ReportMetric(float64(b.N)/float64(s.Txns()), "SM_MON/txn")
		})
	}
}

func monitorConcurrently(b *testing.B, s nsm.Storage, callers int) {
	var next atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for range callers {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= int64(b.N) {
					return
				}
				r := nsm.Registration{MonName: fmt.Sprintf("client%07d", i), MyID: nsm.MyID{Name: "srv", Prog: 100021, Vers: 4, Proc: 16}}
				if err := s.Apply(context.Background(), []nsm.Change{{Reg: r}}); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	took := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/took.Seconds(), "SM_MON/s")
}
