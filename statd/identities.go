package statd

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/hoststat/hoststat/nsm"
	"github.com/hoststat/hoststat/nsm/etcdstore"
	"github.com/hoststat/hoststat/nsm/identity"
	"github.com/hoststat/hoststat/oncrpc"
)

// addrWait is how often a statd that won an identity tries again to bind
// the identity's address (not up on this host yet: the address resource
// moves it after us, or at the same time).
const addrWait = 200 * time.Millisecond

// identities are the --identity identities of a daemon: each is served
// (a Core, its store, notifications) only while this statd owns it.
type identities struct {
	mu     sync.RWMutex
	served map[string]*protocol // canonical identity name → its shell, while owned
	names  map[string]bool      // canonical names of every --identity
	addrs  map[netip.Addr]string
	wg     sync.WaitGroup
}

func newIdentities(ids []identity.Identity) *identities {
	s := &identities{served: map[string]*protocol{}, names: map[string]bool{}, addrs: map[netip.Addr]string{}}
	for _, id := range ids {
		n := nsm.CanonicalName(id.Name)
		s.names[n] = true
		for _, a := range id.Addrs {
			s.addrs[a] = n
		}
	}
	return s
}

// route is the shell of the identity my_name names: (p, true) while this
// statd owns it, (nil, true) while another does (refuse the call), and
// (nil, false) when my_name is no identity of ours (the host's own).
func (s *identities) route(myName string) (*protocol, bool) {
	if s == nil {
		return nil, false
	}
	n := nsm.CanonicalName(myName)
	s.mu.RLock()
	defer s.mu.RUnlock()
	if !s.names[n] {
		return nil, false
	}
	return s.served[n], true
}

// at is the shell of the identity whose address a call came in on.
func (s *identities) at(local netip.Addr) *protocol {
	if s == nil {
		return nil
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.served[s.addrs[local.Unmap()]]
}

// all lists the shells of the identities owned now.
func (s *identities) all() []*protocol {
	if s == nil {
		return nil
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]*protocol, 0, len(s.served))
	for _, p := range s.served {
		out = append(out, p)
	}
	return out
}

func (s *identities) set(name string, p *protocol) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p == nil {
		delete(s.served, nsm.CanonicalName(name))
		return
	}
	s.served[nsm.CanonicalName(name)] = p
}

// serveIdentities campaigns for every --identity in the background until
// ctx ends; the returned func waits for them to stop.
func (d *daemon) serveIdentities(ctx context.Context) func() {
	for _, id := range d.cfg.Identities {
		d.ids.wg.Add(1)
		go func() {
			defer d.ids.wg.Done()
			d.standBy(ctx, id)
		}()
	}
	return d.ids.wg.Wait
}

// standBy campaigns for id, serves it while it is ours, and campaigns
// again once it is lost, until ctx ends.
func (d *daemon) standBy(ctx context.Context, id identity.Identity) {
	cli := d.store.(*etcdStorage).cli
	log := d.log.With("identity", id.Name)
	for ctx.Err() == nil {
		log.Info("standing by for identity", "addrs", id.Addrs, "holder", d.cfg.Name)
		owner, err := identity.Acquire(ctx, cli, d.cfg.Etcd.Prefix, id, d.cfg.Name, identity.Options{TTL: d.cfg.IdentityTTL, Logger: d.log})
		if err != nil {
			return // ctx ended
		}
		err = d.serveIdentity(ctx, owner)
		if err != nil && owner.Err() == nil && ctx.Err() == nil {
			log.Error("identity not taken over; standing by again", "err", err)
		}
		// A standby takes over at once (shutdown, a takeover that failed),
		// not after the lease; harmless once the identity is lost.
		rctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		owner.Resign(rctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

// serveIdentity takes over the identity owner holds and serves it until
// the ownership is lost or ctx ends. The takeover is the Core's
// SM_SIMU_CRASH step (nsm.TakeOver): one core path moves the state to the
// next odd number with every monitored host owed it, persisted through
// the fenced store's Apply like every other change, so the notifications
// then go on the core's normal schedule, from the identity's address and
// under its name.
func (d *daemon) serveIdentity(ctx context.Context, owner *identity.Owner) error {
	id := owner.Identity()
	log := d.log.With("identity", id.Name)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-owner.Lost():
			cancel() // stop notifying at once; the fence refuses writes already
		case <-ctx.Done():
		}
	}()
	cli := d.store.(*etcdStorage).cli
	store, err := etcdstore.Open(ctx, cli, etcdstore.IdentityPrefix(d.cfg.Etcd.Prefix, id.Name), etcdstore.Options{Fence: owner, Logger: log})
	if err != nil {
		return err
	}
	defer store.Close()
	core := d.newCore()
	state, err := nsm.TakeOver(ctx, store, core, time.Now())
	if err != nil {
		return err
	}
	log.Info("identity won: its state moved on", "state", state)
	mux, err := d.listenFrom(ctx, id, log)
	if err != nil {
		return err
	}
	defer mux.Close()
	peer := &peerNotifier{mux: mux, resolver: d.cfg.Resolver, names: []string{id.Name}, rpcbPort: uint16(d.cfg.RPCBindPort), timeout: d.cfg.NotifyTimeout}
	p := newProtocol(log, store, core, d.cfg.Resolver, d.proto.call, peer)
	p.ctx = ctx
	tel := d.telemetryFor(ctx, p, id.Name, log)
	runDone := make(chan struct{})
	go func() {
		defer close(runDone)
		p.run(ctx)
	}()
	d.ids.set(id.Name, p)
	if tel != nil {
		// As for the host's own: liveness before the first attempts, so
		// a debt to a client telemetry shows down waits for its return.
		tel.start()
	}
	p.mu.Lock()
	rd := core.StartNotifying(p.now())
	regs, owed := core.Len(), core.OwedLen()
	p.mu.Unlock()
	p.act(rd)
	p.kick()
	telDone := make(chan struct{})
	go func() {
		defer close(telDone)
		if tel != nil {
			tel.run(ctx) // stops at once when the identity is lost
		}
	}()
	log.Info("identity taken over: serving it", "state", state, "registrations", regs, "owed", owed, "from", id.Addrs,
		"telemetry", tel != nil)
	<-ctx.Done()
	d.ids.set(id.Name, nil)
	if err := owner.Err(); err != nil {
		log.Warn("identity lost: no longer serving or notifying for it", "err", err)
	}
	<-telDone
	<-runDone
	p.wg.Wait()
	return owner.Err()
}

// listenFrom binds the identity's outgoing socket to its addresses,
// waiting while they are not up on this host.
func (d *daemon) listenFrom(ctx context.Context, id identity.Identity, log *slog.Logger) (*oncrpc.Multicaller, error) {
	warned := false
	for {
		mux, err := oncrpc.ListenMulticallerFrom(id.Addrs)
		if err == nil || !errors.Is(err, syscall.EADDRNOTAVAIL) {
			return mux, err
		}
		if !warned {
			log.Warn("waiting for the identity's address to be up on this host before notifying", "addrs", id.Addrs)
			warned = true
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(addrWait):
		}
	}
}

// list names the identities served now (canonical), for the status.
func (s *identities) list() []string {
	if s == nil {
		return nil
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]string, 0, len(s.served))
	for n := range s.served {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}
