package statd

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/hoststat/hoststat/internal/etcdlab"
	"github.com/hoststat/hoststat/internal/netlab"
)

// BenchmarkSMMonEtcd: durable SM_MON per second, 256 concurrent callers
// over UDP on loopback, in one run: ours with --store etcd:// (three etcd
// members, each on its own lab host), ours on bbolt, and nfs-utils'
// rpc.statd. Ours are bounded to 60,000 calls or 5 s, nfs-utils to 10 s.
//
//	go test -run '^$' -bench SMMonEtcd -benchtime 1x ./statd
func BenchmarkSMMonEtcd(b *testing.B) {
	lt := needLab(b)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	for range b.N {
		lab := netlab.New(b)
		a := lab.AddHost("a")
		cluster := etcdlab.StartInLab(b, lab, 3)
		store := "etcd://" + strings.Join(cluster.Endpoints(), ",") + "/hoststat"
		startRPCBind(b, ctx, lt, a)
		const callers = 256
		rate := func(prefix int, d time.Duration, bin string, args ...string) (float64, int, time.Duration) {
			p := a.Start(bin, args...)
			registeredOn(b, ctx, lt, a, "100024")
			n, took := monBurst(b, a, statdAddr(b, a), callers, 60000, d, prefix)
			p.Stop()
			return float64(n) / took.Seconds(), n, took
		}
		etcdRate, n1, t1 := rate(1, 5*time.Second, lt.ourStatd, "-F", "-P", b.TempDir(), "--name", "a", "--store", store)
		boltRate, n2, t2 := rate(2, 5*time.Second, lt.ourStatd, "-F", "-P", b.TempDir())
		nfsRate, n3, t3 := rate(3, 10*time.Second, lt.nfsStatd, "-F", "-L", "-P", netlab.MakeStatdDir(b))
		b.ReportMetric(etcdRate, "etcd_mon/s")
		b.ReportMetric(boltRate, "bbolt_mon/s")
		b.ReportMetric(nfsRate, "nfs-utils_mon/s")
		b.ReportMetric(etcdRate/nfsRate, "etcd/nfs-utils")
		b.Logf("SM_MON, %d callers: etcd %d in %v (%.0f/s); bbolt %d in %v (%.0f/s); nfs-utils %d in %v (%.0f/s)",
			callers, n1, t1.Round(time.Millisecond), etcdRate, n2, t2.Round(time.Millisecond), boltRate, n3, t3.Round(time.Millisecond), nfsRate)
	}
}
