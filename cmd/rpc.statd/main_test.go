package main

import (
	"bytes"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/hoststat/hoststat/internal/netlab"
)

func binary(t *testing.T) string {
	return filepath.Join(netlab.BuildCommands(t, "./cmd/rpc.statd"), "rpc.statd")
}

func runBin(t *testing.T, stdin *os.File, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(binary(t), args...)
	cmd.Stdin = stdin
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return out.String(), ee.ExitCode()
	}
	if err != nil {
		t.Fatal(err)
	}
	return out.String(), 0
}

func TestUsage(t *testing.T) {
	if out, code := runBin(t, nil, "--version"); code != 0 || !strings.Contains(out, "rpc.statd") {
		t.Errorf("--version: %d %q", code, out)
	}
	out, code := runBin(t, nil, "--help")
	if code != 0 {
		t.Errorf("--help: exit %d", code)
	}
	for _, opt := range []string{"--foreground", "--port", "--outgoing-port", "--state-directory-path", "--name", "--no-notify", "--ha-callout", "-d, --debug", "-n, --notify"} {
		if !strings.Contains(out, opt) {
			t.Errorf("--help lacks %s:\n%s", opt, out)
		}
	}
	if strings.Contains(out, "notify-schedule") {
		t.Errorf("--help shows a test-only flag:\n%s", out)
	}
	if _, code := runBin(t, nil, "--bogus"); code != 2 {
		t.Errorf("--bogus: exit %d, want 2", code)
	}
}

// TestRefusesInetd: with a socket as stdin (as inetd starts a daemon) it
// exits 2 and says why.
func TestRefusesInetd(t *testing.T) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fds[0]), "sock")
	defer f.Close()
	defer syscall.Close(fds[1])
	out, code := runBin(t, f, "-F", "-P", t.TempDir())
	if code != 2 || !strings.Contains(out, "inetd") {
		t.Fatalf("exit %d, output %q", code, out)
	}
}

// TestNotifyOnceNothingOwed: -n on a fresh store reports and exits 0.
func TestNotifyOnceNothingOwed(t *testing.T) {
	out, code := runBin(t, nil, "-n", "-P", t.TempDir(), "--nfs-utils-dir", "")
	if code != 0 || !strings.Contains(out, "notified 0 of 0 hosts; 0 still owed") {
		t.Fatalf("exit %d, output %q", code, out)
	}
}

// TestDaemonizeReportsFailure: without -F the parent waits for the child
// and exits 1 with the child's reason when it cannot serve.
func TestDaemonizeReportsFailure(t *testing.T) {
	pc, err := net.ListenPacket("udp4", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	port := strconv.Itoa(pc.LocalAddr().(*net.UDPAddr).Port)
	out, code := runBin(t, nil, "-P", t.TempDir(), "-p", port, "--no-rpcbind", "--nfs-utils-dir", "")
	if code != 1 || !strings.Contains(out, "address already in use") {
		t.Fatalf("exit %d, output %q", code, out)
	}
}

// oneLine checks that a usage error is exactly one line that says what
// was wrong.
func oneLine(t *testing.T, args []string, out string, code int, want string) {
	t.Helper()
	if code != 2 || strings.Count(out, "\n") != 1 || !strings.HasPrefix(out, "rpc.statd: ") || !strings.Contains(out, want) {
		t.Errorf("rpc.statd %q: exit %d, output %q; want exit 2 and one line saying %q", args, code, out, want)
	}
}

// TestUsageErrorsOneLine: every bad command line exits 2 with one line
// naming what was wrong (before, --bogus and -p exited 2 silently).
func TestUsageErrorsOneLine(t *testing.T) {
	conf := filepath.Join(t.TempDir(), "nfs.conf")
	os.WriteFile(conf, []byte("[statd]\nport = many\n"), 0o644)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--bogus"}, "unknown flag: --bogus"},
		{[]string{"-p"}, "flag needs an argument: 'p' in -p"},
		{[]string{"-p", "x"}, `invalid argument "x" for "-p, --port"`},
		{[]string{"-p", "70000"}, "--port 70000 is not in 0..65535"},
		{[]string{"-o", "-1"}, "--outgoing-port -1 is not in 0..65535"},
		{[]string{"extra"}, `unexpected argument "extra"`},
		{[]string{"--notify-schedule", "bogus"}, "--notify-schedule"},
		{[]string{"--nfs-conf", conf}, `port = "many" is not a port number`},
		{[]string{"--name", "bad/name"}, `--name: nsm: mon_name "bad/name" contains '/'`},
		{[]string{"--metrics", "0.0.0.0:9724"}, `--metrics "0.0.0.0:9724": not a loopback address; give --metrics-public`},
		{[]string{"--telemetry", "/x", "--no-telemetry"}, "--telemetry and --no-telemetry together"},
		{[]string{"--gone-after", "0s"}, "--gone-after and --telemetry-period must be positive durations"},
		{[]string{"--grace-settle", "-1s"}, "--grace-settle not negative"},
		{[]string{"--store", "/var/lib/x"}, "not an etcd URL"},
		{[]string{"--store", "etcd://h:1"}, "no key prefix"},
		{[]string{"--etcd-user", "u"}, "--etcd-user needs --store etcd://"},
		{[]string{"--store", "etcd://h:1/p", "--reset-store"}, "--reset-store is for the bbolt store"},
		{[]string{"--store", "etcd://h:1/p", "--nfs-utils-dir", "/x"}, "--nfs-utils-dir is for the bbolt store"},
		{[]string{"--identity", "nfs=192.0.2.1"}, "--identity needs --store etcd://"},
		{[]string{"--store", "etcd://h:1/p", "--identity", "nfs"}, "want NAME=ADDR"},
		{[]string{"--store", "etcd://h:1/p", "--identity", "nfs=1.2.3.4", "--identity", "nfs=1.2.3.5"}, "given twice"},
		{[]string{"--store", "etcd://h:1/p", "--identity", "me=1.2.3.4", "--name", "me"}, "that is --name"},
		{[]string{"--store", "etcd://h:1/p", "--identity-ttl", "1500ms"}, "--identity-ttl 1.5s: want whole seconds"},
	} {
		out, code := runBin(t, nil, c.args...)
		oneLine(t, c.args, out, code, c.want)
	}
	// The command line wins over nfs.conf: the bad port is not read.
	out, code := runBin(t, nil, "--nfs-conf", conf, "-p", "0", "-n", "-P", t.TempDir(), "--nfs-utils-dir", "")
	if code != 0 {
		t.Errorf("-p given on the command line: nfs.conf's port should not matter: exit %d %q", code, out)
	}
}

