package statd

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hoststat/hoststat/internal/etcdlab"
	"github.com/hoststat/hoststat/internal/netlab"
	"github.com/hoststat/hoststat/nsm"
	"github.com/hoststat/hoststat/oncrpc"
	"github.com/hoststat/hoststat/oncrpc/xdr"
)

// TestFailoverKilledServer is issue 13's lab test: a three-member etcd,
// each member on its own lab host; two servers s1 and s2 running our
// rpc.statd with the floating identity nfs (--identity nfs=FLOAT); two
// clients running the real nfs-utils rpc.statd, whose lock managers
// monitor the server as nfs. The lock manager on s1 registers both
// clients under my_name nfs (the identity's core and store in etcd; s2,
// standing by, refuses such an SM_MON). s1's statd is killed with SIGKILL
// and FLOAT moved to s2 (as the address resource would): within the
// lease and a margin, s2 owns nfs, has moved its state to the next odd
// number with both registrations kept, and every client's statd calls its
// lock manager back with mon_name nfs and that state.
func TestFailoverKilledServer(t *testing.T) {
	lt := needLab(t)
	ctx := ctxT(t, 240*time.Second)
	lab := netlab.New(t)
	s1, s2 := lab.AddHost("s1"), lab.AddHost("s2")
	clients := []*netlab.Host{lab.AddHost("c1"), lab.AddHost("c2")}
	c3 := lab.AddHost("c3") // a recorder of the SM_NOTIFYs it gets, for their sender
	cluster := etcdlab.StartInLab(t, lab, 3)
	store := "etcd://" + strings.Join(cluster.Endpoints(), ",") + "/hoststat"
	a4 := lab.Net4().Addr().As4()
	a4[3] = 200
	float := netip.AddrFrom4(a4)
	lab.AddName("nfs", float)
	const ttl = 3 * time.Second

	ipAddr := func(h *netlab.Host, op string) {
		t.Helper()
		if out, err := h.Run(ctx, "ip", "addr", op, netip.PrefixFrom(float, 24).String(), "dev", netlab.Iface); err != nil {
			t.Fatalf("ip addr %s %s on %s: %v\n%s", op, float, h.Name, err, out)
		}
	}
	type server struct {
		h    *netlab.Host
		dir  string
		proc *netlab.Proc
		reg  *labRegistrant
	}
	servers := []*server{{h: s1, dir: t.TempDir()}, {h: s2, dir: t.TempDir()}}
	start := func(s *server) {
		s.proc = s.h.Start(lt.ourStatd, "-F", "-d", "-P", filepath.Join(s.dir, "state"), "--name", s.h.Name, "--store", store,
			"--identity", "nfs="+float.String(), "--identity-ttl", ttl.String(), "--boot-id-path", filepath.Join(s.dir, "boot_id"),
			"--notify-schedule", "first-retry=500ms,max-retry=1s")
		registeredOn(t, ctx, lt, s.h, "100024")
	}
	serving := func(s *server) []string {
		return ourStatus(t, ctx, lt, s.h, filepath.Join(s.dir, "state")).Serving
	}
	ipAddr(s1, "add")
	for i, s := range servers {
		writeBootID(t, filepath.Join(s.dir, "boot_id"), "boot-"+s.h.Name)
		startRPCBind(t, ctx, lt, s.h)
		start(s)
		s.reg = newLabRegistrant(t, s.h, 100021, 4, 16)
		if i == 0 {
			netlab.WaitFor(t, 20*time.Second, "s1 serving nfs", func() error {
				if got := serving(s); !slices.Contains(got, "nfs") {
					return fmt.Errorf("s1 serves %v", got)
				}
				return nil
			})
		}
	}
	defer func() {
		if t.Failed() {
			for _, s := range servers {
				t.Logf("statd on %s:\n%s", s.h.Name, s.proc.Output())
			}
		}
	}()
	identities := func() map[string]etcdIdentity { return etcdIdentities(t, ctx, lt, s2, store) }

	// Clients: nfs-utils statd, a lock manager monitoring the server as nfs.
	var regs []*labRegistrant
	var nfsProcs []*netlab.Proc
	for _, c := range clients {
		dir := netlab.MakeStatdDir(t)
		startRPCBind(t, ctx, lt, c)
		nfsProcs = append(nfsProcs, c.Start(lt.nfsStatd, "-F", "-d", "-L", "-P", dir))
		registeredOn(t, ctx, lt, c, "100024")
		r := newLabRegistrant(t, c, 100021, 4, 16)
		if res, err := callMon(ctx, statdClient(t, c), nsm.Mon{ID: nsm.MonID{MonName: "nfs", MyID: r.myID(c.Name)}, Priv: priv(byte(c.Index))}); err != nil || res.Res != nsm.StatSucc {
			t.Fatalf("SM_MON nfs on %s's nfs-utils statd: %+v %v", c.Name, res, err)
		}
		regs = append(regs, r)
	}

	startRPCBind(t, ctx, lt, c3)
	recorder := make(chan peerNotify, 16)
	rec := &oncrpc.Server{Logger: slog.New(slog.DiscardHandler)}
	rec.Handle(nsm.Program, nsm.Version, nsm.ProcNotify, func(_ context.Context, call *oncrpc.Call, _ *xdr.Encoder) error {
		var sc nsm.StatChange
		if err := sc.Decode(call.Args); err != nil {
			return err
		}
		recorder <- peerNotify{from: call.Remote, name: sc.MonName, state: sc.State}
		return nil
	})
	serveInLab(t, c3, rec, nsm.Program, nsm.Version, "0.0.0.0")

	// The lock manager serving nfs on s1 monitors the clients as nfs.
	before := identities()["nfs"]
	if before.Holder != "s1" || before.State%2 != 1 {
		t.Fatalf("before: nfs %+v, want held by s1 at an odd state", before)
	}
	c1 := statdClient(t, s1)
	for _, c := range append(clients, c3) {
		r, err := callMon(ctx, c1, nsm.Mon{ID: nsm.MonID{MonName: c.Name, MyID: servers[0].reg.myID("nfs")}})
		if err != nil || r.Res != nsm.StatSucc || r.State != before.State {
			t.Fatalf("SM_MON %s my_name nfs on s1: %+v %v, want nfs's state %d", c.Name, r, err, before.State)
		}
	}
	r, err := callMon(ctx, statdClient(t, s2), nsm.Mon{ID: nsm.MonID{MonName: "c1", MyID: servers[1].reg.myID("nfs")}})
	if err != nil || r.Res != nsm.StatFail {
		t.Fatalf("SM_MON my_name nfs on the standby s2: %+v %v, want stat_fail", r, err)
	}
	ids := identities()
	if n := ids["nfs"]; n.Registrations != 3 || n.Holder != "s1" {
		t.Fatalf("statdctl identities: nfs %+v, want 3 registrations held by s1", n)
	}
	if ids["s1"].Registrations != 0 || ids["s2"].State != 1 {
		t.Fatalf("statdctl identities: the hosts' own %+v %+v", ids["s1"], ids["s2"])
	}

	// kill -9 the active server; the address resource moves FLOAT.
	killed := time.Now()
	if err := servers[0].proc.Kill(); err != nil {
		t.Fatal(err)
	}
	ipAddr(s1, "del")
	ipAddr(s2, "add")
	limit := ttl + 20*time.Second
	var last time.Duration
	states := make([]int32, len(regs))
	for i, r := range regs {
		g := r.next(t, limit)
		states[i] = g.st.State
		if g.st.MonName != "nfs" || g.st.State <= before.State || g.st.State%2 != 1 || g.st.Priv != priv(byte(clients[i].Index)) {
			t.Errorf("%s's statd called its lock manager back with %+v, want mon_name nfs, an odd state above %d", clients[i].Name, g.st, before.State)
		}
		last = time.Since(killed)
	}
	for i, p := range nfsProcs {
		if want := fmt.Sprintf("Received SM_NOTIFY from nfs, state: %d", states[i]); !strings.Contains(p.Output(), want) {
			t.Errorf("%s's nfs-utils statd did not log %q:\n%s", clients[i].Name, want, p.Output())
		}
	}
	select {
	case n := <-recorder:
		if n.name != "nfs" || n.from.Addr() != float || n.state != states[0] {
			t.Errorf("SM_NOTIFY to c3: %+v, want mon_name nfs, state %d, from %s", n, states[0], float)
		}
	case <-time.After(5 * time.Second):
		t.Error("no SM_NOTIFY to c3")
	}
	t.Logf("kill -9 of s1 to the last client called back: %v (lease %v)", last.Round(10*time.Millisecond), ttl)
	after := identities()["nfs"]
	if after.Holder != "s2" || after.State <= before.State || after.State%2 != 1 || after.Registrations != 3 {
		t.Fatalf("after: nfs %+v, want held by s2 at an odd state above %d, 3 registrations reloaded", after, before.State)
	}
	if got := serving(servers[1]); !slices.Contains(got, "nfs") {
		t.Fatalf("s2 serves %v after the takeover", got)
	}
	r, err = callMon(ctx, statdClient(t, s2), nsm.Mon{ID: nsm.MonID{MonName: "c1", MyID: servers[1].reg.myID("nfs")}, Priv: priv(9)})
	if err != nil || r.Res != nsm.StatSucc || r.State != after.State {
		t.Fatalf("SM_MON my_name nfs on s2 after the takeover: %+v %v, want state %d", r, err, after.State)
	}

	// s1 back as a standby; statdctl move hands nfs to it: s2 stops
	// serving it at once, s1 moves the state on and, once the address
	// is on s1, notifies every client again.
	start(servers[0])
	out, err := s2.Run(ctx, lt.statdctl, "--store", store, "--timeout", "30s", "move", "nfs")
	if err != nil || !strings.Contains(out, "moved nfs from s2") || !strings.Contains(out, "to s1") {
		t.Fatalf("statdctl move nfs: %v\n%s", err, out)
	}
	if got := serving(servers[1]); slices.Contains(got, "nfs") {
		t.Errorf("s2 still serves %v once moved away", got)
	}
	r, err = callMon(ctx, statdClient(t, s2), nsm.Mon{ID: nsm.MonID{MonName: "c2", MyID: servers[1].reg.myID("nfs")}})
	if err != nil || r.Res != nsm.StatFail {
		t.Errorf("SM_MON my_name nfs on s2 once moved away: %+v %v, want stat_fail", r, err)
	}
	moved := identities()["nfs"]
	if moved.Holder != "s1" || moved.State <= after.State || moved.State%2 != 1 {
		t.Fatalf("after the move: nfs %+v, want held by s1 at an odd state above %d", moved, after.State)
	}
	ipAddr(s2, "del")
	ipAddr(s1, "add")
	for i, r := range regs {
		g := r.next(t, 20*time.Second)
		if g.st.MonName != "nfs" || g.st.State != moved.State {
			t.Errorf("%s's statd called back %+v after the move, want mon_name nfs state %d", clients[i].Name, g.st, moved.State)
		}
	}
}
