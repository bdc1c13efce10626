package main

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hoststat/hoststat/internal/netlab"
)

func freeUDPPort(t *testing.T) string { return strconv.Itoa(netlab.FreeUDPPort(t)) }

// notifySocket listens where a Type=notify service reports to systemd.
func notifySocket(t *testing.T) (*net.UnixConn, string) {
	path := filepath.Join(t.TempDir(), "notify.sock")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, path
}

func expectNotify(t *testing.T, c *net.UnixConn, want string) {
	t.Helper()
	buf := make([]byte, 512)
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	for {
		n, err := c.Read(buf)
		if err != nil {
			t.Fatalf("waiting for %q from the service: %v", want, err)
		}
		if strings.Contains(string(buf[:n]), want) {
			return
		}
	}
}

// TestSystemdTypeNotify: started by systemd as a Type=notify service
// (NOTIFY_SOCKET set, no -d), recvstats stays in the foreground as the
// process systemd started, says READY=1 once serving, STOPPING=1 on SIGTERM,
// and exits 0; its records go to the journal stream with syslog priority
// prefixes and no timestamp of their own.
func TestSystemdTypeNotify(t *testing.T) {
	bin := filepath.Join(netlab.BuildCommands(t, "./cmd/recvstats"), "recvstats")
	sock, sockPath := notifySocket(t)
	journal, err := os.Create(filepath.Join(t.TempDir(), "journal"))
	if err != nil {
		t.Fatal(err)
	}
	defer journal.Close()
	var st syscall.Stat_t
	if err := syscall.Fstat(int(journal.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--config", "/dev/null", "--listen", "127.0.0.1", "-p", freeUDPPort(t), "--shm-dir", t.TempDir())
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+sockPath, "JOURNAL_STREAM="+strconv.FormatUint(uint64(st.Dev), 10)+":"+strconv.FormatUint(st.Ino, 10))
	cmd.Stderr = journal
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer cmd.Process.Kill()
	expectNotify(t, sock, "READY=1")
	select {
	case err := <-exited:
		t.Fatalf("recvstats left the foreground under systemd: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
	cmd.Process.Signal(syscall.SIGTERM)
	expectNotify(t, sock, "STOPPING=1")
	if err := <-exited; err != nil {
		t.Fatalf("exit after SIGTERM: %v", err)
	}
	out, _ := os.ReadFile(journal.Name())
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	var serving bool
	for _, l := range lines {
		if !strings.HasPrefix(l, "<") || strings.Contains(l, ">time=") || strings.Contains(l, "level=") {
			t.Errorf("journal line %q: want a <priority> prefix, no timestamp and no level", l)
		}
		serving = serving || strings.HasPrefix(l, "<6>msg=serving")
	}
	if !serving {
		t.Errorf("no <6> serving record in the journal stream:\n%s", out)
	}
}

// Values that make no sense are refused in one line naming the flag, exit 2.
func TestUsageErrors(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"-p", "0"}, "port 0 is not in 1..65535"},
		{[]string{"--history-points", "0"}, "history sizes must be positive"},
		{[]string{"--group", "10.0.0.1"}, `group "10.0.0.1" is not an IPv4 multicast address`},
	} {
		var out, errb strings.Builder
		if code := run(append(c.args, "-d", "--shm-dir", t.TempDir()), &out, &errb); code != 2 ||
			!strings.Contains(errb.String(), c.want) || strings.Count(errb.String(), "\n") != 1 {
			t.Errorf("recvstats %q: exit %d, stderr %q; want 2 and one line with %q", c.args, code, errb.String(), c.want)
		}
	}
}
