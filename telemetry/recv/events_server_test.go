package recv_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hoststat/hoststat/shm"
	"github.com/hoststat/hoststat/telemetry/recv"
)

// TestSlowEventProgramDoesNotDelayIngest: with --on-event's program stuck
// in its first run, 200 nodes appearing at once (200 "up" events) are all
// stored while it runs, and the events beyond the queue are counted.
func TestSlowEventProgramDoesNotDelayIngest(t *testing.T) {
	dir := t.TempDir()
	started := filepath.Join(dir, "started")
	prog := filepath.Join(dir, "hook")
	if err := os.WriteFile(prog, []byte("#!/bin/sh\ntouch "+started+"\nexec sleep 60\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	srv, _, _ := startServer(t, recv.Config{Key: testKey, Hook: recv.HookConfig{Program: prog, Queue: 4}})
	sendAs(t, "127.0.0.1", srv.Addr(), encode(t, testKey, 0, 1, testSample(1)))
	waitFor(t, 10*time.Second, "the program to start on node 0's event", func() bool {
		_, err := os.Stat(started)
		return err == nil
	})
	var bufs [][]byte
	for n := uint32(1); n <= 200; n++ {
		bufs = append(bufs, encode(t, testKey, n, 1, testSample(byte(n))))
	}
	sendAs(t, "127.0.0.1", srv.Addr(), bufs...)
	// Stored counts a batch before its events are dispatched: wait for both.
	waitFor(t, 10*time.Second, "all 201 samples stored and their events dispatched", func() bool {
		return srv.Stored() == 201 && srv.Events() == 201
	})
	if srv.EventRuns() != 1 {
		t.Errorf("program runs %d, want 1 (still in its first)", srv.EventRuns())
	}
	if got := srv.EventOverflow(); got != 196 {
		t.Errorf("overflow %d, want 196 (200 events, 4 queued)", got)
	}
	if got := srv.Events(); got != 201 {
		t.Errorf("events %d, want 201 ups", got)
	}
}

// TestCountersInHeader: what recvstats counts (datagrams, samples
// stored, drops by reason, nodes up and down) is in the table's header
// for ordinary readers, under the reason names recvstats logs.
func TestCountersInHeader(t *testing.T) {
	srv, dir, _ := startServer(t, recv.Config{Key: testKey, DownAfter: 3 * time.Second})
	sendAs(t, "127.0.0.1", srv.Addr(), encode(t, testKey, 1, 1, testSample(1)), encode(t, testKey, 2, 1, testSample(2)))
	sendAs(t, "127.0.0.1", srv.Addr(), encode(t, nil, 3, 1, testSample(3))) // unsigned: auth
	r := openReader(t, dir)
	want := map[string]uint64{"auth": 1}
	waitFor(t, 10*time.Second, "the counters in the header", func() bool {
		c := r.Info().Counters
		for i, name := range shm.DropReasons {
			if c.Drops[i] != want[name] {
				return false
			}
		}
		return c.Received == 3 && c.Stored == 2 && c.NodesUp == 2 && c.NodesDown == 0
	})
	if c := r.Info().Counters; c.Received != srv.Received() || c.Stored != srv.Stored() {
		t.Errorf("header %+v, server received %d stored %d", c, srv.Received(), srv.Stored())
	}
	// Node 2 keeps sending; node 1 falls silent and is counted down.
	for seq := uint32(2); ; seq++ {
		sendAs(t, "127.0.0.1", srv.Addr(), encode(t, testKey, 2, seq, testSample(2)))
		if c := r.Info().Counters; c.NodesUp == 1 && c.NodesDown == 1 {
			break
		}
		if seq > 200 {
			t.Fatalf("node 1 silent for 20 s: counters %+v, want 1 up, 1 down", r.Info().Counters)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestDropReasonNames: the header's drop counters are recvstats' reasons,
// in order, less the kernel's (a counter of its own).
func TestDropReasonNames(t *testing.T) {
	var got []string
	for r := recv.DropVersion; r <= recv.DropOther; r++ {
		if r != recv.DropKernel {
			got = append(got, r.String())
		}
	}
	if strings.Join(got, " ") != strings.Join(shm.DropReasons[:], " ") {
		t.Errorf("recv reasons %v, shm.DropReasons %v", got, shm.DropReasons)
	}
}
