package e2e_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hoststat/hoststat/internal/netlab"
	"github.com/hoststat/hoststat/shm"
	"github.com/hoststat/hoststat/telemetry/sample"
	"github.com/hoststat/hoststat/telemetry/wire"
)

// freePort returns a UDP port on 127.0.0.1 that was free a moment ago.
func freePort(t testing.TB) int { return netlab.FreeUDPPort(t) }

type result struct {
	code           int
	stdout, stderr string
}

func runCmd(t testing.TB, timeout time.Duration, bin string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("%s %v: %v", bin, args, err)
	}
	return result{code, out.String(), errb.String()}
}

// killPID stops a daemon we started (by its pid) and waits for it to go.
func killPID(t testing.TB, pid int) {
	t.Helper()
	if pid <= 0 {
		return
	}
	_ = syscall.Kill(pid, syscall.SIGTERM)
	deadline := time.Now().Add(5 * time.Second)
	for syscall.Kill(pid, 0) == nil {
		if time.Now().After(deadline) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// daemonPID finds the background process we started with exactly args:
// it is its own session leader, in a session we created.
func daemonPID(t testing.TB, bin string, args ...string) int {
	t.Helper()
	want := strings.Join(append([]string{bin}, args...), "\x00") + "\x00"
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && string(b) == want {
			if sid, _ := unixGetsid(pid); sid == pid {
				return pid
			}
		}
	}
	return 0
}

func unixGetsid(pid int) (int, error) {
	r, _, e := syscall.RawSyscall(syscall.SYS_GETSID, uintptr(pid), 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

// The daemons' command lines: help, version, usage errors (2), and
// start-up failures reported by the parent with the reason (1).
func TestCommandLines(t *testing.T) {
	recvstats, sendstats := bins(t)
	for _, tc := range []struct {
		bin  string
		args []string
		code int
		out  string // in stdout (code 0) or stderr
	}{
		{recvstats, []string{"-h"}, 0, "-i, --interface IF"},
		{recvstats, []string{"--help"}, 0, "-p, --port PORT"},
		{recvstats, []string{"-v"}, 0, "recvstats (hoststat)"},
		{recvstats, []string{"--version"}, 0, "recvstats (hoststat)"},
		{recvstats, []string{"--bogus"}, 2, "unknown flag: --bogus"},
		{recvstats, []string{"-p", "70000"}, 2, "port 70000"},
		{recvstats, []string{"--group", "10.0.0.1"}, 2, "not an IPv4 multicast"},
		{recvstats, []string{"--down-after", "soon"}, 2, "down-after"},
		{sendstats, []string{"-h"}, 0, "-a, --address HOST[:PORT]"},
		{sendstats, []string{"-v"}, 0, "sendstats (hoststat)"},
		{sendstats, []string{"-r", "0.5"}, 2, "nowhere to send"},
		{sendstats, []string{"-a", "127.0.0.1", "-r", "0"}, 2, "rate 0"},
		{sendstats, []string{"-a", "127.0.0.1:x"}, 2, "bad port"},
	} {
		r := runCmd(t, 10*time.Second, tc.bin, tc.args...)
		got := r.stderr
		if tc.code == 0 {
			got = r.stdout
		}
		if r.code != tc.code || !strings.Contains(got, tc.out) {
			t.Errorf("%s %v: exit %d, stdout %q stderr %q; want exit %d and %q", filepath.Base(tc.bin), tc.args, r.code, r.stdout, r.stderr, tc.code, tc.out)
		}
	}
}

// Without -d the daemons go to the background and the parent exits 0 only
// once the child serves; when the child cannot start, the parent exits 1
// with the child's reason.
func TestDaemonStartup(t *testing.T) {
	recvstats, sendstats := bins(t)
	base := t.TempDir()

	// The shm directory cannot be created (a file is in the way).
	if err := os.WriteFile(filepath.Join(base, "file"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(base, "file", "shm")
	r := runCmd(t, 30*time.Second, recvstats, "--listen", "127.0.0.1", "-p", strconv.Itoa(freePort(t)), "--shm-dir", bad)
	if r.code != 1 || !strings.Contains(r.stderr, bad) {
		t.Errorf("recvstats with shm-dir %s: exit %d, stderr %q; want 1 and the path", bad, r.code, r.stderr)
	}
	// A key file others can read is refused before forking.
	key := filepath.Join(base, "key")
	os.WriteFile(key, []byte("0123456789abcdef0123\n"), 0o644)
	r = runCmd(t, 30*time.Second, recvstats, "--listen", "127.0.0.1", "-p", strconv.Itoa(freePort(t)), "--shm-dir", base, "--key-file", key)
	if r.code != 1 || !strings.Contains(r.stderr, key) {
		t.Errorf("recvstats with a 0644 key: exit %d, stderr %q", r.code, r.stderr)
	}
	// sendstats whose /proc is missing: the child's reason reaches us.
	r = runCmd(t, 30*time.Second, sendstats, "-a", "127.0.0.1:9", "--proc", filepath.Join(base, "noproc"))
	if r.code != 1 || !strings.Contains(r.stderr, "noproc") {
		t.Errorf("sendstats with a missing /proc: exit %d, stderr %q", r.code, r.stderr)
	}

	// Success: the directory is created 0755, the table 0644, and the
	// daemon (its pid in the table header) is serving when we return.
	dir := filepath.Join(base, "state", "shm")
	port := strconv.Itoa(freePort(t))
	// Node 7 sends its number unsigned: the node map pins it to the
	// address it sends from, so it is believed.
	nodeMap := writeNodeMap(t, "7 127.0.0.1")
	r = runCmd(t, 30*time.Second, recvstats, "--listen", "127.0.0.1", "-p", port, "--shm-dir", dir, "--node-map", nodeMap)
	if r.code != 0 {
		t.Fatalf("recvstats in the background: exit %d, stderr %q", r.code, r.stderr)
	}
	tr, err := shm.OpenReader(dir)
	if err != nil {
		t.Fatalf("table not there when the parent exited: %v", err)
	}
	defer tr.Close()
	pid := tr.Info().WriterPID
	t.Cleanup(func() { killPID(t, pid) })
	if pid == 0 || syscall.Kill(pid, 0) != nil {
		t.Fatalf("daemon pid %d not running", pid)
	}
	if sid, _ := unixGetsid(pid); sid != pid {
		t.Errorf("daemon %d is in session %d, want its own", pid, sid)
	}
	for p, want := range map[string]os.FileMode{dir: 0o755 | os.ModeDir, filepath.Join(dir, shm.FileName): 0o644} {
		if fi, err := os.Stat(p); err != nil || fi.Mode() != want {
			t.Errorf("%s: mode %v (%v), want %v", p, fi.Mode(), err, want)
		}
	}
	// A second one on the same port and directory is refused.
	r = runCmd(t, 30*time.Second, recvstats, "--listen", "127.0.0.1", "-p", port, "--shm-dir", dir)
	if r.code == 0 {
		t.Errorf("a second recvstats on the same table started")
		killPID(t, daemonPID(t, recvstats, "--listen", "127.0.0.1", "-p", port, "--shm-dir", dir))
	}

	// sendstats in the background reaches it.
	sargs := []string{"-a", "127.0.0.1:" + port, "--node", "7", "-r", "0.1"}
	if r := runCmd(t, 30*time.Second, sendstats, sargs...); r.code != 0 {
		t.Fatalf("sendstats in the background: exit %d, stderr %q", r.code, r.stderr)
	}
	spid := daemonPID(t, sendstats, sargs...)
	t.Cleanup(func() { killPID(t, spid) })
	if spid == 0 {
		t.Error("no background sendstats found")
	}
	netlab.WaitFor(t, 5*time.Second, "node 7", func() error {
		s, ok, err := tr.Summary(7)
		if err != nil || !ok || s.CPUs == 0 {
			return fmt.Errorf("node 7: %v %v", ok, err)
		}
		return nil
	})
	// SIGTERM: a clean stop (the writer pid is cleared on close).
	killPID(t, pid)
	if got := tr.Info().WriterPID; got != 0 {
		t.Errorf("writer pid %d left in the table after SIGTERM", got)
	}
}

// Relative paths are made absolute before recvstats goes to the
// background (whose working directory is /): the table lands under the
// directory the command was typed in.
func TestRelativeShmDir(t *testing.T) {
	recvstats, _ := bins(t)
	cwd := t.TempDir()
	// A name no one else uses under /, where a wrong daemon would go:
	// cleaned up (and that daemon stopped) whatever happens.
	rel := fmt.Sprintf("hoststat-test-%d-%d/shm", os.Getpid(), time.Now().UnixNano())
	t.Cleanup(func() {
		if tr, err := shm.OpenReader(filepath.Join("/", rel)); err == nil {
			killPID(t, int(tr.Info().WriterPID))
			tr.Close()
		}
		os.RemoveAll(filepath.Join("/", filepath.Dir(rel)))
	})
	cmd := exec.Command(recvstats, "--listen", "127.0.0.1", "-p", strconv.Itoa(freePort(t)), "--shm-dir", rel)
	cmd.Dir = cwd
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("recvstats --shm-dir %s: %v: %s", rel, err, out)
	}
	dir := filepath.Join(cwd, rel)
	tr, err := shm.OpenReader(dir)
	if err != nil {
		t.Fatalf("no table under the working directory: %v", err)
	}
	defer tr.Close()
	killPID(t, int(tr.Info().WriterPID))
	if _, err := os.Stat(filepath.Join("/", rel)); err == nil {
		t.Error("a table directory appeared under /")
	}
}

// A master whose name does not resolve at start (a node booting before
// the name service) used to make sendstats exit 2: it now runs and keeps
// trying.
func TestUnresolvableMasterAtStart(t *testing.T) {
	_, sendstats := bins(t)
	cmd := exec.Command(sendstats, "-d", "-a", "no-such-host.invalid", "-r", "0.1")
	var logb netlab.LogBuffer
	cmd.Stderr = &logb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	defer func() { cmd.Process.Kill(); <-done }()
	netlab.WaitFor(t, 5*time.Second, "a retry logged", func() error {
		select {
		case err := <-done:
			done <- err
			return fmt.Errorf("sendstats exited: %v: %s", err, logb.String())
		default:
		}
		if !strings.Contains(logb.String(), "does not resolve yet") {
			return errors.New("not logged yet")
		}
		return nil
	})
	time.Sleep(500 * time.Millisecond)
	select {
	case err := <-done:
		done <- err
		t.Fatalf("sendstats exited: %v: %s", err, logb.String())
	default:
	}
}

// Garbage at a running recvstats (random bytes, truncated, wrong version,
// oversized, out-of-range node numbers, duplicates, out of order) neither
// stops it nor touches the table, and good packets still land.
func TestGarbageAtDaemon(t *testing.T) {
	recvstats, _ := bins(t)
	dir := t.TempDir()
	port := freePort(t)
	cmd := exec.Command(recvstats, "-d", "--listen", "127.0.0.1", "-p", strconv.Itoa(port), "--shm-dir", dir, "--node-map", writeNodeMap(t, "9 127.0.0.1"))
	var logb netlab.LogBuffer
	cmd.Stderr = &logb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-done
		if t.Failed() {
			t.Logf("recvstats log:\n%s", logb.String())
		}
	})
	tb := openTable(t, dir)
	conn, err := net.DialUDP("udp4", nil, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	enc := wire.NewEncoder(nil)
	smp := &sample.Sample{Time: time.Now(), BootTime: time.Now().Add(-time.Hour), BootID: [16]byte{9}, CPUs: make([]sample.CPU, 4),
		Memory: sample.Memory{Total: 1 << 30}, Net: []sample.NetDev{{Name: "eth0"}}}
	// Flipped copies of node 8's packet may forge anything the
	// unauthenticated protocol cannot check, even node 9 (a flip of the
	// node number): node 9's own packets come from a later boot, which
	// wins over any forgery of the earlier one.
	base, err := enc.AppendStatus(nil, 8, 1, smp)
	if err != nil {
		t.Fatal(err)
	}
	smp9 := *smp
	smp9.BootID, smp9.BootTime = [16]byte{10}, smp.BootTime.Add(time.Minute)
	good, err := enc.AppendStatus(nil, 9, 1, &smp9)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	var bad [][]byte
	for range 2000 {
		b := make([]byte, rng.IntN(1600))
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		bad = append(bad, b)
	}
	g := base[0]
	for n := 1; n < len(g); n += 7 {
		bad = append(bad, g[:n]) // truncated
	}
	for range 500 { // valid start, flipped bytes
		b := append([]byte(nil), g...)
		b[rng.IntN(len(b))] ^= byte(1 + rng.IntN(255))
		bad = append(bad, b)
	}
	v2 := append([]byte(nil), g...)
	v2[4] = 2
	bad = append(bad, v2, append(append([]byte(nil), g...), make([]byte, 1000)...))
	// A node number far out of range, from another address (the flips
	// above may have moved this one's sequence anywhere).
	huge, _ := wire.NewEncoder(nil).AppendStatus(nil, 1<<30, 1, smp)
	other, err := net.DialUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 2)}, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	other.Write(huge[0])
	for _, b := range bad {
		conn.Write(b)
	}
	for _, b := range good {
		conn.Write(b)
		conn.Write(b) // a duplicate
	}
	netlab.WaitFor(t, 5*time.Second, "node 9 after the garbage", func() error {
		if _, ok := tb.node(9); !ok {
			return errors.New("node 9 not in the table")
		}
		return nil
	})
	// The garbage went first on one socket, so it has all been handled.
	select {
	case err := <-done:
		done <- err
		t.Fatalf("recvstats exited: %v", err)
	default:
	}
	info := tb.r.Info()
	for n := range info.NodeLimit {
		if _, ok := tb.node(n); ok && n != 9 {
			s, _ := tb.node(n)
			// Forged by a flip, but still from our address.
			if s.Addr.Addr() != netip.MustParseAddr("127.0.0.1") {
				t.Errorf("node %d in the table with no address", n)
			}
		}
	}
	if info.NodeLimit > 1<<16 {
		t.Errorf("table grew to %d nodes", info.NodeLimit)
	}
	s, _ := tb.node(9)
	if s.CPUs != 4 || s.Memory.Total != 1<<30 || s.Addr.Addr() != netip.MustParseAddr("127.0.0.1") {
		t.Errorf("node 9 record corrupted: %+v", s)
	}
	// Out of order: sample 3 of node 9, then sample 2, which is dropped
	// as stale and leaves sample 3 in the table.
	send9 := func(seq uint32, mem uint64) {
		smp := smp9
		smp.Memory.Total = mem
		b, err := enc.AppendStatus(nil, 9, seq, &smp)
		if err != nil {
			t.Fatal(err)
		}
		conn.Write(b[0])
	}
	send9(3, 3<<30)
	netlab.WaitFor(t, 5*time.Second, "sample 3 of node 9", func() error {
		if s, _ := tb.node(9); s.Memory.Total != 3<<30 {
			return fmt.Errorf("node 9 holds %d bytes of memory", s.Memory.Total)
		}
		return nil
	})
	// -d names the sources of each second's drops: let the second of
	// the garbage above be summarised before counting.
	time.Sleep(1200 * time.Millisecond)
	stale := strings.Count(logb.String(), "stale@127.0.0.1=")
	send9(2, 2<<30)
	netlab.WaitFor(t, 5*time.Second, "sample 2 dropped as stale", func() error {
		if strings.Count(logb.String(), "stale@127.0.0.1=") == stale {
			return errors.New("no new stale drop in the log")
		}
		return nil
	})
	if s, _ := tb.node(9); s.Memory.Total != 3<<30 {
		t.Errorf("an out-of-order sample replaced a newer one: %+v", s)
	}
	// The drops are in the summary logged at exit.
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-done:
		done <- err
		if err != nil {
			t.Errorf("recvstats exit after SIGTERM: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("recvstats did not stop on SIGTERM")
	}
	out := logb.String()
	for _, want := range []string{"malformed=", "truncated=", "version=", "oversize=", "node-range=", "duplicate=", "stale=", "receive summary"} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q", want)
		}
	}
}

// writeNodeMap writes a --node-map file of the given lines.
func writeNodeMap(t *testing.T, lines ...string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "nodes")
	if err := os.WriteFile(p, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}
