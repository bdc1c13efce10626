package statd

import (
	"context"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hoststat/hoststat/nsm"
)

// Resolver looks host names up; net.DefaultResolver is one. Tests inject
// their own, or a net.Resolver pointed at their own DNS server.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// Bounds of the shell around nsm.Core.
const (
	resolveWorkers = 16              // lookups running at once (the core bounds those asked for)
	resolveTimeout = 5 * time.Second // one lookup
	statLookups    = 8               // SM_STAT callers waiting for a lookup at once
	statTimeout    = 2 * time.Second // how long one of them waits
	tickEvery      = 30 * time.Second
)

// protocol is the I/O shell of nsm.Core: it serializes inputs, persists
// each Ready's changes through the store's group commit before applying
// them to the core and acting, and runs the callbacks and lookups the core
// asks for on goroutines whose number the core bounds.
//
// Locking: mutations of one host hold that host's lock from plan to
// apply, so an SM_MON's plan cannot go stale while its write is under way
// and different hosts still share a commit; SM_UNMON, SM_UNMON_ALL and
// lookups that remove hold every host's lock. mu guards the core itself and
// is never held across I/O.
type protocol struct {
	log      *slog.Logger
	store    nsm.Storage
	resolver Resolver
	call     func(context.Context, nsm.Callback) error
	now      func() time.Time

	all    sync.RWMutex
	hostMu sync.Mutex
	hosts  map[string]*hostLock

	mu   sync.Mutex
	core *nsm.Core

	owed  *owedShell
	state atomic.Int32 // the core's state number, for the handlers' replies
	// tel follows this identity's hosts in the telemetry table; nil
	// without --telemetry. Set before the shell is served.
	tel *telemetry

	ctx        context.Context
	wake       chan struct{}
	resolveSem chan struct{}
	statSem    chan struct{}
	wg         sync.WaitGroup

	storeErrors, delivered, failed atomic.Uint64
	calls, callErrors              atomic.Uint64 // callback attempts, and those that failed (metrics)
}

func newProtocol(log *slog.Logger, store nsm.Storage, core *nsm.Core, resolver Resolver, call func(context.Context, nsm.Callback) error, peer *peerNotifier) *protocol {
	p := &protocol{log: log, store: store, core: core, resolver: resolver, call: call, now: time.Now,
		hosts: map[string]*hostLock{}, wake: make(chan struct{}, 1), resolveSem: make(chan struct{}, resolveWorkers),
		statSem: make(chan struct{}, statLookups), owed: &owedShell{peer: peer}}
	p.state.Store(core.State())
	return p
}

type hostLock struct {
	mu   sync.Mutex
	refs int
}

// lockHost serializes mutations of one host's registrations. It is per
// canonical name, never shared by two hosts: a shared lock would cap how
// many SM_MONs one fsync can carry.
func (p *protocol) lockHost(canon string) func() {
	p.all.RLock()
	p.hostMu.Lock()
	l := p.hosts[canon]
	if l == nil {
		l = &hostLock{}
		p.hosts[canon] = l
	}
	l.refs++
	p.hostMu.Unlock()
	l.mu.Lock()
	return func() {
		l.mu.Unlock()
		p.hostMu.Lock()
		if l.refs--; l.refs == 0 {
			delete(p.hosts, canon)
		}
		p.hostMu.Unlock()
		p.all.RUnlock()
	}
}

func (p *protocol) lockAll() func() {
	p.all.Lock()
	return p.all.Unlock
}

// commit persists changes and then applies them to the core: memory never
// holds what the disk does not. A commit that removes a registration holds
// the core across the write, so no callback is started from a registration
// whose removal is on disk (an SM_NOTIFY arriving meanwhile waits one
// fsync); other changes need not, since nothing is called back or
// announced before they are acknowledged.
func (p *protocol) commit(ctx context.Context, changes []nsm.Change) error {
	if len(changes) == 0 {
		return nil
	}
	removes := slices.ContainsFunc(changes, func(c nsm.Change) bool { return c.Kind == nsm.ChangeReg && c.Remove || c.Kind == nsm.ChangeDropRegs })
	if removes {
		p.mu.Lock()
		defer p.mu.Unlock()
	}
	if err := p.store.Apply(ctx, changes); err != nil {
		p.storeErrors.Add(1)
		return err
	}
	if !removes {
		p.mu.Lock()
		defer p.mu.Unlock()
	}
	p.core.Apply(changes)
	p.state.Store(p.core.State())
	return nil
}

