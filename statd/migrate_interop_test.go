package statd

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/hoststat/hoststat/internal/netlab"
	"github.com/hoststat/hoststat/nsm"
)

// TestInteropTakeOverFromNFSUtils (issue 6, migration): the real nfs-utils
// rpc.statd on host a takes SM_MON calls from a's lock manager for peers b
// and c, then stops; c's record is moved to sm.bak/, as sm-notify leaves a
// host it could not reach yet. Our rpc.statd starts on a with a new store
// and --nfs-utils-dir pointing at nfs-utils' directory. Then:
//   - SM_STAT answers an odd state not below nfs-utils' own;
//   - c, owed a notification, hears our state: its statd (nfs-utils)
//     calls its own lock manager back with it;
//   - b reboots (sm-notify), and our statd calls a's lock manager back for
//     b with the priv it gave nfs-utils' statd.
func TestInteropTakeOverFromNFSUtils(t *testing.T) {
	lt := needLab(t)
	ctx := ctxT(t, 120*time.Second)
	lab := netlab.New(t)
	a, b, c := lab.AddHost("a"), lab.AddHost("b"), lab.AddHost("c")
	for _, h := range []*netlab.Host{a, b, c} {
		startRPCBind(t, ctx, lt, h)
	}
	nfsA, dirB, dirC := netlab.MakeStatdDir(t), netlab.MakeStatdDir(t), netlab.MakeStatdDir(t)
	theirs := a.Start(lt.nfsStatd, "-F", "-d", "-L", "-P", nfsA)
	peerB := b.Start(lt.nfsStatd, "-F", "-d", "-L", "-P", dirB)
	peerC := c.Start(lt.nfsStatd, "-F", "-d", "-L", "-P", dirC)
	for _, h := range []*netlab.Host{a, b, c} {
		registeredOn(t, ctx, lt, h, "100024")
	}
	// nfs-utils accepts registrations from the kernel's lock manager only
	// (program 100021, procedure 16).
	regA := newLabRegistrant(t, a, 100021, 4, 16)
	regB := newLabRegistrant(t, b, 100021, 4, 16)
	regC := newLabRegistrant(t, c, 100021, 4, 16)

	// a's lock manager monitors b and c through nfs-utils' statd.
	ca := statdClient(t, a)
	privB, privC := priv(0xb0), priv(0xc0)
	for _, m := range []nsm.Mon{
		{ID: nsm.MonID{MonName: "b", MyID: regA.myID("a")}, Priv: privB},
		{ID: nsm.MonID{MonName: "c", MyID: regA.myID("a")}, Priv: privC},
	} {
		if r, err := callMon(ctx, ca, m); err != nil || r.Res != nsm.StatSucc {
			t.Fatalf("SM_MON %s on nfs-utils statd: %+v %v", m.ID.MonName, r, err)
		}
	}
	theirState, err := callStat(ctx, ca, "a")
	if err != nil {
		t.Fatalf("SM_STAT on nfs-utils statd: %v", err)
	}
	// b and c monitor a through their own statd, so they are told when
	// a's state changes.
	for _, p := range []struct {
		h   *netlab.Host
		reg *labRegistrant
	}{{b, regB}, {c, regC}} {
		if r, err := callMon(ctx, statdClient(t, p.h), nsm.Mon{ID: nsm.MonID{MonName: a.Addr.String(), MyID: p.reg.myID(p.h.Name)}, Priv: priv(0x01)}); err != nil || r.Res != nsm.StatSucc {
			t.Fatalf("SM_MON a on %s: %+v %v", p.h.Name, r, err)
		}
	}
	if err := theirs.Stop(); err != nil {
		t.Logf("nfs-utils statd on SIGTERM: %v", err)
	}
	ca.Close()
	sm, _ := os.ReadDir(filepath.Join(nfsA, "sm"))
	var files []string
	for _, e := range sm {
		files = append(files, e.Name())
	}
	if !slices.Contains(files, "b") || !slices.Contains(files, "c") {
		t.Fatalf("nfs-utils sm/ holds %q; want b and c", files)
	}
	// What sm-notify does with a host it has yet to reach.
	if err := os.Rename(filepath.Join(nfsA, "sm", "c"), filepath.Join(nfsA, "sm.bak", "c")); err != nil {
		t.Fatal(err)
	}

	dirOurs := t.TempDir()
	ours := a.Start(lt.ourStatd, "-F", "-d", "-P", dirOurs, "--nfs-utils-dir", nfsA)
	defer func() {
		if t.Failed() {
			t.Logf("our statd:\n%s\nc's statd:\n%s", ours.Output(), peerC.Output())
		}
	}()
	registeredOn(t, ctx, lt, a, "100024")
	r, err := callStat(ctx, statdClient(t, a), "a")
	if err != nil || r.State%2 != 1 || r.State < theirState.State {
		t.Fatalf("our SM_STAT: %+v %v; want an odd state not below nfs-utils' %d", r, err, theirState.State)
	}
	st := ourStatus(t, ctx, lt, a, dirOurs)
	if len(st.Monitored) != 1 || st.Monitored[0].MonName != "b" || st.Monitored[0].Registrants[0].Priv != fmt.Sprintf("%x", privB) {
		t.Errorf("our registrations after the import: %+v", st.Monitored)
	}

	// c was owed a notification: its statd hears our state and tells its
	// lock manager.
	g := regC.next(t, 20*time.Second)
	if g.st.State != r.State || g.st.MonName != a.Addr.String() {
		t.Errorf("c's lock manager heard %+v; want mon_name %s, state %d", g.st, a.Addr, r.State)
	}

	// b reboots: our statd calls a's lock manager back with nfs-utils' priv.
	if err := peerB.Stop(); err != nil {
		t.Logf("b's statd on SIGTERM: %v", err)
	}
	nctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if out, err := b.Run(nctx, lt.smNotify, "-d", "-f", "-P", dirB); err != nil {
		t.Fatalf("sm-notify on b: %v\n%s", err, out)
	}
	g = regA.next(t, 10*time.Second)
	if g.st.MonName != "b" || g.st.Priv != privB || g.st.State != nfsState(t, dirB) {
		t.Errorf("callback for b: %+v; want mon_name b, priv %x, state %d", g.st, privB, nfsState(t, dirB))
	}
}
