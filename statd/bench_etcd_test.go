package statd

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hoststat/hoststat/internal/etcdlab"
	"github.com/hoststat/hoststat/internal/netlab"
	"github.com/hoststat/hoststat/nsm"
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

// BenchmarkFailover1k: time from kill -9 of the statd owning an identity
// that monitors 1,000 clients to the last client acknowledging the new
// owner's SM_NOTIFY: lease (3 s) expiry, the standby's election, its
// takeover (state moved with 1,000 debts written to etcd) and the
// notifications from the floating address. Three etcd members each on its
// own lab host; the clients are played by nsmResponder on the standby's
// host (127.x.y.z, its rpcbind port included, so that statd runs without
// rpcbind).
//
//	go test -run '^$' -bench Failover1k -benchtime 1x ./statd
func BenchmarkFailover1k(b *testing.B) {
	lt := needLab(b)
	const clients = 1000
	const ttl = 3 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	for range b.N {
		lab := netlab.New(b)
		s1, s2 := lab.AddHost("s1"), lab.AddHost("s2")
		cluster := etcdlab.StartInLab(b, lab, 3)
		store := "etcd://" + strings.Join(cluster.Endpoints(), ",") + "/hoststat"
		a4 := lab.Net4().Addr().As4()
		a4[3] = 200
		float := netip.PrefixFrom(netip.AddrFrom4(a4), 24).String()
		ipAddr := func(h *netlab.Host, op string) {
			if out, err := h.Run(ctx, "ip", "addr", op, float, "dev", netlab.Iface); err != nil {
				b.Fatalf("ip addr %s on %s: %v\n%s", op, h.Name, err, out)
			}
		}
		args := func(name string) []string {
			return []string{"-F", "-P", b.TempDir(), "--name", name, "--store", store, "--identity", "nfs=" + netip.AddrFrom4(a4).String(),
				"--identity-ttl", ttl.String(), "--notify-schedule", "first-retry=500ms,max-retry=1s"}
		}
		waitLog := func(p *netlab.Proc, msg string) {
			netlab.WaitFor(b, 30*time.Second, msg, func() error {
				if !strings.Contains(p.Output(), msg) {
					return fmt.Errorf("not yet")
				}
				return nil
			})
		}
		ipAddr(s1, "add")
		startRPCBind(b, ctx, lt, s1)
		owner := s1.Start(lt.ourStatd, args("s1")...)
		registeredOn(b, ctx, lt, s1, "100024")
		waitLog(owner, "identity taken over: serving it")
		resp := newNSMResponder(b, s2)
		standby := s2.Start(lt.ourStatd, append(args("s2"), "--no-rpcbind")...)
		waitLog(standby, "standing by for identity")

		c := statdUDP(b, ctx, s1)
		var wg sync.WaitGroup
		var acked atomic.Int64
		for w := range 32 {
			wg.Go(func() {
				for i := w; i < clients; i += 32 {
					r, err := callMon(ctx, c, nsm.Mon{ID: nsm.MonID{MonName: hostAddr(i), MyID: nsm.MyID{Name: "nfs", Prog: 100021, Vers: 4, Proc: 16}}})
					if err == nil && r.Res == nsm.StatSucc {
						acked.Add(1)
					}
				}
			})
		}
		wg.Wait()
		c.Close()
		if acked.Load() != clients {
			b.Fatalf("%d of %d SM_MONs for nfs acknowledged", acked.Load(), clients)
		}

		killed := time.Now()
		if err := owner.Kill(); err != nil {
			b.Fatal(err)
		}
		ipAddr(s1, "del")
		ipAddr(s2, "add")
		netlab.WaitFor(b, ttl+60*time.Second, "every client notified", func() error {
			if n := resp.count(); n < clients {
				return fmt.Errorf("%d of %d notified", n, clients)
			}
			return nil
		})
		took := time.Since(killed)
		b.ReportMetric(took.Seconds(), "s_kill_to_last_of_1k")
		b.Logf("kill -9 of the owner to the last of %d clients notified: %v (lease %v)", clients, took.Round(time.Millisecond), ttl)
	}
}
