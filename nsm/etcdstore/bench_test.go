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
// on a local single-member etcd (fsync of etcd's WAL) beside the bbolt
// store (fsync of the file), on the same disk in the same run.
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
	b.Run("store=etcd", func(b *testing.B) {
		c := etcdlab.Start(b, 1)
		s := openStore(b, etcdlab.Client(b, c.Endpoints()...), IdentityPrefix("/bench", "srv"))
		monitorConcurrently(b, s, callers)
		b.ReportMetric(float64(b.N)/float64(s.Txns()), "SM_MON/txn")
	})
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
