package statd

import (
	"context"
	"log/slog"
	"net/netip"
	"slices"
	"sync/atomic"
	"time"

	"github.com/hoststat/hoststat/liveness"
	"github.com/hoststat/hoststat/nsm"
)

// telemetry ties rpc.statd to the telemetry table (docs/liveness.md): it
// keeps a liveness.Watcher tracking every monitored host under its
// canonical name, with the addresses the core matches it by (the core's
// own lookups: nothing here resolves), and turns what the watcher sees
// into core inputs.
type telemetry struct {
	log     *slog.Logger
	w       *liveness.Watcher
	proto   *protocol
	period  time.Duration
	tracked map[string][]netip.Addr // name → addresses last given to Track
}

func newTelemetry(log *slog.Logger, cfg Config, proto *protocol) *telemetry {
	w := liveness.NewWatcher(liveness.WatcherConfig{Dir: cfg.Telemetry, Period: cfg.TelemetryPeriod,
		GoneAfter: cfg.GoneAfter, Logger: log})
	period := cfg.TelemetryPeriod
	if period <= 0 {
		period = liveness.DefaultPeriod
	}
	return &telemetry{log: log, w: w, proto: proto, period: period, tracked: map[string][]netip.Addr{}}
}

// run scans the table and follows the monitored hosts until ctx ends.
func (t *telemetry) run(ctx context.Context) {
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		t.w.Run(ctx)
	}()
	defer func() { <-scanned }()
	tick := time.NewTicker(t.period)
	defer tick.Stop()
	t.follow()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			t.follow()
		case e := <-t.w.Events():
			t.handle(e)
		}
	}
}

// follow brings the watcher's hosts in line with the core's: one Track
// per new or renumbered host, one Untrack per host no longer monitored.
func (t *telemetry) follow() {
	t.proto.mu.Lock()
	hosts := t.proto.core.Hosts()
	t.proto.mu.Unlock()
	seen := make(map[string]bool, len(hosts))
	for _, h := range hosts {
		seen[h.Name] = true
		if old, ok := t.tracked[h.Name]; ok && slices.Equal(old, h.Addrs) {
			continue
		}
		if err := t.w.Track(liveness.Host{Name: h.Name, Addrs: h.Addrs}); err != nil {
			t.log.Warn("host not followed by telemetry", "mon_name", nsm.Quote(h.Name), "err", err)
			continue
		}
		t.tracked[h.Name] = h.Addrs
	}
	for name := range t.tracked {
		if !seen[name] {
			t.w.Untrack(name)
			delete(t.tracked, name)
		}
	}
}

func (t *telemetry) handle(e liveness.Event) {
	switch e := e.(type) {
	case liveness.RebootSeen:
		t.proto.rebooted(e)
	case liveness.Returned:
		// Owed notifications are not tied to telemetry yet.
	}
}

// liveness tells what telemetry knows of the host registered as name.
func (t *telemetry) liveness(name string) *HostLiveness {
	if t == nil {
		return nil
	}
	l := t.w.Liveness(nsm.CanonicalName(name))
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
// given up or forgotten): nobody is left who could reclaim locks, so
// waiting out the kernel's grace period (90 s by default) only delays new
// locks. Armed at start after a reboot; fires once.
type graceAfterReboot struct {
	path  string
	log   *slog.Logger
	armed atomic.Bool
}

// settled is called whenever the owed set may have become empty.
func (g *graceAfterReboot) settled(owed int) {
	if g == nil || owed > 0 || !g.armed.CompareAndSwap(true, false) {
		return
	}
	written, err := writeExisting(g.path, "Y")
	switch {
	case err != nil:
		g.log.Warn("cannot end the lock manager's grace period", "path", g.path, "err", err)
	case !written:
		g.log.Info("every host owed a notification has it; no lock manager grace file to end", "path", g.path)
	default:
		g.log.Info("every host owed a notification has it: lock manager grace period ended", "path", g.path)
	}
}
