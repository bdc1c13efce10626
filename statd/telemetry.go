package statd

import (
	"context"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hoststat/hoststat/liveness"
	"github.com/hoststat/hoststat/nsm"
)

// telemetry ties one identity's shell (the host's own, or an --identity
// served here) to the telemetry table (docs/liveness.md): it keeps the
// daemon's one liveness.Watcher tracking every host that identity
// monitors or owes a notification, under its canonical name in the
// identity's scope, with the addresses the core matches it by (the
// core's own lookups: nothing here resolves), and turns what the watcher
// sees of them into that core's inputs.
type telemetry struct {
	log     *slog.Logger
	w       *liveness.Watcher
	hub     *telemetryHub
	scope   string // prefix of this identity's names in the watcher ("" for the host's own)
	events  chan liveness.Event
	done    chan struct{} // closed once run has stopped: the hub drops this scope's events
	proto   *protocol
	period  time.Duration
	tracked map[string][]netip.Addr // name → addresses last given to Track
	// release forgets a monitored host gone past --gone-after
	// (--release-gone); nil when off. failed holds the hosts whose
	// release failed, logged once.
	release func(name string) error
	failed  map[string]bool
}

// telemetryHub is the daemon's one watcher of the table, shared by every
// identity held here: one scan per period, whatever the number of
// identities served. Each identity tracks its hosts under names of its
// own scope (the identity's name and '/', which no mon_name contains;
// none for the host's own), so a host monitored under two identities is
// two tracked hosts with events of their own; the hub hands each event to
// the telemetry of its scope, with the scope taken off.
type telemetryHub struct {
	w      *liveness.Watcher
	period time.Duration
	mu     sync.Mutex
	subs   map[string]*telemetry // scope → the telemetry following it now
}

func newTelemetryHub(log *slog.Logger, cfg Config) *telemetryHub {
	period := cfg.TelemetryPeriod
	if period <= 0 {
		period = liveness.DefaultPeriod
	}
	return &telemetryHub{w: liveness.NewWatcher(liveness.WatcherConfig{Dir: cfg.Telemetry, Period: cfg.TelemetryPeriod,
		GoneAfter: cfg.GoneAfter, Logger: log}), period: period, subs: map[string]*telemetry{}}
}

// run scans the table every period and routes its events until ctx ends.
func (h *telemetryHub) run(ctx context.Context) {
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		h.w.Run(ctx)
	}()
	defer func() { <-scanned }()
	for {
		select {
		case <-ctx.Done():
			return
		case e := <-h.w.Events():
			h.route(e)
		}
	}
}

// route hands e to the telemetry of its host's scope; an event of a scope
// no longer followed (an identity lost) is dropped. A slow identity holds
// the others back only as far as the watcher's backlog, which coalesces
// per host and never blocks a scan.
func (h *telemetryHub) route(e liveness.Event) {
	scope, name := "", e.HostName()
	if i := strings.IndexByte(name, '/'); i >= 0 {
		scope, name = name[:i+1], name[i+1:]
	}
	h.mu.Lock()
	t := h.subs[scope]
	h.mu.Unlock()
	if t == nil {
		return
	}
	switch ev := e.(type) {
	case liveness.RebootSeen:
		ev.Host = name
		e = ev
	case liveness.Returned:
		ev.Host = name
		e = ev
	}
	select {
	case t.events <- e:
	case <-t.done:
	}
}

// telemetryFor gives the shell p of one identity its telemetry on the
// daemon's hub: the host's own when name is "", else the --identity name.
// With --release-gone a gone host is released by a forget in that
// identity only. ctx is the identity's: it ends when the identity is
// lost. nil without --telemetry.
func (d *daemon) telemetryFor(ctx context.Context, p *protocol, name string, log *slog.Logger) *telemetry {
	if d.hub == nil {
		return nil
	}
	t := &telemetry{log: log, w: d.hub.w, hub: d.hub, events: make(chan liveness.Event, liveness.DefaultBuffer),
		done: make(chan struct{}), proto: p, period: d.hub.period, tracked: map[string][]netip.Addr{}, failed: map[string]bool{}}
	if name != "" {
		t.scope = nsm.CanonicalName(name) + "/"
	}
	if d.cfg.ReleaseGone {
		t.release = func(name string) error {
			_, err := d.forgetIn(ctx, p, name, "gone past --gone-after (--release-gone)")
			return err
		}
	}
	d.hub.mu.Lock()
	d.hub.subs[t.scope] = t
	d.hub.mu.Unlock()
	p.tel = t
	return t
}

