package recv

import (
	"context"
	"errors"
	"log/slog"
	"os/exec"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Defaults of --on-event.
const (
	// DefaultHookQueue bounds the nodes with an event waiting for the
	// program: beyond it, new events are dropped and counted.
	DefaultHookQueue = 4096
	// DefaultHookTimeout is how long one run of the program may take
	// before it is sent SIGTERM (and SIGKILL a second later).
	DefaultHookTimeout = 30 * time.Second
	// hookStopWait is how long Close waits for a running program after
	// terminating it.
	hookStopWait = 2 * time.Second
)

// HookConfig describes the program run for each event.
type HookConfig struct {
	Program string        // run as Program NODE ADDR EVENT
	Queue   int           // nodes with a waiting event; default DefaultHookQueue
	Timeout time.Duration // per run; default DefaultHookTimeout
	Logger  *slog.Logger
}

// Hook runs a program for node events, one run at a time, off the
// receive path: Post never blocks. Waiting events are coalesced per node
// (a node's latest event replaces the one still waiting, in its place in
// the queue), so the queue holds at most one event a node and at most
// Queue nodes; an event for another node when it is full is dropped and
// counted (Overflow).
type Hook struct {
	cfg HookConfig
	log *slog.Logger

	mu      sync.Mutex
	waiting map[int]Event // by node
	order   []int         // nodes in the order their first waiting event came
	wake    chan struct{}

	overflow  atomic.Uint64
	ran       atomic.Uint64
	failed    atomic.Uint64
	coalesced atomic.Uint64

	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}
}

// StartHook starts the goroutine that runs the program.
func StartHook(cfg HookConfig) *Hook {
	if cfg.Queue <= 0 {
		cfg.Queue = DefaultHookQueue
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultHookTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	h := &Hook{cfg: cfg, log: cfg.Logger, waiting: map[int]Event{}, wake: make(chan struct{}, 1), done: make(chan struct{})}
	h.ctx, h.cancel = context.WithCancel(context.Background())
	go h.loop()
	return h
}

// Post queues e for the program without waiting.
func (h *Hook) Post(e Event) {
	h.mu.Lock()
	if _, ok := h.waiting[e.Node]; ok {
		h.waiting[e.Node] = e
		h.mu.Unlock()
		h.coalesced.Add(1)
		return
	}
	if len(h.order) >= h.cfg.Queue {
		h.mu.Unlock()
		h.overflow.Add(1)
		return
	}
	h.waiting[e.Node] = e
	h.order = append(h.order, e.Node)
	h.mu.Unlock()
	select {
	case h.wake <- struct{}{}:
	default:
	}
}

// Overflow counts the events dropped because the queue was full.
func (h *Hook) Overflow() uint64 { return h.overflow.Load() }

// Ran counts the runs of the program; Failed those that failed or timed out.
func (h *Hook) Ran() uint64    { return h.ran.Load() }
func (h *Hook) Failed() uint64 { return h.failed.Load() }

// Coalesced counts the events that replaced one still waiting for the
// same node.
func (h *Hook) Coalesced() uint64 { return h.coalesced.Load() }

func (h *Hook) next() (Event, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.order) == 0 {
		return Event{}, false
	}
	n := h.order[0]
	h.order = h.order[1:]
	if len(h.order) == 0 {
		h.order = nil // let the backing array go after a burst
	}
	e := h.waiting[n]
	delete(h.waiting, n)
	return e, true
}

func (h *Hook) loop() {
	defer close(h.done)
	for {
		e, ok := h.next()
		if !ok {
			select {
			case <-h.ctx.Done():
				return
			case <-h.wake:
				continue
			}
		}
		if h.ctx.Err() != nil {
			return
		}
		h.run(e)
	}
}

func (h *Hook) run(e Event) {
	ctx, cancel := context.WithTimeout(h.ctx, h.cfg.Timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, h.cfg.Program, strconv.Itoa(e.Node), e.Addr.Addr().Unmap().String(), e.Kind.String())
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // its children are stopped with it
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM) }
	cmd.WaitDelay = time.Second // then SIGKILL, and stop waiting on its pipes
	var out headWriter
	cmd.Stdout, cmd.Stderr = &out, &out
	h.ran.Add(1)
	err := cmd.Run()
	if err != nil {
		h.failed.Add(1)
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			err = errors.Join(err, errors.New("timed out"))
		}
		h.log.Warn("event program failed", "program", h.cfg.Program, "node", e.Node, "event", e.Kind.String(),
			"err", err, "output", string(out.b))
	}
}

// headWriter keeps the first bytes a program prints, for the log: memory
// does not follow what the program prints.
type headWriter struct{ b []byte }

func (w *headWriter) Write(p []byte) (int, error) {
	const keep = 512
	if room := keep - len(w.b); room > 0 {
		w.b = append(w.b, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

// Close stops running events: the running program, if any, is sent
// SIGTERM and waited for at most about two seconds. Waiting events are
// dropped.
func (h *Hook) Close() {
	h.cancel()
	select {
	case <-h.done:
	case <-time.After(hookStopWait):
		h.log.Warn("event program still running at stop: left behind", "program", h.cfg.Program)
	}
}
