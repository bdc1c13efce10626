package recv_test

import (
	"os"
	"path/filepath"
	"testing"
	"time"

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
	waitFor(t, 10*time.Second, "all 201 samples stored", func() bool { return srv.Stored() == 201 })
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
