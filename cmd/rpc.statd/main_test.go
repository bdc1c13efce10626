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
	out, code := runBin(t, nil, "-n", "-P", t.TempDir())
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
	out, code := runBin(t, nil, "-P", t.TempDir(), "-p", port, "--no-rpcbind")
	if code != 1 || !strings.Contains(out, "address already in use") {
		t.Fatalf("exit %d, output %q", code, out)
	}
}
