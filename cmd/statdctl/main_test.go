package main

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hoststat/hoststat/statd"
)

func TestPrintText(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	st := &statd.Status{Name: "me", State: 7, Pid: 42, StateDir: "/x", Started: now,
		Listeners: []string{"udp 0.0.0.0:600"}, Metrics: "127.0.0.1:9724",
		Monitored: []statd.Monitored{{MonName: "peer", Registrants: []statd.Registrant{
			{MyName: "me", Prog: 100021, Vers: 4, Proc: 16, Priv: "00ff"}, {MyName: "me", Prog: 300000, Vers: 1, Proc: 1, Priv: "01"}},
			Liveness: &statd.HostLiveness{State: "silent", Since: now.Add(-5 * time.Minute)}},
			{MonName: "old", Registrants: []statd.Registrant{{MyName: "me", Prog: 100021, Vers: 4, Proc: 16}}}},
		Owed: []statd.Owed{{Host: "gone", State: 7, Since: now, Attempts: 3, NextTry: now.Add(90 * time.Second), LastErr: "timeout"}},
	}
	var sb strings.Builder
	printText(&sb, st, now)
	out := sb.String()
	for _, want := range []string{`rpc.statd "me"  state 7  pid 42`, "monitored hosts: 2 (3 registrations)", "peer", "silent 5m0s", "100021", "300000",
		"notifications owed: 1", "gone", "(in 1m30s)", "timeout", "metrics at http://127.0.0.1:9724/metrics"} {
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
		{[]string{"status"}, 2, "", `unknown command "status" (commands: import, forget)`},
		{[]string{"import"}, 2, "", "import needs the nfs-utils state directory"},
		{[]string{"import", "a", "b"}, 2, "", `unexpected argument "b" after import DIR | forget HOST`},
		{[]string{"forget"}, 2, "", "forget needs the host"},
		{[]string{"--help"}, 0, "statdctl [-P dir] [--json] forget HOST", ""},
		{[]string{"--timeout", "0s"}, 2, "", "--timeout 0s must be positive"},
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
