package statd

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hoststat/hoststat/nsm"
	"github.com/hoststat/hoststat/nsm/identity"
)

// ForgetSummary is the answer to statdctl forget: the totals, and with
// --identity identities each identity's part.
type ForgetSummary struct {
	Host          string `json:"host"`
	Released      int    `json:"released"`              // registrants called back
	Registrations int    `json:"registrations_dropped"` // durably
	Owed          int    `json:"owed_dropped"`          // notifications no longer owed, durably
	// Identities is what was dropped under each identity asked: the
	// host's own first (Own), then each --identity served here by name.
	// Absent for a statd with no --identity.
	Identities []ForgetPart `json:"identities,omitempty"`
}

// ForgetPart is one identity's share of a forget.
type ForgetPart struct {
	Identity      string `json:"identity"`
	Own           bool   `json:"own,omitempty"` // the host's own identity (--name)
	Released      int    `json:"released"`
	Registrations int    `json:"registrations_dropped"`
	Owed          int    `json:"owed_dropped"`
}

// forget releases and drops host in the identities asked: only is ""
// for every identity held here (the host's own and each --identity
// served now), else the one it names (the host's own name, or an
// --identity, which must be served here). Identities are done one after
// the other; the first failure stops it, naming the identity (those done
// before are durable, and a second forget finds nothing left in them).
func (d *daemon) forget(ctx context.Context, host, only, why string) (ForgetSummary, error) {
	type target struct {
		name string
		own  bool
		p    *protocol
	}
	var targets []target
	own := nsm.CanonicalName(d.cfg.Name)
	switch n := nsm.CanonicalName(only); {
	case only == "":
		targets = append(targets, target{d.cfg.Name, true, d.proto})
		for _, name := range d.ids.list() {
			if p, _ := d.ids.route(name); p != nil {
				targets = append(targets, target{name, false, p})
			}
		}
	case n == own:
		targets = append(targets, target{d.cfg.Name, true, d.proto})
	default:
		p, ours := d.ids.route(n)
		if !ours {
			return ForgetSummary{Host: host}, fmt.Errorf("forget: %s is neither this statd's name (%s) nor one of its --identity identities", nsm.Quote(only), nsm.Quote(d.cfg.Name))
		}
		if p == nil {
			return ForgetSummary{Host: host}, d.notServed(ctx, n)
		}
		targets = append(targets, target{n, false, p})
	}
	sum := ForgetSummary{Host: host}
	for _, tg := range targets {
		part, err := d.forgetIn(ctx, tg.p, host, why)
		sum.Released += part.Released
		sum.Registrations += part.Registrations
		sum.Owed += part.Owed
		if d.ids != nil || only != "" {
			part.Identity, part.Own = tg.name, tg.own
			sum.Identities = append(sum.Identities, part)
		}
		if err != nil {
			if d.ids != nil {
				err = fmt.Errorf("identity %s: %w", nsm.Quote(tg.name), err)
			}
			return sum, err
		}
	}
	return sum, nil
}

// notServed is the error for a forget limited to an identity another
// statd (or none) serves: who holds it, as etcd says.
func (d *daemon) notServed(ctx context.Context, name string) error {
	e, ok := d.store.(*etcdStorage)
	if !ok {
		return fmt.Errorf("forget: identity %s is not served here", nsm.Quote(name))
	}
	hs, err := identity.Holdings(ctx, e.cli, d.cfg.Etcd.Prefix)
	if err != nil {
		return fmt.Errorf("forget: identity %s is not served here (who serves it: %w)", nsm.Quote(name), err)
	}
	for _, h := range hs {
		if h.Name == name && h.Holder != "" {
			return fmt.Errorf("forget: identity %s is not served here: %s serves it (run statdctl forget there)", nsm.Quote(name), nsm.Quote(h.Holder))
		}
	}
	return fmt.Errorf("forget: identity %s is not served here, nor by any statd now", nsm.Quote(name))
}

// errNotServing refuses a forget in an identity lost meanwhile.
var errNotServing = errors.New("identity no longer served here")

// forgetIn releases host's locks and drops what identity p keeps of it:
// each of its registrants is called back with a new state (the release,
// which lock managers act on by dropping the host's locks), then its
// registrations and owed notifications are removed from the store (for
// an --identity, through the fenced store: only while still its owner),
// then from memory. A release that fails leaves everything in place, to
// try again.
func (d *daemon) forgetIn(ctx context.Context, p *protocol, host, why string) (ForgetPart, error) {
	var sum ForgetPart
	unlock := p.lockAll()
	if p.ctx != nil && p.ctx.Err() != nil {
		unlock()
		return sum, errNotServing // fencing: nothing is called back for an identity lost
	}
	p.mu.Lock()
	release, remove := p.core.Forget(host, p.now())
	p.mu.Unlock()
	for _, cb := range release {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		if p.ctx != nil {
			cctx, cancel = contextBoth(cctx, cancel, p.ctx)
		}
		err := p.call(cctx, cb)
		cancel()
		if err != nil {
			unlock()
			return sum, fmt.Errorf("releasing %s: callback to program %d failed, nothing dropped: %w", nsm.Quote(cb.MonName), cb.MyID.Prog, err)
		}
		sum.Released++
		p.log.Info("released host's locks: called registrant back", "mon_name", nsm.Quote(cb.MonName), "state", cb.State,
			"my_prog", cb.MyID.Prog, "my_vers", cb.MyID.Vers, "my_proc", cb.MyID.Proc, "source", why)
	}
	err := p.commit(ctx, remove)
	unlock()
	if err != nil {
		return sum, fmt.Errorf("released, but dropping the registrations failed: %w", err)
	}
	for _, ch := range remove {
		if ch.Kind == nsm.ChangeOwed {
			sum.Owed++
			p.passEnded(ch.Owed.Host, nsm.NotInFlight)
		} else {
			sum.Registrations++
		}
	}
	p.owedChanged()
	p.log.Warn("forgot host", "host", nsm.Quote(host), "released", sum.Released, "registrations_dropped", sum.Registrations,
		"owed_dropped", sum.Owed, "source", why)
	return sum, nil
}

// contextBoth is ctx (with its cancel) also ended when other ends.
func contextBoth(ctx context.Context, cancel context.CancelFunc, other context.Context) (context.Context, context.CancelFunc) {
	ctx, stop := context.WithCancel(ctx)
	unhook := context.AfterFunc(other, stop)
	return ctx, func() { unhook(); stop(); cancel() }
}

// Forget asks the daemon whose state directory is dir to forget host
// (statdctl forget): in every identity held there when only is "", else
// in the identity only names.
func Forget(ctx context.Context, dir, host, only string) (ForgetSummary, error) {
	var sum ForgetSummary
	err := askAdmin(ctx, dir, adminRequest{Op: AdminForget, Host: host, Identity: only}, &sum)
	return sum, err
}
