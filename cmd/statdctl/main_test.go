package main

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/hoststat/hoststat/internal/etcdlab"
	"github.com/hoststat/hoststat/internal/netlab"
	"github.com/hoststat/hoststat/nsm"
	"github.com/hoststat/hoststat/nsm/etcdstore"
	"github.com/hoststat/hoststat/nsm/identity"
	"github.com/hoststat/hoststat/statd"
)

// TestMain runs the test binary as statdctl itself when asked, so a test
// sees everything the command writes to its real stderr.
func TestMain(m *testing.M) {
	if os.Getenv(asCommandEnv) == "1" {
		os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

const asCommandEnv = "HOSTSTAT_TEST_AS_STATDCTL"

// TestUnreachableEtcdOneLine: an etcd nobody answers at is one line on
// stderr and exit 1, as the process writes it (before, the etcd client's
// own logger added a JSON warning per retry).
func TestUnreachableEtcdOneLine(t *testing.T) {
	cmd := exec.Command(os.Args[0], "--store", "etcd://"+freeAddr(t)+"/hoststat", "--timeout", "2s", "identities")
	cmd.Env = append(os.Environ(), asCommandEnv+"=1")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 || strings.Count(stderr.String(), "\n") != 1 ||
		!strings.HasPrefix(stderr.String(), "statdctl: etcd 127.0.0.1:") || !strings.Contains(stderr.String(), "did not answer within 2s") {
		t.Fatalf("exit %v, stderr %q; want exit 1 and one line saying etcd did not answer within 2s", err, stderr.String())
	}
}

func TestPrintText(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	st := &statd.Status{Name: "me", State: 7, Pid: 42, StateDir: "/x", Started: now,
		Listeners: []string{"udp 0.0.0.0:600"}, Metrics: "127.0.0.1:9724",
		Monitored: []statd.Monitored{{MonName: "peer", Registrants: []statd.Registrant{
			{MyName: "me", Prog: 100021, Vers: 4, Proc: 16, Priv: "00ff"}, {MyName: "me", Prog: 300000, Vers: 1, Proc: 1, Priv: "01"}},
			Liveness: &statd.HostLiveness{State: "silent", Since: now.Add(-5 * time.Minute)}},
			{MonName: "old", Registrants: []statd.Registrant{{MyName: "me", Prog: 100021, Vers: 4, Proc: 16}}}},
		Owed:    []statd.Owed{{Host: "gone", State: 7, Since: now, Attempts: 3, NextTry: now.Add(90 * time.Second), LastErr: "timeout"}},
		Serving: []string{"nfs"},
		Identities: []statd.IdentityStatus{{Name: "nfs", State: 13,
			Monitored: []statd.Monitored{{MonName: "client9", Registrants: []statd.Registrant{{MyName: "nfs", Prog: 100021, Vers: 4, Proc: 16}}}},
			Owed:      []statd.Owed{{Host: "client8", State: 13, Since: now, Attempts: 1, NextTry: now}}}},
	}
	var sb strings.Builder
	printText(&sb, st, now)
	out := sb.String()
	for _, want := range []string{`rpc.statd "me"  state 7  pid 42`, "monitored hosts: 2 (3 registrations)", "peer", "silent 5m0s", "100021", "300000",
		"notifications owed: 1", "gone", "(in 1m30s)", "timeout", "metrics at http://127.0.0.1:9724/metrics",
		`identity "nfs"  state 13`, "identity nfs: monitored hosts: 1 (1 registrations)", "client9", "identity nfs: notifications owed: 1", "client8"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

func TestNoDaemon(t *testing.T) {
	var out, errb strings.Builder
	if code := run([]string{"-P", t.TempDir()}, &out, &errb); code != 1 || !strings.Contains(errb.String(), "is rpc.statd running") {
		t.Fatalf("exit %d: %q", code, errb.String())
	}
}

// TestUsage: -v and --help answer on stdout; every bad command line is
// one line on stderr and exit 2 (before, -P without a value exited 2
// silently).
func TestUsage(t *testing.T) {
	for _, c := range []struct {
		args     []string
		code     int
		out, err string
	}{
		{[]string{"-v"}, 0, "statdctl (hoststat) ", ""},
		{[]string{"--help"}, 0, "statdctl [-P dir] import NFS-UTILS-DIR", ""},
		{[]string{"-P"}, 2, "", "flag needs an argument: 'P' in -P"},
		{[]string{"--bogus"}, 2, "", "unknown flag: --bogus"},
		{[]string{"status"}, 2, "", `unknown command "status"`},
		{[]string{"import"}, 2, "", "import needs the nfs-utils state directory"},
		{[]string{"import", "a", "b"}, 2, "", `unexpected argument "b" after import DIR | forget HOST`},
		{[]string{"forget"}, 2, "", "forget needs the host"},
		{[]string{"--identity", "nfs"}, 2, "", "--identity is forget's"},
		{[]string{"--help"}, 0, "statdctl [-P dir] [--json] forget [--identity NAME] HOST", ""},
		{[]string{"--timeout", "0s"}, 2, "", "--timeout 0s must be positive"},
		{[]string{"status"}, 2, "", "commands: import, forget, identities, move"},
		{[]string{"identities"}, 2, "", "identities needs --store etcd://"},
		{[]string{"--store", "etcd://127.0.0.1:2379/p", "identities", "x"}, 2, "", `unexpected argument "x": identities takes none`},
		{[]string{"--store", "etcd://127.0.0.1:2379/p", "move"}, 2, "", "move needs the identity"},
		{[]string{"--store", "etcd://127.0.0.1/p", "identities"}, 2, "", `endpoint "127.0.0.1" is not HOST:PORT`},
		{[]string{"--store", "/var/lib/x", "move", "nfs"}, 2, "", "not an etcd URL"},
		{[]string{"--help"}, 0, "statdctl --store etcd://HOST:PORT/PREFIX [--json] move IDENTITY", ""},
	} {
		var out, errb strings.Builder
		code := run(c.args, &out, &errb)
		if code != c.code || !strings.Contains(out.String(), c.out) || !strings.Contains(errb.String(), c.err) ||
			(code == 2 && strings.Count(errb.String(), "\n") != 1) {
			t.Errorf("statdctl %q: exit %d, stdout %q, stderr %q; want %d, %q, one line %q", c.args, code, out.String(), errb.String(), c.code, c.out, c.err)
		}
	}
}

// TestNeedsRoot: as an ordinary user statdctl says it needs root instead
// of failing on the socket's permissions.
func TestNeedsRoot(t *testing.T) {
	defer func(f func() bool) { isRoot = f }(isRoot)
	isRoot = func() bool { return false }
	var out, errb strings.Builder
	if code := run([]string{"-P", t.TempDir()}, &out, &errb); code != 1 || !strings.Contains(errb.String(), "needs root") {
		t.Fatalf("exit %d: %q", code, errb.String())
	}
}

// TestImport: statdctl import takes an nfs-utils directory into the store
// of a stopped rpc.statd, and refuses one that holds no nfs-utils state.
func TestImport(t *testing.T) {
	nfs := t.TempDir()
	os.Mkdir(filepath.Join(nfs, "sm"), 0o700)
	os.WriteFile(filepath.Join(nfs, "state"), binary.NativeEndian.AppendUint32(nil, 13), 0o644)
	os.WriteFile(filepath.Join(nfs, "sm", "client-1"), []byte(
		"0100007f 000186b5 00000004 00000010 0102030405060708090a0b0c0d0e0f10 client-1 server\n"), 0o600)
	boot := filepath.Join(t.TempDir(), "boot_id")
	os.WriteFile(boot, []byte("b1\n"), 0o644)
	state := filepath.Join(t.TempDir(), "state")
	var out, errb strings.Builder
	if code := run([]string{"-P", state, "--boot-id-path", boot, "import", nfs}, &out, &errb); code != 0 ||
		!strings.Contains(out.String(), "state 13 (nfs-utils had 13), 1 registrations") {
		t.Fatalf("exit %d: %q %q", code, out.String(), errb.String())
	}
	out.Reset()
	errb.Reset()
	if code := run([]string{"-P", state, "import", t.TempDir()}, &out, &errb); code != 1 || !strings.Contains(errb.String(), "holds no nfs-utils state") {
		t.Fatalf("import of an empty directory: exit %d: %q", code, errb.String())
	}
}

// TestIdentitiesAndMove: against real etcd with two statds (campaigning
// in-test as rpc.statd will), identities lists who serves each identity
// with its state and counts, move hands one to the standby, which moves
// its state on; a move without a standby and of an unowned identity each
// fail in one line with exit 1.
func TestIdentitiesAndMove(t *testing.T) {
	c := etcdlab.Start(t, 1)
	store := "etcd://" + strings.Join(c.Endpoints(), ",") + "/hoststat"
	const prefix = "/hoststat"
	serve := func(cli *clientv3.Client, ow *identity.Owner) (*etcdstore.Store, int32) {
		st, err := etcdstore.Open(context.Background(), cli, etcdstore.IdentityPrefix(prefix, ow.Identity().Name), etcdstore.Options{Fence: ow})
		if err != nil {
			t.Error(err)
			return nil, 0
		}
		t.Cleanup(func() { st.Close() })
		state, err := st.SimulateCrash(context.Background(), time.Now())
		if err != nil {
			t.Error(err)
		}
		return st, state
	}
	own := func(name, holder string) (*identity.Owner, *etcdstore.Store, int32) {
		cli := etcdlab.Client(t, c.Endpoints()...)
		ow, err := identity.Campaign(context.Background(), cli, prefix, identity.Identity{Name: name}, holder, identity.Options{TTL: 30 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		st, state := serve(cli, ow)
		return ow, st, state
	}
	_, nfsStore, nfsState := own("nfs.example", "server-a")
	_, _, webState := own("web.example", "server-b")
	for _, h := range []string{"c1", "c2"} {
		r := nsm.Registration{MonName: h, MyID: nsm.MyID{Name: "nfs.example", Prog: 100021, Vers: 4, Proc: 16}}
		if err := nfsStore.Apply(context.Background(), []nsm.Change{{Reg: r}}); err != nil {
			t.Fatal(err)
		}
	}
	// server-b stands by for nfs.example.
	type taken struct {
		state int32
		err   error
	}
	standby := make(chan taken, 1)
	go func() {
		cli := etcdlab.Client(t, c.Endpoints()...)
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		ow, err := identity.Acquire(ctx, cli, prefix, identity.Identity{Name: "nfs.example"}, "server-b", identity.Options{TTL: 30 * time.Second})
		if err != nil {
			standby <- taken{err: err}
			return
		}
		_, state := serve(cli, ow)
		standby <- taken{state: state}
	}()

	var out, errb strings.Builder
	if code := run([]string{"--store", store, "identities"}, &out, &errb); code != 0 {
		t.Fatalf("identities: exit %d: %s", code, errb.String())
	}
	rows := map[string][]string{}
	for _, l := range strings.Split(strings.TrimSpace(out.String()), "\n")[1:] {
		f := strings.Fields(l)
		rows[f[0]] = f
	}
	wantRow := func(name, holder string, state int32, regs, owed int) {
		t.Helper()
		f := rows[name]
		if len(f) != 6 || f[1] != holder || f[2] == "-" || f[3] != strconv.Itoa(int(state)) || f[4] != strconv.Itoa(regs) || f[5] != strconv.Itoa(owed) {
			t.Errorf("identities row for %s = %q; want holder %s, a lease, state %d, %d registrations, %d owed\n%s", name, f, holder, state, regs, owed, out.String())
		}
	}
	wantRow("nfs.example", "server-a", nfsState, 2, 0)
	wantRow("web.example", "server-b", webState, 0, 0)
	if len(rows) != 2 {
		t.Errorf("identities lists %d rows, want 2:\n%s", len(rows), out.String())
	}
	out.Reset()
	var hs []identity.Holding
	if code := run([]string{"--store", store, "--json", "identities"}, &out, &errb); code != 0 || json.Unmarshal([]byte(out.String()), &hs) != nil ||
		len(hs) != 2 || hs[0].Name != "nfs.example" || hs[0].Holder != "server-a" || hs[0].Lease == 0 || hs[0].State != nfsState || hs[0].Registrations != 2 ||
		hs[1].Name != "web.example" || hs[1].Holder != "server-b" {
		t.Fatalf("identities --json: exit %d, %+v from %s %s", code, hs, out.String(), errb.String())
	}

	cli := etcdlab.Client(t, c.Endpoints()...)
	netlab.WaitFor(t, 20*time.Second, "server-b standing by", func() error {
		resp, err := cli.Get(context.Background(), identity.ElectionPrefix(prefix, "nfs.example")+"/", clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err == nil && resp.Count != 2 {
			err = fmt.Errorf("%d candidates", resp.Count)
		}
		return err
	})
	out.Reset()
	code := run([]string{"--store", store, "--timeout", "20s", "move", "nfs.example"}, &out, &errb)
	tk := <-standby
	if tk.err != nil {
		t.Fatal(tk.err)
	}
	want := fmt.Sprintf("moved nfs.example from server-a (state %d) to server-b (state %d, 2 notifications owed)\n", nfsState, tk.state)
	if code != 0 || out.String() != want || tk.state <= nfsState || tk.state%2 != 1 {
		t.Fatalf("move: exit %d, %q %q; want %q with a new odd state", code, out.String(), errb.String(), want)
	}
	// The state the command reports is the one in etcd, and the old
	// owner's store is fenced off.
	plain, err := etcdstore.Open(context.Background(), cli, etcdstore.IdentityPrefix(prefix, "nfs.example"), etcdstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	if st, err := plain.State(); err != nil || st != tk.state {
		t.Fatalf("state in etcd %d (%v), want %d", st, err, tk.state)
	}
	if err := nfsStore.Apply(context.Background(), []nsm.Change{{Reg: nsm.Registration{MonName: "late", MyID: nsm.MyID{Name: "nfs.example", Prog: 100021, Vers: 4, Proc: 16}}}}); !errors.Is(err, etcdstore.ErrFenced) {
		t.Fatalf("the moved-away owner's SM_MON: %v, want ErrFenced", err)
	}

	for _, f := range []struct {
		args []string
		want string
	}{
		{[]string{"--store", store, "--timeout", "1s", "move", "web.example"}, "no standby took it over within 1s; server-b deposed, nobody owns it now"},
		{[]string{"--store", store, "move", "none.example"}, "nobody owns it"},
	} {
		out.Reset()
		errb.Reset()
		if code := run(f.args, &out, &errb); code != 1 || !strings.Contains(errb.String(), f.want) || strings.Count(errb.String(), "\n") != 1 {
			t.Errorf("statdctl %q: exit %d, stderr %q; want exit 1 and one line saying %q", f.args, code, errb.String(), f.want)
		}
	}
}

// freeAddr is a loopback address nothing listens on.
func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// TestPrintForget: statdctl forget's text names each identity's share
// when the daemon serves --identity identities.
func TestPrintForget(t *testing.T) {
	var b strings.Builder
	printForget(&b, statd.ForgetSummary{Host: "c1", Released: 2, Registrations: 2, Owed: 1, Identities: []statd.ForgetPart{
		{Identity: "s1", Own: true}, {Identity: "nfs", Released: 2, Registrations: 2, Owed: 1}}})
	for _, want := range []string{"forgot c1: 2 registrants called back (release), 2 registrations and 1 owed notifications dropped",
		"own name s1: 0 called back", "identity nfs: 2 called back, 2 registrations and 1 owed notifications dropped"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("statdctl forget's text lacks %q:\n%s", want, b.String())
		}
	}
}
