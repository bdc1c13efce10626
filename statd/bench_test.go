package statd

// Benchmarks, each side by side with nfs-utils in the same run, in a
// netlab host (root needed; skipped otherwise). Run with
//
//	go test -run '^$' -bench 'SMMon|Notify10k' -benchtime 1x ./statd
//
// Figures are reported as custom metrics (mon/s, hosts/s and the ratio).

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/ipv4"

	"github.com/hoststat/hoststat/internal/netlab"
	"github.com/hoststat/hoststat/nsm"
	"github.com/hoststat/hoststat/oncrpc"
	"github.com/hoststat/hoststat/oncrpc/rpcbind"
	"github.com/hoststat/hoststat/oncrpc/xdr"
)

// monBurst makes SM_MON calls from `callers` goroutines, each with its own
// UDP client on h's loopback, for up to max calls or d, and returns the
// calls acknowledged with stat_succ and the time taken.
func monBurst(b *testing.B, h *netlab.Host, statd netip.AddrPort, callers, max int, d time.Duration, prefix int) (int, time.Duration) {
	clients := make([]*oncrpc.Client, callers)
	err := h.Do(func() error {
		for i := range clients {
			c, err := oncrpc.Dial(context.Background(), "udp", statd.String(),
				oncrpc.WithRetransmit(500*time.Millisecond, 2*time.Second), oncrpc.WithCallTimeout(30*time.Second))
			if err != nil {
				return err
			}
			clients[i] = c
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	defer func() {
		for _, c := range clients {
			c.Close()
		}
	}()
	return monLoad(clients, max, time.Now().Add(d), prefix)
}

// statdUDP dials the NSM service of h's loopback over UDP from inside h.
func statdUDP(b *testing.B, ctx context.Context, h *netlab.Host) *oncrpc.Client {
	statd := statdAddr(b, h)
	var c *oncrpc.Client
	if err := h.Do(func() error {
		var err error
		c, err = oncrpc.Dial(ctx, "udp", statd.String())
		return err
	}); err != nil {
		b.Fatal(err)
	}
	return c
}

// BenchmarkSMMon: durable SM_MON per second, 256 concurrent callers over UDP
// on loopback, ours then nfs-utils' rpc.statd on the same file system.
// Each is bounded: ours to 60,000 calls or 5 s, nfs-utils to 10 s.
func BenchmarkSMMon(b *testing.B) {
	lt := needLab(b)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	for range b.N {
		lab := netlab.New(b)
		a := lab.AddHost("a")
		startRPCBind(b, ctx, lt, a)
		const callers = 256

		ours := a.Start(lt.ourStatd, "-F", "-P", b.TempDir())
		registeredOn(b, ctx, lt, a, "100024")
		n, took := monBurst(b, a, statdAddr(b, a), callers, 60000, 5*time.Second, 1)
		ourRate := float64(n) / took.Seconds()
		ours.Stop()

		nfs := a.Start(lt.nfsStatd, "-F", "-L", "-P", netlab.MakeStatdDir(b))
		registeredOn(b, ctx, lt, a, "100024")
		m, took2 := monBurst(b, a, statdAddr(b, a), callers, 60000, 10*time.Second, 2)
		nfsRate := float64(m) / took2.Seconds()
		nfs.Stop()

		b.ReportMetric(ourRate, "ours_mon/s")
		b.ReportMetric(nfsRate, "nfs-utils_mon/s")
		b.ReportMetric(ourRate/nfsRate, "ratio")
		b.Logf("SM_MON, %d callers: ours %d in %v (%.0f/s); nfs-utils %d in %v (%.0f/s); ratio %.0fx",
			callers, n, took.Round(time.Millisecond), ourRate, m, took2.Round(time.Millisecond), nfsRate, ourRate/nfsRate)
	}
}

// nsmResponder plays every peer at once: it answers portmapper GETPORT on
// port 111 and SM_NOTIFY on another port, on every address of the host
// (all of 127/8 is local), and counts the distinct addresses notified.
type nsmResponder struct {
	mu       sync.Mutex
	notified map[string]bool
	conns    []*ipv4.PacketConn
}

func newNSMResponder(b *testing.B, h *netlab.Host) *nsmResponder {
	r := &nsmResponder{notified: map[string]bool{}}
	var pm, sm net.PacketConn
	err := h.Do(func() error {
		var err error
		if pm, err = net.ListenPacket("udp4", "0.0.0.0:111"); err != nil {
			return err
		}
		sm, err = net.ListenPacket("udp4", "0.0.0.0:0")
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
	smPort := uint32(sm.LocalAddr().(*net.UDPAddr).Port)
	serve := func(pc net.PacketConn, answer func(h *oncrpc.CallHeader, args []byte, dst net.IP) ([]byte, bool)) {
		c := ipv4.NewPacketConn(pc)
		c.SetControlMessage(ipv4.FlagDst, true)
		r.conns = append(r.conns, c)
		go func() {
			buf := make([]byte, 2048)
			for {
				n, cm, src, err := c.ReadFrom(buf)
				if err != nil {
					return
				}
				h, args, err := oncrpc.ParseCall(buf[:n])
				if err != nil || cm == nil {
					continue
				}
				res, ok := answer(&h, args, cm.Dst)
				if !ok {
					continue
				}
				e := xdr.NewEncoder(nil)
				oncrpc.AppendReply(e, h.XID, nil, res)
				// Answer from the address called, as a real host would.
				c.WriteTo(e.Bytes(), &ipv4.ControlMessage{Src: cm.Dst}, src)
			}
		}()
	}
	serve(pm, func(h *oncrpc.CallHeader, _ []byte, _ net.IP) ([]byte, bool) {
		if h.Program != rpcbind.Program || h.Version != pmapVers || h.Procedure != pmapGetPort {
			return nil, false
		}
		return binary.BigEndian.AppendUint32(nil, smPort), true
	})
	serve(sm, func(h *oncrpc.CallHeader, _ []byte, dst net.IP) ([]byte, bool) {
		if h.Program != nsm.Program || h.Procedure != nsm.ProcNotify {
			return nil, false
		}
		r.mu.Lock()
		r.notified[dst.String()] = true
		r.mu.Unlock()
		return nil, true
	})
	b.Cleanup(func() { pm.Close(); sm.Close() })
	return r
}

func (r *nsmResponder) reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	clear(r.notified)
}

func (r *nsmResponder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.notified)
}

func hostAddr(i int) string { return fmt.Sprintf("127.%d.%d.%d", 1+i>>16, (i>>8)&255, i&255) }

// BenchmarkNotify10k: time from `rpc.statd -n` to every one of 10,000
// monitored hosts acknowledging SM_NOTIFY, and nfs-utils' sm-notify on the
// same 10,000 hosts (bounded to 60 s; its rate is hosts acknowledged per
// second over its run).
func BenchmarkNotify10k(b *testing.B) {
	lt := needLab(b)
	const hosts = 10000
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	for range b.N {
		lab := netlab.New(b)
		a := lab.AddHost("a")
		rpcb := startRPCBind(b, ctx, lt, a)

		// Our store: 10,000 hosts monitored, through SM_MON.
		dir := b.TempDir()
		ours := a.Start(lt.ourStatd, "-F", "-P", dir)
		registeredOn(b, ctx, lt, a, "100024")
		c := statdUDP(b, ctx, a)
		var wg sync.WaitGroup
		for w := range 32 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := w; i < hosts; i += 32 {
					callMon(ctx, c, nsm.Mon{ID: nsm.MonID{MonName: hostAddr(i), MyID: nsm.MyID{Name: "127.0.0.1", Prog: 100021, Vers: 4, Proc: 16}}})
				}
			}()
		}
		wg.Wait()
		c.Close()
		ours.Stop()

		// nfs-utils' state directory: the same 10,000 hosts.
		nfsDir := netlab.MakeStatdDir(b)
		for i := range hosts {
			rec := "0100007f 000186b5 00000004 00000010 " + strings.Repeat("00", 16) + " " + hostAddr(i) + " a\n"
			if err := os.WriteFile(filepath.Join(nfsDir, "sm", hostAddr(i)), []byte(rec), 0o644); err != nil {
				b.Fatal(err)
			}
		}
		// Peers: no rpcbind from here on; the responder takes port 111.
		rpcb.Stop()
		resp := newNSMResponder(b, a)

		start := time.Now()
		out, err := a.Run(ctx, lt.ourStatd, "-n", "-P", dir)
		ourTook := time.Since(start)
		if err != nil || !strings.Contains(out, fmt.Sprintf("notified %d of %d hosts; 0 still owed", hosts, hosts)) {
			b.Fatalf("rpc.statd -n: %v\n%s", err, out)
		}
		if n := resp.count(); n != hosts {
			b.Fatalf("responder saw %d hosts notified, want %d", n, hosts)
		}

		resp.reset()
		nctx, ncancel := context.WithTimeout(ctx, 60*time.Second)
		start = time.Now()
		a.Run(nctx, lt.smNotify, "-d", "-f", "-P", nfsDir)
		nfsTook := time.Since(start)
		ncancel()
		nfsDone := resp.count()

		ourRate := hosts / ourTook.Seconds()
		nfsRate := float64(nfsDone) / nfsTook.Seconds()
		b.ReportMetric(ourTook.Seconds(), "ours_s/10k")
		b.ReportMetric(ourRate, "ours_hosts/s")
		b.ReportMetric(nfsRate, "sm-notify_hosts/s")
		b.ReportMetric(ourRate/nfsRate, "ratio")
		b.Logf("notify %d hosts: ours %v (%.0f hosts/s, whole `rpc.statd -n` run); sm-notify %d hosts in %v (%.0f hosts/s); ratio %.0fx",
			hosts, ourTook.Round(time.Millisecond), ourRate, nfsDone, nfsTook.Round(time.Millisecond), nfsRate, ourRate/nfsRate)
	}
}
