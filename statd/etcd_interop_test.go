package statd

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hoststat/hoststat/internal/etcdlab"
	"github.com/hoststat/hoststat/internal/netlab"
	"github.com/hoststat/hoststat/nsm"
)

// etcdIdentity is one line of statdctl identities --json.
type etcdIdentity struct {
	Name          string `json:"name"`
	Holder        string `json:"holder"`
	State         int32  `json:"state"`
	Registrations int    `json:"registrations"`
	Owed          int    `json:"owed"`
}

// etcdIdentities runs statdctl --store STORE --json identities on h.
func etcdIdentities(t *testing.T, ctx context.Context, lt labTools, h *netlab.Host, store string) map[string]etcdIdentity {
	t.Helper()
	out, err := h.Run(ctx, lt.statdctl, "--store", store, "--json", "identities")
	if err != nil {
		t.Fatalf("statdctl identities: %v\n%s", err, out)
	}
	var ids []etcdIdentity
	if err := json.Unmarshal([]byte(out), &ids); err != nil {
		t.Fatalf("statdctl identities --json: %v\n%s", err, out)
	}
	m := map[string]etcdIdentity{}
	for _, id := range ids {
		m[id.Name] = id
	}
	return m
}

// TestInteropEtcdStore: rpc.statd --store etcd://… on a lab host, with the
// real rpcbind, an etcd member on its own lab host and the real nfs-utils
// rpc.statd as the peer. An SM_MON is answered only once etcd has it (no
// answer while the member is stopped; statdctl identities shows it after
// the answer); a restart in the same boot reloads the registration and
// keeps the state; a reboot (new boot id) moves the state to the next odd
// number in etcd, drops the registration, and the peer's statd calls its
// lock manager back with our name and the new state.
func TestInteropEtcdStore(t *testing.T) {
	lt := needLab(t)
	ctx := ctxT(t, 150*time.Second)
	lab := netlab.New(t)
	a, b := lab.AddHost("a"), lab.AddHost("b")
	cluster := etcdlab.StartInLab(t, lab, 1)
	store := "etcd://" + strings.Join(cluster.Endpoints(), ",") + "/hoststat"
	dirA, dirB := t.TempDir(), netlab.MakeStatdDir(t)
	bootFile := filepath.Join(dirA, "boot_id")
	writeBootID(t, bootFile, "boot-1")
	startRPCBind(t, ctx, lt, a)
	startRPCBind(t, ctx, lt, b)
	args := []string{"-F", "-d", "-P", filepath.Join(dirA, "state"), "--name", "a", "--store", store,
		"--boot-id-path", bootFile, "--callback-program", "300100"}
	ours := a.Start(lt.ourStatd, args...)
	nfs := b.Start(lt.nfsStatd, "-F", "-d", "-L", "-P", dirB)
	defer func() {
		if t.Failed() {
			t.Logf("our statd:\n%s", ours.Output())
		}
	}()
	registeredOn(t, ctx, lt, a, "100024")
	registeredOn(t, ctx, lt, b, "100024")
	_ = nfs
	regA := newLabRegistrant(t, a, 300100, 1, 1)
	regB := newLabRegistrant(t, b, 100021, 4, 16)
	identities := func() etcdIdentity {
		t.Helper()
		ids := etcdIdentities(t, ctx, lt, a, store)
		if len(ids) != 1 {
			t.Fatalf("statdctl identities: %+v, want identity a only", ids)
		}
		return ids["a"]
	}
	if id := identities(); id.State != 1 || id.Registrations != 0 {
		t.Fatalf("first start: %+v, want state 1 and no registrations in etcd", id)
	}

	// b's lock manager monitors us (by address): our reboot must reach it.
	if r, err := callMon(ctx, statdClient(t, b), nsm.Mon{ID: nsm.MonID{MonName: a.Addr.String(), MyID: regB.myID("b")}, Priv: priv(0x70)}); err != nil || r.Res != nsm.StatSucc {
		t.Fatalf("SM_MON on nfs-utils statd: %+v %v", r, err)
	}
	ca := statdClient(t, a)
	mon := nsm.Mon{ID: nsm.MonID{MonName: "b", MyID: regA.myID("a")}, Priv: priv(0x10)}

	// With etcd stopped, the SM_MON is not answered.
	m := cluster.Members[0]
	m.Stop()
	sctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	r, err := callMon(sctx, ca, mon)
	cancel()
	m.Cont()
	if err == nil {
		t.Fatalf("SM_MON answered %+v while etcd was stopped", r)
	}
	r, err = callMon(ctx, ca, mon)
	if err != nil || r.Res != nsm.StatSucc || r.State != 1 {
		t.Fatalf("SM_MON b: %+v %v", r, err)
	}
	if id := identities(); id.State != 1 || id.Registrations != 1 {
		t.Fatalf("after SM_MON: %+v, want state 1 and the registration in etcd", id)
	}

	// A restart in the same boot: the registration comes back from etcd.
	if err := ours.Stop(); err != nil {
		t.Fatal(err)
	}
	ours = a.Start(lt.ourStatd, args...)
	registeredOn(t, ctx, lt, a, "100024")
	st := ourStatus(t, ctx, lt, a, filepath.Join(dirA, "state"))
	if st.State != 1 || len(st.Monitored) != 1 || st.Monitored[0].MonName != "b" {
		t.Fatalf("after a restart: state %d, monitored %+v; want 1 and b", st.State, st.Monitored)
	}

	// A reboot: state 3 in etcd, registration dropped, b's lock manager told.
	if err := ours.Stop(); err != nil {
		t.Fatal(err)
	}
	writeBootID(t, bootFile, "boot-2")
	ours = a.Start(lt.ourStatd, args...)
	g := regB.next(t, 20*time.Second)
	if g.st.MonName != a.Addr.String() || g.st.State != 3 || g.st.Priv != priv(0x70) {
		t.Fatalf("nfs-utils statd called back %+v, want mon_name %s state 3", g.st, a.Addr)
	}
	netlab.WaitFor(t, 10*time.Second, "the debt to b settled in etcd", func() error {
		if id := identities(); id.State != 3 || id.Registrations != 0 || id.Owed != 0 {
			return fmt.Errorf("after the reboot: %+v, want state 3, nothing registered or owed", id)
		}
		return nil
	})
	st = ourStatus(t, ctx, lt, a, filepath.Join(dirA, "state"))
	if st.State != 3 || len(st.Monitored) != 0 {
		t.Fatalf("after the reboot: state %d, monitored %+v", st.State, st.Monitored)
	}

	// A second daemon on the same state directory is refused.
	out, err := a.Run(ctx, lt.ourStatd, args...)
	if err == nil || !strings.Contains(out, "in use by another rpc.statd") {
		t.Errorf("second daemon on one state directory: %v\n%s", err, out)
	}
}