// run follows the identity's hosts until ctx ends, then stops following
// them. For an --identity ctx ends the moment the identity is lost:
// nothing read from the table after that acts for it.
func (t *telemetry) run(ctx context.Context) {
	defer t.stop()
	tick := time.NewTicker(t.period)
	defer tick.Stop()
	if ctx.Err() == nil {
		t.follow()
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case e := <-t.events:
			if ctx.Err() == nil { // select picks at random among ready cases
				t.handle(e)
			}
			continue
		}
		if ctx.Err() == nil {
			t.follow()
		}
	}
}

// stop leaves the hub and untracks the identity's hosts.
func (t *telemetry) stop() {
	t.hub.mu.Lock()
	if t.hub.subs[t.scope] == t {
		delete(t.hub.subs, t.scope)
	}
	t.hub.mu.Unlock()
	close(t.done)
	for name := range t.tracked {
		t.w.Untrack(t.scope + name)
	}
}

// follow brings the watcher's hosts in line with the core's monitored
// hosts and the hosts owed a notification (by canonical name; an owed
// host's addresses come from the core's lookups): one Track per new or
// renumbered host, one Untrack per host neither monitored nor owed. Owed
// hosts telemetry knows are never given up by the clock; those gone are
// given up now.
func (t *telemetry) follow() {
	now := t.proto.now()
	t.proto.mu.Lock()
	owed := t.proto.core.Pending()
	want := map[string][]netip.Addr{}
	monitored := t.proto.core.Hosts()
	for _, h := range monitored {
		want[h.Name] = h.Addrs
	}
	var resolve []string
	for _, o := range owed {
		addrs, rd := t.proto.core.Lookup(o.Host, now)
		resolve = append(resolve, rd.Resolve...)
		canon := nsm.CanonicalName(o.Host)
		as := append(slices.Clone(want[canon]), addrs...)
		slices.SortFunc(as, func(a, b netip.Addr) int { return a.Compare(b) })
		want[canon] = slices.Compact(as)
	}
	t.proto.mu.Unlock()
	t.proto.act(nsm.Ready{Resolve: resolve})
	for name, addrs := range want {
		if old, ok := t.tracked[name]; ok && slices.Equal(old, addrs) {
			continue
		}
		// Tied by address, and by the hostname a node reports when the
		// mon_name is a name (short and qualified forms tie, as in the
		// matching rule).
		h := liveness.Host{Name: t.scope + name, Addrs: addrs}
		if _, err := netip.ParseAddr(name); err != nil {
			h.Hostname = name
		}
		if err := t.w.Track(h); err != nil {
			t.log.Warn("host not followed by telemetry", "mon_name", nsm.Quote(name), "err", err)
			continue
		}
		t.tracked[name] = addrs
	}
	for name := range t.tracked {
		if _, ok := want[name]; !ok {
			t.w.Untrack(t.scope + name)
			delete(t.tracked, name)
		}
	}
	if t.release != nil {
		for _, h := range monitored {
			if t.w.Liveness(t.scope+h.Name).State != liveness.Gone {
				continue
			}
			if err := t.release(h.Name); err != nil && !t.failed[h.Name] {
				t.failed[h.Name] = true
				t.log.Error("releasing a gone host failed; will try again", "mon_name", nsm.Quote(h.Name), "err", err)
			} else if err == nil {
				delete(t.failed, h.Name)
			}
		}
	}
	t.feedOwed(owed, now)
}

// feedOwed tells the core what telemetry says of each owed host, in one
// go: known (no give-up by the clock), down (held until seen up; a held
// host up without a Returned, or the table gone blind, is due again);
// those gone are given up.
func (t *telemetry) feedOwed(owed []nsm.OwedInfo, now time.Time) {
	var rd nsm.Ready
	var gone []nsm.OwedInfo
	var since []time.Time
	t.proto.mu.Lock()
	for _, o := range owed {
		l := t.w.Liveness(t.scope + nsm.CanonicalName(o.Host))
		seen, fell := t.proto.core.OwedSeen(o.Host, l.State != liveness.Unknown, t.down(o.Host), now)
		rd.Notify = append(rd.Notify, seen.Notify...)
		if fell {
			t.log.Debug("host down by telemetry: notification waits for its return", "host", nsm.Quote(o.Host), "state", o.State)
		}
		if l.State == liveness.Gone {
			gone, since = append(gone, o), append(since, l.LastHeard)
		}
	}
	t.proto.mu.Unlock()
	t.proto.act(rd)
	for i, o := range gone {
		t.proto.gone(o.Host, since[i])
	}
}

