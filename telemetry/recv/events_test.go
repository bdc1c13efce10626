package recv

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hoststat/hoststat/internal/netlab"
)

// quiet discards the hook's warnings about the runs the tests fail on purpose.
var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func eventLines(ev []Event) []string {
	var out []string
	for _, e := range ev {
		out = append(out, fmt.Sprintf("%d %s %s", e.Node, e.Addr.Addr(), e.Kind))
	}
	return out
}

func expectEvents(t *testing.T, tb *Table, what string, want ...string) {
	t.Helper()
	got := eventLines(tb.Events())
	if strings.Join(got, "; ") != strings.Join(want, "; ") {
		t.Errorf("%s: events %q, want %q", what, got, want)
	}
}

// TestTableEvents runs a node's life on a fake clock: it appears (up),
// falls silent past DownAfter (down, once), comes back (up), reboots
// (reboot), and is forgotten after ForgetAfter (forgotten).
func TestTableEvents(t *testing.T) {
	tb := NewTable(TableConfig{DownAfter: 5 * time.Second, ForgetAfter: time.Minute})
	now := t0
	mustReceive(t, tb, now, st("10.0.0.1:900", 1, 1, 1))
	expectEvents(t, tb, "first packet", "1 10.0.0.1 up")
	for i := uint32(2); i < 5; i++ {
		now = now.Add(time.Second)
		mustReceive(t, tb, now, st("10.0.0.1:900", 1, i, 1))
		tb.Expire(now)
	}
	expectEvents(t, tb, "steady packets")
	now = now.Add(4 * time.Second)
	tb.Expire(now)
	expectEvents(t, tb, "4 s of silence (down after 5 s)")
	now = now.Add(time.Second)
	tb.Expire(now)
	expectEvents(t, tb, "5 s of silence", "1 10.0.0.1 down")
	if tb.Down() != 1 || tb.Nodes() != 1 {
		t.Errorf("down %d of %d nodes, want 1 of 1", tb.Down(), tb.Nodes())
	}
	now = now.Add(10 * time.Second)
	tb.Expire(now)
	expectEvents(t, tb, "still silent: down is said once")
	now = now.Add(time.Second)
	mustReceive(t, tb, now, st("10.0.0.1:900", 1, 5, 1))
	expectEvents(t, tb, "back", "1 10.0.0.1 up")
	if tb.Down() != 0 {
		t.Errorf("down %d after the node came back", tb.Down())
	}
	now = now.Add(time.Second)
	mustReceive(t, tb, now, st("10.0.0.1:900", 1, 1, 2))
	expectEvents(t, tb, "a new boot while up", "1 10.0.0.1 reboot")
	now = now.Add(10 * time.Second)
	tb.Expire(now)
	expectEvents(t, tb, "silent again", "1 10.0.0.1 down")
	now = now.Add(10 * time.Second)
	mustReceive(t, tb, now, st("10.0.0.1:900", 1, 1, 3))
	expectEvents(t, tb, "back after a reboot while down", "1 10.0.0.1 up", "1 10.0.0.1 reboot")
	now = now.Add(61 * time.Second)
	if gone := tb.Expire(now); len(gone) != 1 || gone[0] != 1 {
		t.Errorf("Expire after ForgetAfter: %v, want [1]", gone)
	}
	expectEvents(t, tb, "a minute silent", "1 10.0.0.1 forgotten")
	if tb.Down() != 0 || tb.Nodes() != 0 {
		t.Errorf("down %d of %d nodes after forgetting the only one", tb.Down(), tb.Nodes())
	}
	mustReceive(t, tb, now.Add(time.Second), st("10.0.0.1:900", 1, 1, 4))
	expectEvents(t, tb, "a forgotten node sends again", "1 10.0.0.1 up")
}

