package statd

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hoststat/hoststat/internal/netlab"
	"github.com/hoststat/hoststat/nsm"
	"github.com/hoststat/hoststat/oncrpc"
)

// buildNoCgo builds rpc.statd without cgo, as the Makefile does: only such
// a binary can change the credentials of every thread.
func buildNoCgo(t *testing.T) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Dir(filepath.Dir(file))
	out := filepath.Join(t.TempDir(), "rpc.statd")
	cmd := exec.Command("go", "build", "-buildvcs=false", "-o", out, "./cmd/rpc.statd")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, b)
	}
	return out
}

// TestDropsRootToStateDirOwner (issue 7): with its state directory owned by
// an ordinary user, rpc.statd serves as that user on every thread, with
// CAP_NET_BIND_SERVICE its only capability, and still calls a lock manager
// back from a privileged port.
func TestDropsRootToStateDirOwner(t *testing.T) {
	lt := needLab(t)
	exe := buildNoCgo(t)
	ctx := ctxT(t, 60*time.Second)
	lab := netlab.New(t)
	a, b := lab.AddHost("a"), lab.AddHost("b")
	startRPCBind(t, ctx, lt, a)
	dir, err := os.MkdirTemp("", "statd-drop-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chown(dir, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o700)
	ours := a.Start(exe, "-F", "-d", "-P", dir, "--nfs-utils-dir", "")
	defer func() {
		if t.Failed() {
			t.Logf("our statd:\n%s", ours.Output())
		}
	}()
	registeredOn(t, ctx, lt, a, "100024")
	// The admin socket answers just before the drop: wait for it.
	netlab.WaitFor(t, 10*time.Second, "dropped root", func() error {
		if !strings.Contains(ours.Output(), "dropped root") {
			return errors.New("not yet")
		}
		return nil
	})
	st := ourStatus(t, ctx, lt, a, dir)
	tasks, _ := filepath.Glob(filepath.Join("/proc", strconv.Itoa(st.Pid), "task", "*", "status"))
	if len(tasks) < 2 {
		t.Fatalf("threads of pid %d: %q", st.Pid, tasks)
	}
	for _, task := range tasks {
		b, err := os.ReadFile(task)
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"Uid:\t65534\t65534\t65534\t65534", "Gid:\t65534\t65534\t65534\t65534",
			"CapPrm:\t0000000000000400", "CapEff:\t0000000000000400", "CapBnd:\t0000000000000400"} {
			if !strings.Contains(string(b), want) {
				t.Errorf("%s lacks %q:\n%s", task, want, b)
			}
		}
		if m := regexp.MustCompile(`(?m)^Groups:(.*)$`).FindStringSubmatch(string(b)); m == nil || strings.TrimSpace(m[1]) != "" {
			t.Errorf("%s: supplementary groups %q; want none", task, m)
		}
	}

	// Still a working statd: a registration, a notification, a callback
	// from a port below 1024.
	reg := newLabRegistrant(t, a, 100021, 4, 16)
	ca := statdClient(t, a)
	if r, err := callMon(ctx, ca, nsm.Mon{ID: nsm.MonID{MonName: "b", MyID: reg.myID("a")}, Priv: priv(0x77)}); err != nil || r.Res != 0 {
		t.Fatalf("SM_MON after dropping root: %+v %v", r, err)
	}
	addr := statdAddr(t, a)
	var cb *oncrpc.Client
	if err := b.Do(func() error {
		var err error
		cb, err = oncrpc.Dial(ctx, "udp", a.Addr.String()+":"+strconv.Itoa(int(addr.Port())), oncrpc.WithRetransmit(100*time.Millisecond, time.Second))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer cb.Close()
	if err := callNotify(ctx, cb, "b", 7); err != nil {
		t.Fatalf("SM_NOTIFY from b: %v", err)
	}
	g := reg.next(t, 10*time.Second)
	if g.st.State != 7 || g.st.Priv != priv(0x77) || g.from.Port() >= 1024 {
		t.Errorf("callback %+v from %v; want state 7 from a privileged port", g.st, g.from)
	}
	// A restart in the same boot, now on files the owner holds.
	if err := ours.Stop(); err != nil {
		t.Errorf("SIGTERM: %v", err)
	}
	ours = a.Start(exe, "-F", "-d", "-P", dir, "--nfs-utils-dir", "")
	netlab.WaitFor(t, 10*time.Second, "restarted", func() error {
		_, err := a.Run(ctx, lt.statdctl, "-P", dir)
		return err
	})
	if st2 := ourStatus(t, ctx, lt, a, dir); st2.State != st.State || len(st2.Monitored) != 1 {
		t.Errorf("after a restart as the owner: state %d (was %d), %d monitored", st2.State, st.State, len(st2.Monitored))
	}
}
