package statd

import (
	"context"
	"log/slog"
	"os/exec"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hoststat/hoststat/nsm"
)

// Bounds of the HA callout queue.
const (
	haMaxHosts        = 1024             // hosts with callouts queued
	haMaxPerHost      = 8                // callouts queued for one host
	haTimeout         = time.Minute      // one run of the program
	haOverflowLogEach = 10 * time.Second // at most one overflow line per interval
	haDrainOnClose    = 2 * time.Second  // queued callouts get this long at shutdown
	haOutputLimit     = 4096             // bytes of a failed run's output kept for the log
)

// haCallout runs the -H program with nfs-utils' arguments:
//
//	PROG add-client MON_NAME MY_NAME         after a successful SM_MON
//	PROG del-client MON_NAME MY_NAME         after SM_UNMON / each SM_UNMON_ALL match
//	PROG sm-notify  MON_NAME CALLER_IP STATE on every SM_NOTIFY answered
//
// One run at a time, hosts in the order their first callout was queued,
// each host's callouts in order. nfs-utils runs them in the RPC path; here
// queuing never blocks a handler: the queue is bounded per host and in
// hosts, a newer sm-notify for a host replaces one still queued, and what
// does not fit is counted and logged once per interval.
type haCallout struct {
	prog   string
	log    *slog.Logger
	ctx    context.Context
	cancel context.CancelFunc

	mu       sync.Mutex
	closing  bool
	order    []string              // hosts with callouts queued, first come first run
	queued   map[string][][]string // host → callouts (argument lists)
	dropped  uint64                // overflow since the last overflow line
	total    atomic.Uint64         // overflow since start (admin view)
	lastDrop time.Time
	wake     chan struct{}
	done     chan struct{}
}

func newHACallout(prog string, log *slog.Logger) *haCallout {
	if prog == "" {
		return nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	h := &haCallout{prog: prog, log: log, ctx: ctx, cancel: cancel, queued: map[string][][]string{},
		wake: make(chan struct{}, 1), done: make(chan struct{})}
	go h.run()
	return h
}

func (h *haCallout) addClient(monName, myName string) {
	h.enqueue(monName, []string{"add-client", monName, myName})
}

func (h *haCallout) delClient(monName, myName string) {
	h.enqueue(monName, []string{"del-client", monName, myName})
}

func (h *haCallout) smNotify(monName, callerIP string, state int32) {
	h.enqueue(monName, []string{"sm-notify", monName, callerIP, strconv.Itoa(int(state))})
}

// enqueue queues one callout; it never blocks.
func (h *haCallout) enqueue(monName string, args []string) {
	if h == nil {
		return
	}
	host := nsm.CanonicalName(monName)
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closing {
		return
	}
	q, ok := h.queued[host]
	switch {
	case args[0] == "sm-notify" && len(q) > 0 && q[len(q)-1][0] == "sm-notify":
		q[len(q)-1] = args // the newer state is what the HA side needs
	case len(q) > 0 && slices.Equal(q[len(q)-1], args):
		return // already queued
	case !ok && len(h.order) >= haMaxHosts, len(q) >= haMaxPerHost:
		h.overflowLocked(args)
		return
	default:
		if !ok {
			h.order = append(h.order, host)
		}
		h.queued[host] = append(q, args)
	}
	select {
	case h.wake <- struct{}{}:
	default:
	}
}

func (h *haCallout) overflowLocked(args []string) {
	h.dropped++
	h.total.Add(1)
	now := time.Now()
	if now.Sub(h.lastDrop) < haOverflowLogEach {
		return
	}
	h.log.Error("ha-callout queue full: callouts dropped", "prog", nsm.Quote(h.prog), "dropped", h.dropped,
		"latest", args[0], "mon_name", nsm.Quote(args[1]), "bound_hosts", haMaxHosts, "bound_per_host", haMaxPerHost)
	h.dropped, h.lastDrop = 0, now
}

// next takes the first host's callouts; ok is false when there are none.
func (h *haCallout) next() (calls [][]string, ok bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.order) == 0 {
		return nil, false
	}
	host := h.order[0]
	h.order = h.order[1:]
	calls = h.queued[host]
	delete(h.queued, host)
	return calls, true
}

func (h *haCallout) run() {
	defer close(h.done)
	for {
		calls, ok := h.next()
		if !ok {
			h.mu.Lock()
			closing := h.closing
			h.mu.Unlock()
			if closing {
				return
			}
			select {
			case <-h.wake:
			case <-h.ctx.Done():
				return
			}
			continue
		}
		for _, args := range calls {
			if h.ctx.Err() != nil {
				return
			}
			h.exec(args)
		}
	}
}

func (h *haCallout) exec(args []string) {
	ctx, cancel := context.WithTimeout(h.ctx, haTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, h.prog, args...)
	out := &limitedBuffer{max: haOutputLimit}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.WaitDelay = time.Second // a child left holding the output does not hold us
	if err := cmd.Run(); err != nil {
		if h.ctx.Err() == nil {
			h.log.Error("ha-callout failed", "prog", nsm.Quote(h.prog), "event", args[0], "err", err, "output", nsm.Quote(string(out.b)))
		}
		return
	}
	h.log.Debug("ha-callout done", "prog", nsm.Quote(h.prog), "args", args)
}

// droppedTotal counts the callouts that did not fit since start.
func (h *haCallout) droppedTotal() uint64 {
	if h == nil {
		return 0
	}
	return h.total.Load()
}

// close stops taking callouts, gives the queued ones haDrainOnClose to
// run, then kills the one running and returns.
func (h *haCallout) close() {
	if h == nil {
		return
	}
	h.mu.Lock()
	h.closing = true
	h.mu.Unlock()
	select {
	case h.wake <- struct{}{}:
	default:
	}
	select {
	case <-h.done:
	case <-time.After(haDrainOnClose):
		h.cancel()
		<-h.done
	}
	h.cancel()
}

// limitedBuffer keeps the first max bytes written to it.
type limitedBuffer struct {
	b   []byte
	max int
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if room := l.max - len(l.b); room > 0 {
		l.b = append(l.b, p[:min(room, len(p))]...)
	}
	return len(p), nil
}
