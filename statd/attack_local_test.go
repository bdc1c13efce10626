package statd

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hoststat/hoststat/internal/netlab"
	"github.com/hoststat/hoststat/nsm"
	"github.com/hoststat/hoststat/oncrpc"
	"github.com/hoststat/hoststat/oncrpc/rpcbind"
)

// The environment of the child run as an unprivileged user.
const (
	envUnprivUDP = "HOSTSTAT_STATD_UNPRIV_UDP" // the daemon's UDP address; set only in the child
	envUnprivTCP = "HOSTSTAT_STATD_UNPRIV_TCP"
	envUnprivDir = "HOSTSTAT_STATD_UNPRIV_DIR" // the state directory
	nobody       = 65534
)

// TestUnprivilegedUserCannotMoveState: a local user with no privilege (uid
// and gid 65534, as issue 7's reproduction) runs every call it can think of
// against a daemon running as root, over loopback UDP and TCP from the
// unprivileged ports it is limited to: SM_SIMU_CRASH; SM_MON registering
// statd itself (SM_SIMU_CRASH, SM_NOTIFY), rpcbind or another program as
// the callback, then SM_NOTIFY of that host with a new state (the
// laundering of issue 7); SM_NOTIFY of our own name and addresses;
// SM_UNMON_ALL; and it tries the admin socket and the state files. The
// state number does not move, before or after a restart, and no host is
// owed a notification. The laundering half fails on the daemon before
// befe7eb, where SM_MON took any program as the callback.
func TestUnprivilegedUserCannotMoveState(t *testing.T) {
	netlab.RequireRoot(t) // to run a child as another user; the daemon calls back from reserved ports as root
	td := newTestDaemon(t, nil)
	ctx := ctxT(t, 60*time.Second)
	// The laundered call would find statd, and rpcbind, through the local
	// rpcbind, as on a real host.
	port := netip.MustParseAddrPort(td.udp).Port()
	td.rpcb.set(nsm.Program, nsm.Version, rpcbind.ProtoUDP, int(port))
	td.rpcb.set(nsm.Program, nsm.Version, rpcbind.ProtoTCP, int(port))
	td.rpcb.set(rpcbind.Program, 2, rpcbind.ProtoUDP, td.rpcb.port)
	// The kernel's lock manager monitors a peer: a fake reboot would owe it
	// a notification.
	monitorHosts(t, td, "127.0.0.5")
	before := td.status()
	// Only the files' own modes keep the child out, not a private parent.
	for _, d := range []string{filepath.Dir(td.dir), td.dir, td.cfg.StateDir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}

	exe := netlab.ExecutableForOthers(t)
	cmd := exec.CommandContext(ctx, exe, "-test.run=^TestUnprivilegedUserChild$", "-test.v")
	cmd.Env = append(os.Environ(), envUnprivUDP+"="+td.udp, envUnprivTCP+"="+td.tcp, envUnprivDir+"="+td.cfg.StateDir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: TestUnprivilegedUserChild") {
		t.Fatalf("the unprivileged user's calls (%v):\n%s", err, out)
	}
	time.Sleep(2 * time.Second) // callbacks are at least 1 s apart: any laundered one is made by now

	check := func(when string) {
		st := td.status()
		if st.State != before.State || len(st.Owed) != 0 {
			t.Errorf("%s: state %d → %d, owed %+v", when, before.State, st.State, st.Owed)
		}
	}
	check("after the calls")
	td.restart()
	check("after a restart")
	if st, ok, err := nsm.ReadStateFile(filepath.Join(td.cfg.StateDir, StateFileName)); err != nil || !ok || st != before.State {
		t.Errorf("statd.state holds %d (%v, %v), want %d", st, ok, err, before.State)
	}
	if !strings.Contains(td.logs.String(), reasonProgram) || !strings.Contains(td.logs.String(), reasonUnprivPort) {
		t.Error("the refusals are not logged with their reasons")
	}
	t.Logf("the child's log:\n%s", out)
}

