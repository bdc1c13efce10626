package liveness

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/hoststat/hoststat/shm"
)

// Defaults of WatcherConfig.
const (
	// DefaultPeriod is how often the table is scanned: sendstats'
	// default sample period, so a reboot is seen within two samples.
	DefaultPeriod = time.Second
	// DefaultBuffer is the capacity of the events channel.
	DefaultBuffer = 64
)

// WatcherConfig tunes a Watcher. Zero values take the defaults.
type WatcherConfig struct {
	Dir       string        // the table's directory; "" for shm.DefaultDir
	Period    time.Duration // between scans; default DefaultPeriod
	GoneAfter time.Duration // default DefaultGoneAfter
	MaxHosts  int           // default DefaultMaxHosts
	Buffer    int           // events channel capacity; default DefaultBuffer
	Logger    *slog.Logger  // default slog.Default()
	Now       func() time.Time
}

// pending is what is still to deliver for one host: at most one
// RebootSeen (a later reboot keeps the first old boot) and one Returned.
type pending struct {
	reboot    RebootSeen
	returned  Returned
	hasReboot bool
	hasReturn bool
}

// Watcher scans the telemetry table every period and feeds a Machine:
// one pass over the table per scan, reading each record's fixed part
// into reused memory (no allocation per node). Its events go out on a
// bounded channel; when the consumer is slow they wait, coalesced per
// host (one RebootSeen and one Returned each), so the scans never block
// and the backlog is bounded by the hosts tracked. Its methods are safe
// for concurrent use.
type Watcher struct {
	cfg    WatcherConfig
	log    *slog.Logger
	events chan Event

	mu      sync.Mutex // the machine and the backlog
	m       *Machine
	pending map[string]*pending
	order   []string // hosts with something pending, oldest first, each once

	scanMu  sync.Mutex // one scan at a time; the fields below
	r       *shm.Reader
	nodes   []int
	scanErr error
	seq     func(yield func(Node) bool)
	blind   string // why the last scan could not read the table; "" when it could
	gen     uint64 // the table's generation and puts at the last scan
	puts    uint64
	counted bool // gen and puts are set
}

// NewWatcher returns a watcher of the table in cfg.Dir tracking no host.
// The table need not exist yet: scans keep trying to open it.
func NewWatcher(cfg WatcherConfig) *Watcher {
	if cfg.Period <= 0 {
		cfg.Period = DefaultPeriod
	}
	if cfg.Buffer <= 0 {
		cfg.Buffer = DefaultBuffer
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	w := &Watcher{cfg: cfg, log: cfg.Logger, events: make(chan Event, cfg.Buffer),
		m: New(Config{GoneAfter: cfg.GoneAfter, MaxHosts: cfg.MaxHosts}), pending: map[string]*pending{}}
	w.seq = w.scanNodes
	return w
}

// Events delivers what the scans see. It is never closed.
func (w *Watcher) Events() <-chan Event { return w.events }

// Track starts tracking h, or updates it (see Machine.Track).
func (w *Watcher) Track(h Host) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.m.Track(h)
}

// Untrack forgets the host named name, with its undelivered events.
func (w *Watcher) Untrack(name string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.m.Untrack(name)
	if _, ok := w.pending[name]; ok {
		delete(w.pending, name)
		for i, n := range w.order {
			if n == name {
				w.order = append(w.order[:i], w.order[i+1:]...)
				break
			}
		}
	}
}

// Answered records that the host named name answered us just now.
func (w *Watcher) Answered(name string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.m.Answered(name, w.cfg.Now())
}

// Liveness tells what is known of the host named name now.
func (w *Watcher) Liveness(name string) Liveness {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.m.Liveness(name, w.cfg.Now())
}

// Status is the watcher at a glance, for an admin view or metrics.
type Status struct {
	Hosts    int       // hosts tracked
	Backlog  int       // hosts with events the consumer has not taken yet
	LastScan time.Time // the last complete or partial scan; zero when none
	// Blind says why the table cannot be read (no table, no recvstats
	// writing it, damaged); empty while scans read it.
	Blind string
}

// Status tells how the watcher is doing.
func (w *Watcher) Status() Status {
	w.scanMu.Lock()
	blind := w.blind
	w.scanMu.Unlock()
	w.mu.Lock()
	defer w.mu.Unlock()
	return Status{Hosts: w.m.Len(), Backlog: len(w.pending), LastScan: w.m.seenUntil, Blind: blind}
}