// TestTableEventsRestored: a node restored from the last run is taken as
// up; it is said down if it stays silent after the first Tick, and
// answering in time is no event.
func TestTableEventsRestored(t *testing.T) {
	restored := []Assignment{{Node: 1, Addr: ap("10.0.0.1:900")}, {Node: 2, Addr: ap("10.0.0.2:900")}}
	tb := NewTable(TableConfig{Restored: restored, DownAfter: 5 * time.Second})
	tb.Tick(t0)
	tb.Expire(t0)
	mustReceive(t, tb, t0.Add(time.Second), st("10.0.0.1:900", 1, 1, 1))
	tb.Expire(t0.Add(5 * time.Second))
	expectEvents(t, tb, "restored nodes", "2 10.0.0.2 down")
}

// TestHookCoalescesAndBounds runs a real program, slow on purpose, and
// posts a flood of events for more nodes than the queue holds: Post never
// waits, a node's latest waiting event replaces its earlier one, what
// does not fit is counted, and the program sees each node's latest event
// one run at a time.
func TestHookCoalescesAndBounds(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "events")
	gate := filepath.Join(dir, "gate")
	prog := filepath.Join(dir, "hook")
	// The first run waits for the gate, so the queue fills behind it.
	script := "#!/bin/sh\nwhile [ ! -e " + gate + " ]; do sleep 0.01; done\necho \"$@\" >> " + out + "\n"
	if err := os.WriteFile(prog, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	h := StartHook(HookConfig{Program: prog, Queue: 4, Timeout: 10 * time.Second, Logger: quiet})
	defer h.Close()
	ev := func(n int, k EventKind) Event { return Event{Time: t0, Node: n, Addr: ap("10.0.0.9:1"), Kind: k} }
	h.Post(ev(0, EventUp))
	netlab.WaitFor(t, 10*time.Second, "the first run to start", func() error {
		if h.Ran() == 0 {
			return fmt.Errorf("not yet")
		}
		return nil
	})
	for i := 0; i < 1000; i++ {
		h.Post(ev(1+i%8, EventDown)) // 8 nodes, 4 fit
	}
	h.Post(ev(1, EventReboot)) // replaces node 1's waiting "down"
	if got := h.Overflow(); got != 500 {
		t.Errorf("overflow %d, want 500 (4 of 8 nodes fit, 125 events each)", got)
	}
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	want := "0 10.0.0.9 up\n1 10.0.0.9 reboot\n2 10.0.0.9 down\n3 10.0.0.9 down\n4 10.0.0.9 down\n"
	netlab.WaitFor(t, 20*time.Second, "the program's runs", func() error {
		b, _ := os.ReadFile(out)
		if string(b) != want {
			return fmt.Errorf("program saw %q, want %q", b, want)
		}
		return nil
	})
	if h.Ran() != 5 || h.Failed() != 0 {
		t.Errorf("ran %d failed %d, want 5 and 0", h.Ran(), h.Failed())
	}
}

// TestHookCloseStopsSlowProgram: Close terminates a program that would
// run for a minute and returns within a couple of seconds.
func TestHookCloseStopsSlowProgram(t *testing.T) {
	dir := t.TempDir()
	prog := filepath.Join(dir, "hook")
	started := filepath.Join(dir, "started")
	if err := os.WriteFile(prog, []byte("#!/bin/sh\ntouch "+started+"\nexec sleep 60\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	h := StartHook(HookConfig{Program: prog, Logger: quiet})
	h.Post(Event{Node: 1, Addr: ap("10.0.0.9:1"), Kind: EventDown})
	netlab.WaitFor(t, 10*time.Second, "the program to start", func() error {
		_, err := os.Stat(started)
		return err
	})
	begin := time.Now()
	h.Close()
	if d := time.Since(begin); d > 3*time.Second {
		t.Errorf("Close waited %v for the program", d)
	}
	if h.Failed() != 1 {
		t.Errorf("failed %d, want 1 (terminated)", h.Failed())
	}
}
