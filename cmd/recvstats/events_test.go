package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hoststat/hoststat/internal/netlab"
)

// startCmd runs a command we own for the test, stopped by its pid with
// SIGTERM when the test ends (or by the returned stop).
func startCmd(t *testing.T, bin string, args ...string) (stop func(), stdout *netlab.LogBuffer) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	errb := &netlab.LogBuffer{Limit: 1 << 20}
	stdout = &netlab.LogBuffer{Limit: 1 << 20}
	cmd.Stderr, cmd.Stdout = errb, stdout
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
	return stop, stdout
}

// TestOnEventUpDownUp runs a real recvstats with --on-event and a real
// sendstats that is stopped and started again: the program is run with
// "NODE ADDR up", then "down" once the node is silent past --down-after,
// then "up" again; beostat --events, an ordinary reader of the table's
// directory, prints the same events.
func TestOnEventUpDownUp(t *testing.T) {
	bin := netlab.BuildCommands(t, "./cmd/recvstats", "./cmd/sendstats", "./cmd/beostat")
	dir, port := t.TempDir(), freeUDPPort(t)
	out := filepath.Join(t.TempDir(), "events")
	prog := filepath.Join(t.TempDir(), "on-event")
	if err := os.WriteFile(prog, []byte("#!/bin/sh\necho \"$@\" >> "+out+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	startCmd(t, filepath.Join(bin, "recvstats"), "-d", "--listen", "127.0.0.1", "-p", port, "--shm-dir", dir,
		"--down-after", "1s", "--on-event", prog)
	netlab.WaitFor(t, 10*time.Second, "the events file", func() error {
		_, err := os.Stat(filepath.Join(dir, "beostat.events"))
		return err
	})
	_, follow := startCmd(t, filepath.Join(bin, "beostat"), "--shm-dir", dir, "--events")
	_, followJSON := startCmd(t, filepath.Join(bin, "beostat"), "--shm-dir", dir, "--events", "--json")
	sender := func() func() {
		stop, _ := startCmd(t, filepath.Join(bin, "sendstats"), "-d", "-a", "127.0.0.1:"+port, "-r", "0.2")
		return stop
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
	netlab.WaitFor(t, 10*time.Second, "beostat --events to print them", func() error {
		got := regexp.MustCompile(`(?m)^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ `).ReplaceAllString(follow.String(), "")
		if want := "0 127.0.0.1 up\n0 127.0.0.1 down\n0 127.0.0.1 up\n"; got != want {
			return fmt.Errorf("beostat --events printed %q, want %q (after the time)", follow.String(), want)
		}
		return nil
	})
	netlab.WaitFor(t, 10*time.Second, "beostat --events --json to print them", func() error {
		if n := strings.Count(followJSON.String(), "\n"); n < 3 {
			return fmt.Errorf("%d lines: %q", n, followJSON.String())
		}
		return nil
	})
	var kinds []string
	for _, l := range strings.Split(strings.TrimSpace(followJSON.String()), "\n") {
		var e struct {
			Time  time.Time `json:"time"`
			Node  int       `json:"node"`
			Addr  string    `json:"addr"`
			Event string    `json:"event"`
		}
		if err := json.Unmarshal([]byte(l), &e); err != nil || e.Time.IsZero() || e.Node != 0 || e.Addr != "127.0.0.1" {
			t.Errorf("beostat --events --json line %q: %+v, %v", l, e, err)
		}
		kinds = append(kinds, e.Event)
	}
	if strings.Join(kinds, " ") != "up down up" {
		t.Errorf("beostat --events --json: events %v, want up down up", kinds)
	}

	// recvstats' own counters, from the table header, by beostat --stats.
	netlab.WaitFor(t, 10*time.Second, "beostat --stats to show the node up", func() error {
		stats, err := exec.Command(filepath.Join(bin, "beostat"), "--shm-dir", dir, "--stats", "--json").Output()
		if err != nil {
			return fmt.Errorf("beostat --stats: %v", err)
		}
		var st struct {
			NodesUp   int               `json:"nodes_up"`
			NodesDown int               `json:"nodes_down"`
			Received  uint64            `json:"received"`
			Stored    uint64            `json:"stored"`
			Drops     map[string]uint64 `json:"drops"`
		}
		if err := json.Unmarshal(stats, &st); err != nil {
			return fmt.Errorf("beostat --stats --json: %q: %v", stats, err)
		}
		if st.NodesUp != 1 || st.NodesDown != 0 || st.Stored < 2 || st.Received < st.Stored || st.Drops["auth"] != 0 || len(st.Drops) != 14 {
			return fmt.Errorf("beostat --stats --json: %s; want 1 node up, none down, samples stored, 14 drop reasons", stats)
		}
		return nil
	})
	text, err := exec.Command(filepath.Join(bin, "beostat"), "--shm-dir", dir, "--stats").Output()
	if err != nil || !strings.Contains(string(text), "\nnodes_up 1\n") || !strings.Contains(string(text), "\ndrops_malformed 0\n") {
		t.Errorf("beostat --stats: %q, %v", text, err)
	}
}