// TestHelpOnStdout: --help goes to stdout (stderr empty), exit 0.
func TestHelpOnStdout(t *testing.T) {
	cmd := exec.Command(binary(t), "--help")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil || stderr.Len() != 0 || !strings.Contains(stdout.String(), "--reset-store") {
		t.Fatalf("--help: %v, stdout %q, stderr %q", err, stdout.String(), stderr.String())
	}
}

// TestForegroundStartupErrorOnce: with -F a start-up error is printed
// once, not once by the logger and again by main.
func TestForegroundStartupErrorOnce(t *testing.T) {
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	out, code := runBin(t, nil, "-F", "-P", dir, "--no-rpcbind", "--nfs-utils-dir", "")
	if code != 1 || strings.Count(out, "writable by group or others") != 1 {
		t.Fatalf("exit %d, output %q; want exit 1 and the reason once", code, out)
	}
}

// TestUnwritableStateDir: run as an ordinary user on root's directory,
// rpc.statd says the directory is not writable, not that a store is
// damaged.
func TestUnwritableStateDir(t *testing.T) {
	netlab.RequireRoot(t)
	bin := t.TempDir()
	for _, d := range []string{filepath.Dir(bin), bin} {
		os.Chmod(d, 0o755)
	}
	exe := filepath.Join(bin, "rpc.statd")
	b, err := os.ReadFile(binary(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(exe, b, 0o755); err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(bin, "state")
	os.Mkdir(state, 0o755)
	cmd := exec.Command(exe, "-n", "-P", state, "--nfs-utils-dir", "")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(string(out), "is not writable by uid 65534") ||
		strings.Contains(string(out), "damaged") {
		t.Fatalf("%v: %q; want exit 1 saying the directory is not writable", err, out)
	}
}

// TestDamagedStoreExitsOne: a damaged or emptied store makes rpc.statd
// print one line naming the file and the remedy and exit 1 (old main
// panicked with exit 2 on most damage, and took an empty store as new).
func TestDamagedStoreExitsOne(t *testing.T) {
	dir := t.TempDir()
	if out, code := runBin(t, nil, "-n", "-P", dir, "--nfs-utils-dir", ""); code != 0 {
		t.Fatalf("first start: %d %q", code, out)
	}
	db := filepath.Join(dir, "statd.db")
	b, err := os.ReadFile(db)
	if err != nil {
		t.Fatal(err)
	}
	ps := os.Getpagesize()
	for _, c := range []struct {
		name string
		data []byte
		want string
	}{
		{"meta pages flipped", func() []byte {
			d := append([]byte(nil), b...)
			d[20] ^= 1
			d[ps+20] ^= 1
			return d
		}(), "no valid meta page"},
		{"truncated to 8 KiB", b[:8<<10], "too short"},
		{"zero length", nil, "is empty, but"},
	} {
		if err := os.WriteFile(db, c.data, 0o600); err != nil {
			t.Fatal(err)
		}
		out, code := runBin(t, nil, "-n", "-P", dir, "--nfs-utils-dir", "")
		if code != 1 || strings.Count(out, "\n") != 1 || !strings.Contains(out, db) || !strings.Contains(out, c.want) ||
			!strings.Contains(out, "--reset-store") {
			t.Errorf("%s: exit %d, output %q; want exit 1 and one line naming %s, %q and --reset-store", c.name, code, out, db, c.want)
		}
	}
	out, code := runBin(t, nil, "-n", "-P", dir, "--nfs-utils-dir", "", "--reset-store")
	if code != 0 || !strings.Contains(out, "state 3:") {
		t.Fatalf("--reset-store: exit %d %q; want the state to move on to 3", code, out)
	}
}

// TestNFSConf: nfs.conf's [statd] options apply where the command line is
// silent: here the state directory.
func TestNFSConf(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "from-conf")
	conf := filepath.Join(t.TempDir(), "nfs.conf")
	os.WriteFile(conf, []byte("[statd]\nstate-directory-path = "+dir+"\nport = 0\n"), 0o644)
	if out, code := runBin(t, nil, "-n", "--nfs-conf", conf, "--nfs-utils-dir", ""); code != 0 {
		t.Fatalf("exit %d %q", code, out)
	}
	if _, err := os.Stat(filepath.Join(dir, "statd.db")); err != nil {
		t.Fatalf("nfs.conf's state-directory-path not used: %v", err)
	}
}
