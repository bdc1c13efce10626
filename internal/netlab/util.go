package netlab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// inCI is the CI convention: with CI=true, tests that cannot run fail.
func inCI() bool { return os.Getenv("CI") == "true" }

// RequireRoot skips t when not running as root, unless CI=true: then it
// fails, since CI is expected to run every test.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if inCI() {
		t.Fatal("netlab: this test needs root (network and mount namespaces); CI=true, so failing instead of skipping")
	}
	t.Skip("netlab: needs root for network and mount namespaces (with CI=true this is a failure)")
}

// RequireCommand returns the path of the program name, looking in PATH and
// then in /usr/sbin and /sbin (often missing from a user's PATH). When it is
// not installed the test is skipped, or fails when CI=true.
func RequireCommand(t testing.TB, name string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, dir := range []string{"/usr/sbin", "/sbin", "/usr/bin", "/bin"} {
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	msg := fmt.Sprintf("netlab: %s is not installed (scripts/test-deps installs the test dependencies)", name)
	if inCI() {
		t.Fatal(msg + "; CI=true, so failing instead of skipping")
	}
	t.Skip(msg)
	return ""
}

// WaitFor polls cond until it returns nil, and fails the test with cond's
// last error if that does not happen within timeout.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	delay := 5 * time.Millisecond
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s: %v", timeout, what, err)
		}
		time.Sleep(delay)
		delay = min(delay*2, 100*time.Millisecond)
	}
}

// Serve runs an in-process daemon for the test: serve in a goroutine until
// stop is called or the test ends. stop cancels serve's context, waits for
// it, fails the test if it returned an error, and then calls release; it may
// be called more than once.
func Serve(t testing.TB, serve func(context.Context) error, release func() error) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx) }()
	stop = sync.OnceFunc(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("netlab: serve: %v", err)
		}
		release()
	})
	t.Cleanup(stop)
	return stop
}

// MakeStatdDir returns a new state directory for nfs-utils' rpc.statd -P and
// sm-notify -P: a temporary directory holding sm/ and sm.bak/, owned by the
// statd user when there is one (statd runs as the owner of sm/).
func MakeStatdDir(t testing.TB) string {
	t.Helper()
	// Not under t.TempDir: its parent is mode 0700, which keeps out statd
	// and sm-notify once they dropped root.
	dir, err := os.MkdirTemp("", "netlab-statd-")
	if err != nil {
		t.Fatalf("netlab: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	uid, gid := -1, -1
	if u, err := user.Lookup("statd"); err == nil {
		uid, _ = strconv.Atoi(u.Uid)
		gid, _ = strconv.Atoi(u.Gid)
	}
	for _, d := range []string{dir, filepath.Join(dir, "sm"), filepath.Join(dir, "sm.bak")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatalf("netlab: %v", err)
		}
		if uid >= 0 && os.Geteuid() == 0 {
			if err := os.Chown(d, uid, gid); err != nil {
				t.Fatalf("netlab: %v", err)
			}
		}
	}
	return dir
}

var builds struct {
	mu    sync.Mutex
	dir   string
	root  string
	built map[string]bool
}

// BuildCommands builds the module's commands (such as "./cmd/recvstats",
// paths relative to the module root) into one directory per test process and
// returns it; each binary is named after its package directory. Each package
// is built once per process, however many tests ask; safe for concurrent use.
// The module root is found from the working directory by walking up to
// go.mod. NETLAB_RACE=1 builds the commands with -race.
func BuildCommands(t testing.TB, pkgs ...string) (binDir string) {
	t.Helper()
	builds.mu.Lock()
	defer builds.mu.Unlock()
	if builds.dir == "" {
		root, err := moduleRoot()
		if err != nil {
			t.Fatalf("netlab: %v", err)
		}
		sweepStaleBinDirs()
		dir, err := os.MkdirTemp("", fmt.Sprintf("netlab-bin-%d-", os.Getpid()))
		if err != nil {
			t.Fatalf("netlab: %v", err)
		}
		builds.root, builds.dir, builds.built = root, dir, map[string]bool{}
	}
	var missing []string
	for _, p := range pkgs {
		if !builds.built[p] {
			missing = append(missing, p)
		}
	}
	if len(missing) > 0 {
		// No VCS stamp: a checkout owned by another user (git refuses it) must still build.
		args := []string{"build", "-buildvcs=false", "-o", builds.dir + string(filepath.Separator)}
		if os.Getenv("NETLAB_RACE") == "1" {
			args = append(args, "-race")
		}
		// go test puts GOROOT/bin first in the test's PATH.
		cmd := exec.Command("go", append(args, missing...)...)
		cmd.Dir = builds.root
		start := time.Now()
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("netlab: go %s: %v\n%s", strings.Join(cmd.Args[1:], " "), err, out)
		}
		t.Logf("netlab: built %s in %v", strings.Join(missing, " "), time.Since(start).Round(time.Millisecond))
		for _, p := range missing {
			builds.built[p] = true
		}
	}
	return builds.dir
}

func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}

// sweepStaleBinDirs removes binary directories of test processes that are
// gone: a test binary has no hook to remove its own at exit.
func sweepStaleBinDirs() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), "netlab-bin-*-*"))
	for _, d := range dirs {
		f := strings.SplitN(strings.TrimPrefix(filepath.Base(d), "netlab-bin-"), "-", 2)
		pid, err := strconv.Atoi(f[0])
		if err != nil || pid == os.Getpid() {
			continue
		}
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			os.RemoveAll(d)
		}
	}
}

// DialTCP opens n TCP connections from h to addr, from the address src
// when it is valid (one of h's), and closes them when the test ends. The
// connections count as opened when the handshake completes, even if the
// server then closes them at once.
func DialTCP(t testing.TB, h *Host, addr netip.AddrPort, n int, src netip.Addr) []net.Conn {
	t.Helper()
	conns := make([]net.Conn, 0, n)
	err := h.Do(func() error {
		d := net.Dialer{Timeout: 5 * time.Second}
		if src.IsValid() {
			d.LocalAddr = &net.TCPAddr{IP: src.AsSlice()}
		}
		for range n {
			c, err := d.Dial("tcp", addr.String())
			if err != nil {
				return err
			}
			conns = append(conns, c)
		}
		return nil
	})
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	if err != nil {
		t.Fatalf("dialing from %s: %v", h.Name, err)
	}
	return conns
}

// ExecutableForOthers copies the running test binary where any user may
// run it (go test builds it in a directory only its owner may enter), for
// tests that run part of themselves as another user.
func ExecutableForOthers(t testing.TB) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "hoststat-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, filepath.Base(self))
	if err := os.WriteFile(path, data, 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

// FreeUDPPort returns a UDP port nothing listens on at 127.0.0.1 right now.
func FreeUDPPort(t testing.TB) int {
	t.Helper()
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	return pc.LocalAddr().(*net.UDPAddr).Port
}
