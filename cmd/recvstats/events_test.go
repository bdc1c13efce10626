package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hoststat/hoststat/internal/netlab"
)

// startCmd runs a command we own for the test, stopped by its pid with
// SIGTERM when the test ends (or by the returned stop).
func startCmd(t *testing.T, bin string, args ...string) (stop func()) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	errb := &netlab.LogBuffer{Limit: 1 << 20}
	cmd.Stderr = errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	stop = func() {
		select {
		case <-done:
			return
		default:
		}
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Errorf("%s did not stop on SIGTERM within 5 s:\n%s", filepath.Base(bin), errb)
			_ = cmd.Process.Kill()
			<-done
		}
	}
	t.Cleanup(stop)
	return stop
}

// TestOnEventUpDownUp runs a real recvstats with --on-event and a real
// sendstats that is stopped and started again: the program is run with
// "NODE ADDR up", then "down" once the node is silent past --down-after,
// then "up" again.
func TestOnEventUpDownUp(t *testing.T) {
	bin := netlab.BuildCommands(t, "./cmd/recvstats", "./cmd/sendstats")
	dir, port := t.TempDir(), freeUDPPort(t)
	out := filepath.Join(t.TempDir(), "events")
	prog := filepath.Join(t.TempDir(), "on-event")
	if err := os.WriteFile(prog, []byte("#!/bin/sh\necho \"$@\" >> "+out+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	startCmd(t, filepath.Join(bin, "recvstats"), "-d", "--listen", "127.0.0.1", "-p", port, "--shm-dir", dir,
		"--down-after", "1s", "--on-event", prog)
	sender := func() func() {
		return startCmd(t, filepath.Join(bin, "sendstats"), "-d", "-a", "127.0.0.1:"+port, "-r", "0.2")
	}
	expect := func(what string, want ...string) {
		t.Helper()
		netlab.WaitFor(t, 20*time.Second, what, func() error {
			b, _ := os.ReadFile(out)
			if string(b) != strings.Join(want, "") {
				return fmt.Errorf("events %q, want %q", b, strings.Join(want, ""))
			}
			return nil
		})
	}
	stop := sender()
	expect("the node up", "0 127.0.0.1 up\n")
	stop()
	expect("the node down", "0 127.0.0.1 up\n0 127.0.0.1 down\n")
	sender()
	expect("the node up again", "0 127.0.0.1 up\n0 127.0.0.1 down\n0 127.0.0.1 up\n")
}
