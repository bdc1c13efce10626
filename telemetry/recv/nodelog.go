package recv

import (
	"context"
	"log/slog"
	"time"
)

// nodeLogBurst is how many node events a second are logged one line each.
const nodeLogBurst = 50

// What a node event line says, by kind.
type nodeNote int

const (
	noteUp nodeNote = iota
	noteDown
	noteRebooted
	noteForgotten
	noteMoved // warning: the node number came from another address
	nodeNotes
)

var nodeNoteMsg = [nodeNotes]string{"node up", "node down", "node rebooted", "forgot silent node",
	"node number now reported from another address"}

var nodeNoteKey = [nodeNotes]string{"up", "down", "rebooted", "forgotten", "moved"}

// nodeLog logs node events one line each up to nodeLogBurst a second and
// counts the rest, said in one line a second: a cluster that starts at
// once is otherwise 100,000 "node up" lines in its first second, each a
// write to syslog from the receive loop (the kernel dropped datagrams
// meanwhile), and a flood of spoofed moves as many warnings. Every event
// still goes to the events file and --on-event.
type nodeLog struct {
	log   *slog.Logger
	left  int
	over  [nodeNotes]uint64
	until time.Time // the second the budget is for
}

func (l *nodeLog) note(now time.Time, kind nodeNote, args ...any) {
	l.refill(now)
	if l.left > 0 {
		l.left--
		level := slog.LevelInfo
		if kind == noteMoved {
			level = slog.LevelWarn
		}
		l.log.Log(context.Background(), level, nodeNoteMsg[kind], args...)
		return
	}
	l.over[kind]++
}

// refill says what was counted in the last second and starts a new one.
func (l *nodeLog) refill(now time.Time) {
	if now.Before(l.until) {
		return
	}
	l.until = now.Add(time.Second)
	l.left = nodeLogBurst
	if l.over == ([nodeNotes]uint64{}) {
		return // the usual second: nothing over the budget
	}
	var total uint64
	args := make([]any, 0, 2*nodeNotes+2)
	for k, n := range l.over {
		if n > 0 {
			args = append(args, nodeNoteKey[k], n)
			total += n
		}
	}
	level := slog.LevelInfo
	if l.over[noteMoved] > 0 {
		level = slog.LevelWarn
	}
	l.log.Log(context.Background(), level, "more node events than are logged one by one (the events file and --on-event have each)",
		append([]any{"not_logged", total, "per_second", nodeLogBurst}, args...)...)
	l.over = [nodeNotes]uint64{}
}