// TestUnprivilegedUserChild is the unprivileged user's side of
// TestUnprivilegedUserCannotMoveState; it does nothing unless run by it.
func TestUnprivilegedUserChild(t *testing.T) {
	udp, tcp, dir := os.Getenv(envUnprivUDP), os.Getenv(envUnprivTCP), os.Getenv(envUnprivDir)
	if udp == "" {
		t.Skip("run by TestUnprivilegedUserCannotMoveState as an unprivileged user")
	}
	if os.Getuid() != nobody {
		t.Fatalf("running as uid %d, want %d", os.Getuid(), nobody)
	}
	ctx := ctxT(t, 40*time.Second)
	if _, err := oncrpc.Dial(ctx, "udp", udp, oncrpc.WithPrivilegedPort()); err == nil {
		t.Fatal("an unprivileged user bound a port below 1024")
	}
	for _, network := range []string{"udp", "tcp"} {
		addr := udp
		if network == "tcp" {
			addr = tcp
		}
		c := dialT(t, network, addr)
		if err := callSimuCrash(ctx, c); !isAuthTooWeak(err) {
			t.Errorf("%s SM_SIMU_CRASH: %v, want AUTH_TOOWEAK", network, err)
		}
		for i, my := range []nsm.MyID{
			{Name: "127.0.0.1", Prog: nsm.Program, Vers: nsm.Version, Proc: nsm.ProcSimuCrash},
			{Name: "localhost", Prog: nsm.Program, Vers: nsm.Version, Proc: nsm.ProcNotify},
			{Name: "127.0.0.1", Prog: rpcbind.Program, Vers: 2, Proc: 1},
			{Name: "127.0.0.1", Prog: 100003, Vers: 3, Proc: 0}, // nfsd: not a lock manager either
		} {
			victim := fmt.Sprintf("victim-%s-%d", network, i)
			r, err := callMon(ctx, c, nsm.Mon{ID: nsm.MonID{MonName: victim, MyID: my}})
			if err != nil || r.Res != nsm.StatFail {
				t.Errorf("%s SM_MON with callback %d/%d/%d: %+v %v, want stat_fail", network, my.Prog, my.Vers, my.Proc, r, err)
			}
			notifyAtMostOnce(ctx, c, victim, 3) // the laundering attempt
		}
		// What any local user may do (nfs-utils allows it too): register
		// the lock manager's program, and notify of it. The call back goes
		// to the lock manager, never to statd.
		nlm := nsm.MyID{Name: "127.0.0.1", Prog: nsm.NLMProgram, Vers: 4, Proc: 16}
		if r, err := callMon(ctx, c, nsm.Mon{ID: nsm.MonID{MonName: "friend-" + network, MyID: nlm}}); err != nil || r.Res != nsm.StatSucc {
			t.Errorf("%s SM_MON for the lock manager: %+v %v", network, r, err)
		}
		notifyAtMostOnce(ctx, c, "friend-"+network, 5)
		// Our own name and addresses, with states ahead of ours.
		for _, own := range []string{"me.example.com", "me", "localhost", "127.0.0.1", "::1"} {
			notifyAtMostOnce(ctx, c, own, 1001)
		}
		if _, err := callUnmonAll(ctx, c, nlm); err != nil {
			t.Errorf("%s SM_UNMON_ALL: %v", network, err)
		}
	}
	// The admin socket and the state files are root's alone.
	var d net.Dialer
	if c, err := d.DialContext(ctx, "unix", filepath.Join(dir, AdminSocketName)); err == nil {
		c.Close()
		t.Error("the admin socket accepted an unprivileged user")
	}
	for _, name := range []string{StoreFileName, StateFileName, "planted"} {
		f, err := os.OpenFile(filepath.Join(dir, name), os.O_RDWR|os.O_CREATE, 0o666)
		if err == nil {
			f.Close()
			t.Errorf("an unprivileged user opened %s for writing", name)
		} else if !errors.Is(err, os.ErrPermission) {
			t.Errorf("opening %s: %v, want permission denied", name, err)
		}
	}
}

// notifyAtMostOnce sends SM_NOTIFY and waits a little for the answer:
// past the sender's rate the daemon drops it unanswered.
func notifyAtMostOnce(ctx context.Context, c *oncrpc.Client, name string, state int32) {
	ctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	callNotify(ctx, c, name, state)
}