// start is the first look at the table, before the first notification
// goes: the hosts followed, the table scanned, and what it says of each
// owed host given to the core.
func (t *telemetry) start() {
	t.follow()
	t.w.Scan()
	t.feedOwed(t.proto.pendingOwed(), t.proto.now())
}

// down says whether telemetry shows host down (silent or gone): an owed
// notification then waits for the host's return instead of a blind retry.
// While the table cannot be read nobody is down: the schedule runs as
// without telemetry.
func (t *telemetry) down(host string) bool {
	if t.w.Status().Blind != "" {
		return false
	}
	s := t.w.Liveness(t.scope + nsm.CanonicalName(host)).State
	return s == liveness.Silent || s == liveness.Gone
}

func (t *telemetry) handle(e liveness.Event) {
	switch e := e.(type) {
	case liveness.RebootSeen:
		t.proto.rebooted(e)
	case liveness.Returned:
		t.proto.returned(e.Host)
	}
}

// liveness tells what telemetry knows of the host registered as name.
func (t *telemetry) liveness(name string) *HostLiveness {
	if t == nil {
		return nil
	}
	l := t.w.Liveness(t.scope + nsm.CanonicalName(name))
	hl := &HostLiveness{State: l.State.String(), Since: l.LastHeard}
	if l.Node >= 0 && l.BootID != ([16]byte{}) {
		hl.BootID = liveness.FormatBootID(l.BootID)
	}
	return hl
}

// HostLiveness is what telemetry says of a host in the admin status.
type HostLiveness struct {
	State  string    `json:"state"`          // up, silent, gone or unknown
	Since  time.Time `json:"since,omitzero"` // last heard (for silent and gone: when the silence began)
	BootID string    `json:"boot_id,omitempty"`
}

// rebooted takes a reboot telemetry saw as the host's SM_NOTIFY would be
// taken: through the core, serialized with the host's other inputs.
func (p *protocol) rebooted(e liveness.RebootSeen) {
	unlock := p.lockHost(nsm.CanonicalName(e.Host))
	defer unlock()
	p.mu.Lock()
	rd, res := p.core.Rebooted(e.Host, e.NewBoot, p.now())
	p.mu.Unlock()
	args := []any{"source", "reboot seen by telemetry", "mon_name", nsm.Quote(e.Host), "node", e.Node,
		"old_boot", liveness.FormatBootID(e.OldBoot), "new_boot", liveness.FormatBootID(e.NewBoot)}
	switch {
	case res.Already:
		p.log.Info("host rebooted; its SM_NOTIFY told the registrants already", args...)
	case res.Repeated:
	default:
		p.log.Info("host rebooted without SM_NOTIFY: calling its registrants back", append(args, "state", res.State, "registrations", res.Matched)...)
	}
	p.act(rd)
	p.kick()
}

// DefaultEndGracePath is the kernel's file that ends lockd's grace period.
const DefaultEndGracePath = "/proc/fs/lockd/nlm_end_grace"

// graceAfterReboot ends the lock manager's grace period early once every
// host owed a notification after our reboot has acknowledged it (or was
// given up or forgotten), and settle more has passed: a client reclaims
// its locks just after it acknowledges our SM_NOTIFY, and a reclaim after
// the grace period is refused, so the last one is given that time. Waiting
// out the kernel's whole grace period (90 s by default) only delays new
// locks. Armed at start after a reboot; fires once.
type graceAfterReboot struct {
	path   string
	settle time.Duration
	log    *slog.Logger
	armed  atomic.Bool
	ended  *atomic.Bool // set once the grace file was written (the notifier's, for metrics)
}

// DefaultGraceSettle is how long after the last acknowledgement the grace
// period is ended (--grace-settle).
const DefaultGraceSettle = 10 * time.Second

// settled is called whenever the owed set may have become empty.
func (g *graceAfterReboot) settled(owed int) {
	if g == nil || owed > 0 || !g.armed.CompareAndSwap(true, false) {
		return
	}
	g.log.Info("every host owed a notification has it; ending the lock manager's grace period after the reclaims", "in", g.settle)
	time.AfterFunc(g.settle, g.end)
}

func (g *graceAfterReboot) end() {
	written, err := writeExisting(g.path, "Y")
	switch {
	case err != nil:
		g.log.Warn("cannot end the lock manager's grace period", "path", g.path, "err", err)
	case !written:
		g.log.Info("every host owed a notification has it; no lock manager grace file to end", "path", g.path)
	default:
		if g.ended != nil {
			g.ended.Store(true)
		}
		g.log.Info("every host owed a notification has it: lock manager grace period ended", "path", g.path)
	}
}