// mon records a registration; it returns once it is durable, saying
// whether anything changed (a repeated SM_MON changes nothing). A refusal
// by the core (a callback program not allowed) is an error wrapping
// nsm.ErrProgramNotAllowed.
func (p *protocol) mon(ctx context.Context, r nsm.Registration) (bool, error) {
	unlock := p.lockHost(nsm.CanonicalName(r.MonName))
	defer unlock()
	p.mu.Lock()
	rd, err := p.core.Mon(r)
	p.mu.Unlock()
	if err != nil {
		return false, err
	}
	if err := p.commit(ctx, rd.Persist); err != nil {
		return false, err
	}
	if _, err := netip.ParseAddr(r.MonName); err != nil && len(rd.Persist) > 0 {
		p.kick() // a new name is looked up in the background
	}
	return len(rd.Persist) > 0, nil
}

// unmon removes my's registrations of the hosts name matches; hosts that
// match only once name is looked up go when the lookup completes.
func (p *protocol) unmon(ctx context.Context, name string, my nsm.MyID) (bool, error) {
	unlock := p.lockAll()
	p.mu.Lock()
	rd, found := p.core.Unmon(name, my, p.now())
	p.mu.Unlock()
	err := p.commit(ctx, rd.Persist)
	unlock()
	p.act(nsm.Ready{Resolve: rd.Resolve})
	return found, err
}

func (p *protocol) unmonAll(ctx context.Context, my nsm.MyID) ([]string, error) {
	unlock := p.lockAll()
	defer unlock()
	p.mu.Lock()
	rd, hosts := p.core.UnmonAll(my)
	p.mu.Unlock()
	if err := p.commit(ctx, rd.Persist); err != nil {
		return nil, err
	}
	return hosts, nil
}

// notify feeds an SM_NOTIFY to the core and starts what it asks for.
func (p *protocol) notify(name string, state int32, sender netip.Addr) nsm.NotifyResult {
	p.mu.Lock()
	rd, res := p.core.Notify(name, state, sender, p.now())
	p.mu.Unlock()
	p.act(rd)
	if res.Matched > 0 {
		p.kick() // a callback may be due later than now: the next wake-up may have moved
	}
	return res
}

// resolves answers SM_STAT's question, does name resolve: from the core's
// cache when it knows, else by a lookup of at most statTimeout if one of
// statLookups slots is free, else no.
func (p *protocol) resolves(ctx context.Context, name string) bool {
	p.mu.Lock()
	ok, known := p.core.Cached(name, p.now())
	p.mu.Unlock()
	if known {
		return ok
	}
	select {
	case p.statSem <- struct{}{}:
		defer func() { <-p.statSem }()
	default:
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, statTimeout)
	defer cancel()
	as, err := p.resolver.LookupNetIP(ctx, "ip", name)
	return err == nil && len(as) > 0
}

func (p *protocol) kick() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// act starts the callbacks, lookups and SM_NOTIFYs of a Ready whose
// changes, if any, are already committed. Once the daemon stops nothing
// new starts (the core's attempts then stay in flight: the store has them
// as they were).
func (p *protocol) act(rd nsm.Ready) {
	for _, cb := range rd.GaveUp {
		p.failed.Add(1)
		p.log.Error("gave up calling registrant back", "mon_name", nsm.Quote(cb.MonName), "state", cb.State,
			"my_prog", cb.MyID.Prog, "my_vers", cb.MyID.Vers, "my_proc", cb.MyID.Proc)
	}
	if p.ctx == nil || p.ctx.Err() != nil {
		return
	}
	for _, cb := range rd.Callbacks {
		p.wg.Add(1)
		go p.callback(cb)
	}
	for _, name := range rd.Resolve {
		p.wg.Add(1)
		go p.resolve(name)
	}
	for _, o := range rd.Notify {
		p.wg.Add(1)
		go p.sendNotify(o)
	}
}