// Run scans the table every period until ctx is done. A table that is
// missing, damaged or not being written (no recvstats running) is logged
// once and tried again each period; while it cannot be read, no host's
// silence counts towards gone.
func (w *Watcher) Run(ctx context.Context) error {
	t := time.NewTicker(w.cfg.Period)
	defer t.Stop()
	defer w.close()
	for {
		w.Scan()
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func (w *Watcher) close() {
	w.scanMu.Lock()
	defer w.scanMu.Unlock()
	if w.r != nil {
		w.r.Close()
		w.r = nil
	}
}

// Scan reads the table once, feeds the machine and delivers the events.
// It returns why the table could not be read, or why the scan stopped
// part-way (what it read before counts).
func (w *Watcher) Scan() error {
	w.scanMu.Lock()
	defer w.scanMu.Unlock()
	if w.r == nil {
		r, err := shm.OpenReader(w.cfg.Dir)
		if err != nil {
			return w.blinded(err)
		}
		w.r = r
	}
	info := w.r.Info()
	written := w.counted && (info.Generation != w.gen || info.Puts != w.puts)
	w.gen, w.puts, w.counted = info.Generation, info.Puts, true
	if !written && !info.WriterRunning() {
		// A table nobody writes says nothing about the nodes. Records
		// written since the last scan count as a writer: recvstats may
		// run in another pid namespace, where its pid means nothing.
		// Re-open it next time: a new recvstats may have put a new file
		// in place.
		w.r.Close()
		w.r = nil
		return w.blinded(fmt.Errorf("liveness: table %s is not being written (no recvstats running)", info.Path))
	}
	nodes, err := w.r.Nodes(w.nodes[:0])
	w.nodes = nodes
	if err != nil {
		return w.blinded(err)
	}
	if w.blind != "" {
		w.log.Info("telemetry table readable again", "path", info.Path)
		w.blind = ""
	}
	w.scanErr = nil
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, e := range w.m.Observe(w.cfg.Now(), info.DownAfter, w.seq) {
		w.logEvent(e)
		w.queue(e)
	}
	w.flush()
	return w.scanErr
}

// scanNodes yields the nodes of the table listed in w.nodes.
func (w *Watcher) scanNodes(yield func(Node) bool) {
	for _, n := range w.nodes {
		s, ok, err := w.r.Summary(n)
		if errors.Is(err, shm.ErrWriterStuck) {
			continue // only this record is unreadable
		}
		if err != nil {
			w.scanErr = err
			return
		}
		if !ok || s.Repaired {
			continue
		}
		// The hostname is made a string only for nodes a tracked host
		// names (a scan must not allocate per node).
		n := Node{Node: s.Node, Addr: s.Addr.Addr(), BootID: s.BootID, LastSeen: s.LastSeen}
		if hb := s.HostBytes(); w.m.tracksHostname(hb) {
			n.Hostname = string(hb)
		}
		if !yield(n) {
			return
		}
	}
}

// blinded logs the first of a run of failed scans.
func (w *Watcher) blinded(err error) error {
	if msg := err.Error(); msg != w.blind {
		w.log.Warn("telemetry table unavailable; liveness paused", "err", err)
		w.blind = msg
	}
	return err
}

func (w *Watcher) logEvent(e Event) {
	switch e := e.(type) {
	case RebootSeen:
		w.log.Info("reboot seen by telemetry", "host", strconv.Quote(e.Host), "node", e.Node,
			"old_boot", FormatBootID(e.OldBoot), "new_boot", FormatBootID(e.NewBoot))
	case Returned:
		w.log.Info("host up again", "host", strconv.Quote(e.Host), "node", e.Node)
	}
}

// queue adds e to its host's backlog; the caller holds w.mu.
func (w *Watcher) queue(e Event) {
	name := e.HostName()
	p := w.pending[name]
	if p == nil {
		p = &pending{}
		w.pending[name] = p
		w.order = append(w.order, name)
	}
	switch e := e.(type) {
	case RebootSeen:
		if p.hasReboot {
			e.OldBoot = p.reboot.OldBoot // one reboot since the consumer last heard
		}
		p.reboot, p.hasReboot = e, true
	case Returned:
		p.returned, p.hasReturn = e, true
	}
}

// flush moves the backlog into the channel, oldest host first, as far as
// it has room; the caller holds w.mu.
func (w *Watcher) flush() {
	for len(w.order) > 0 {
		name := w.order[0]
		p := w.pending[name]
		if p.hasReboot {
			if !w.offer(p.reboot) {
				return
			}
			p.hasReboot = false
		}
		if p.hasReturn {
			if !w.offer(p.returned) {
				return
			}
			p.hasReturn = false
		}
		delete(w.pending, name)
		w.order[0] = ""
		w.order = w.order[1:]
	}
	w.order = w.order[:0:0] // drop the array: it only grew while backlogged
}

func (w *Watcher) offer(e Event) bool {
	select {
	case w.events <- e:
		return true
	default:
		return false
	}
}

// FormatBootID writes a boot id as the kernel does
// (/proc/sys/kernel/random/boot_id).
func FormatBootID(b [16]byte) string {
	const hex = "0123456789abcdef"
	out := make([]byte, 0, 36)
	for i, c := range b {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			out = append(out, '-')
		}
		out = append(out, hex[c>>4], hex[c&15])
	}
	return string(out)
}