func (p *protocol) callback(cb nsm.Callback) {
	defer p.wg.Done()
	err := p.call(p.ctx, cb)
	p.calls.Add(1)
	if err != nil {
		p.callErrors.Add(1)
	}
	if err == nil {
		p.delivered.Add(1)
		p.log.Info("called registrant back", "mon_name", nsm.Quote(cb.MonName), "state", cb.State,
			"my_prog", cb.MyID.Prog, "my_vers", cb.MyID.Vers, "my_proc", cb.MyID.Proc)
	} else if p.ctx.Err() == nil {
		p.log.Warn("callback failed", "mon_name", nsm.Quote(cb.MonName), "state", cb.State, "my_prog", cb.MyID.Prog,
			"my_vers", cb.MyID.Vers, "my_proc", cb.MyID.Proc, "err", err)
	}
	p.mu.Lock()
	rd := p.core.CallbackDone(cb, err == nil, p.now())
	p.mu.Unlock()
	p.act(rd)
	p.kick() // a retry may now be the next wake-up
}

// maxReverseNames bounds the names a literal's reverse lookup may bring.
const maxReverseNames = 4

// lookupHost is what the core's lookups ask: a name's addresses; for an
// address literal (Linux lockd monitors its peers by address), the
// addresses of the host it names: its reverse names, looked up forward,
// kept only when they include the literal (forward-confirmed, so whoever
// controls a reverse zone cannot tie an address to a name not theirs).
// nfs-utils finds the same through the literal's canonical name.
func lookupHost(ctx context.Context, r Resolver, name string) ([]netip.Addr, error) {
	a, err := netip.ParseAddr(name)
	if err != nil {
		return r.LookupNetIP(ctx, "ip", name)
	}
	rev, ok := r.(interface {
		LookupAddr(ctx context.Context, addr string) ([]string, error)
	})
	if !ok {
		return nil, nil
	}
	names, err := rev.LookupAddr(ctx, a.String())
	if err != nil {
		return nil, err
	}
	var out []netip.Addr
	for _, n := range names[:min(len(names), maxReverseNames)] {
		as, err := r.LookupNetIP(ctx, "ip", n)
		if err == nil && slices.ContainsFunc(as, func(b netip.Addr) bool { return b.Unmap() == a.Unmap() }) {
			out = append(out, as...)
		}
	}
	return out, nil
}

func (p *protocol) resolve(name string) {
	defer p.wg.Done()
	var addrs []netip.Addr
	select {
	case p.resolveSem <- struct{}{}:
		ctx, cancel := context.WithTimeout(p.ctx, resolveTimeout)
		as, err := lookupHost(ctx, p.resolver, name)
		cancel()
		<-p.resolveSem
		if err != nil {
			p.log.Debug("name does not resolve; matching it by name only", "name", nsm.Quote(name), "err", err)
		}
		addrs = as
	case <-p.ctx.Done():
		return
	}
	p.mu.Lock()
	removes := p.core.RemovalWaits(name)
	p.mu.Unlock()
	if removes {
		unlock := p.lockAll()
		defer unlock()
	}
	p.mu.Lock()
	rd := p.core.Resolved(name, addrs, p.now())
	p.mu.Unlock()
	if err := p.commit(p.ctx, rd.Persist); err != nil {
		p.log.Error("SM_UNMON by address not recorded", "name", nsm.Quote(name), "err", err)
	}
	rd.Persist = nil
	p.act(rd)
}

// run ticks the core until ctx ends, then waits for the callbacks and
// lookups under way (each bounded by ctx).
func (p *protocol) run(ctx context.Context) {
	defer p.wg.Wait()
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		case <-p.wake:
		}
		now := p.now()
		p.mu.Lock()
		rd := p.core.Tick(now)
		next, ok := p.core.NextWake()
		p.mu.Unlock()
		p.act(rd)
		wait := tickEvery
		if ok {
			wait = min(max(next.Sub(now), 0), tickEvery)
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(wait)
	}
}
