package identity

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// Options tune ownership.
type Options struct {
	// TTL is the lease's time to live (whole seconds; default 10s): how
	// long an identity stays unserved after its owner dies.
	TTL time.Duration
	// Margin is how long before its lease could expire on the server an
	// owner that cannot renew stops serving (default TTL/5, at least 1s).
	Margin time.Duration
	Logger *slog.Logger
}

// Owner is this statd's ownership of one identity. It is lost, at once
// and for good, when the lease cannot be shown renewed in time on our own
// clock, when etcd says the lease or the leader key is gone, or on Resign;
// then Lost is closed. Every store write for the identity carries Cmps,
// so a deposed owner's writes fail even if it has not noticed yet.
type Owner struct {
	id       Identity
	cli      *clientv3.Client
	session  *concurrency.Session
	election *concurrency.Election
	ttl      time.Duration
	log      *slog.Logger

	mu     sync.Mutex
	clock  leaseClock
	lost   chan struct{}
	reason error
	stop   context.CancelFunc
	done   chan struct{}
}

// ErrLost is wrapped by Owner.Err once ownership is gone.
var ErrLost = errors.New("identity: ownership lost")

// ElectionPrefix is where the owners of identity name under the --store
// prefix campaign; it sits beside the identity's state.
func ElectionPrefix(prefix, name string) string { return prefix + "/id/" + name + "/owner" }

// Campaign waits until this statd owns id (or ctx ends), then keeps the
// lease renewed. holder names this statd in etcd (for statdctl).
func Campaign(ctx context.Context, cli *clientv3.Client, prefix string, id Identity, holder string, o Options) (*Owner, error) {
	if o.TTL <= 0 {
		o.TTL = 10 * time.Second
	}
	o.TTL = o.TTL.Round(time.Second)
	if o.TTL < 2*time.Second {
		o.TTL = 2 * time.Second
	}
	if o.Margin <= 0 {
		o.Margin = max(o.TTL/5, time.Second)
	}
	if o.Margin > o.TTL/2 {
		return nil, fmt.Errorf("identity %s: margin %v must be at most half the lease TTL %v", id.Name, o.Margin, o.TTL)
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	ow := &Owner{id: id, cli: cli, ttl: o.TTL, clock: leaseClock{margin: o.Margin},
		lost: make(chan struct{}), done: make(chan struct{}),
		log: o.Logger.With("identity", id.Name)}
	sent := time.Now()
	lease, err := cli.Grant(ctx, int64(o.TTL/time.Second))
	if err != nil {
		return nil, fmt.Errorf("identity %s: lease: %w", id.Name, err)
	}
	ow.clock.renewed(sent, time.Duration(lease.TTL)*time.Second)
	if ow.session, err = concurrency.NewSession(cli, concurrency.WithLease(lease.ID)); err != nil {
		cli.Revoke(context.Background(), lease.ID)
		return nil, fmt.Errorf("identity %s: session: %w", id.Name, err)
	}
	rctx, stop := context.WithCancel(context.Background())
	ow.stop = stop
	go ow.renew(rctx, lease.ID)
	ow.election = concurrency.NewElection(ow.session, ElectionPrefix(prefix, id.Name))
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-ow.lost: // a campaign on a lease we lost can never be won
			cancel()
		case <-cctx.Done():
		}
	}()
	if err := ow.election.Campaign(cctx, holder); err != nil {
		ow.lose(fmt.Errorf("campaign: %w", err))
		ow.close()
		return nil, fmt.Errorf("identity %s: %w", id.Name, err)
	}
	if err := ow.Err(); err != nil {
		ow.close()
		return nil, err
	}
	go ow.watchLeaderKey(rctx)
	ow.log.Info("identity owned", "holder", holder, "lease", fmt.Sprintf("%x", lease.ID), "ttl", o.TTL, "leader_key", ow.election.Key())
	return ow, nil
}

// renew keeps the lease alive with one renewal every third of the TTL,
// and a watchdog on our own clock ends ownership the moment the lease can
// no longer be shown renewed, whatever etcd would say later. A renewal
// that fails is tried again at once rather than at the next tick: the
// client sends each to the next member in turn, and one that is cut off
// (no reset, only silence) costs one attempt, not a third of the TTL.
//
// The session's own keepalive stream is not trusted to say the lease is
// gone: it stays on one connection, and when that member is cut off it
// gives up after a TTL while our renewals through the others keep the
// lease alive. The lease ends for us on our clock or when etcd says it
// is not found.
func (ow *Owner) renew(ctx context.Context, id clientv3.LeaseID) {
	defer close(ow.done)
	watchdog := time.AfterFunc(ow.untilValid(), ow.checkClock)
	defer watchdog.Stop()
	tick := time.NewTicker(ow.ttl / 3)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ow.lost:
			return
		case <-tick.C:
		}
		for ow.Err() == nil {
			sent := time.Now()
			rctx, cancel := context.WithTimeout(ctx, renewAttempt(ow.ttl))
			resp, err := ow.cli.KeepAliveOnce(rctx, id)
			cancel()
			switch {
			case ctx.Err() != nil:
				return
			case errors.Is(err, rpctypes.ErrLeaseNotFound):
				ow.lose(errors.New("lease expired in etcd"))
				return
			case ow.cli.Ctx().Err() != nil:
				ow.lose(errors.New("etcd client closed"))
				return
			case err == nil:
				ow.mu.Lock()
				ow.clock.renewed(sent, time.Duration(resp.TTL)*time.Second)
				ow.mu.Unlock()
			}
			if err == nil {
				break
			}
			ow.log.Warn("lease renewal failed; trying again", "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
}

// renewAttempt bounds one renewal: short enough that a few fit in the
// time the lease has left after a missed one.
func renewAttempt(ttl time.Duration) time.Duration { return max(ttl/6, 500*time.Millisecond) }

func (ow *Owner) untilValid() time.Duration {
	ow.mu.Lock()
	defer ow.mu.Unlock()
	return time.Until(ow.clock.validUntil)
}

// checkClock is the watchdog: it ends ownership once the clock runs out,
// else looks again when it next could.
func (ow *Owner) checkClock() {
	if ow.Err() != nil {
		return
	}
	time.AfterFunc(max(ow.untilValid(), time.Millisecond), ow.checkClock)
}

// watchLeaderKey ends ownership when the leader key is deleted (an admin
// moving the identity, or the lease revoked by someone else).
func (ow *Owner) watchLeaderKey(ctx context.Context) {
	for wr := range ow.cli.Watch(ctx, ow.election.Key(), clientv3.WithRev(ow.election.Rev()+1)) {
		for _, ev := range wr.Events {
			if ev.Type == clientv3.EventTypeDelete {
				ow.lose(errors.New("leader key deleted"))
				return
			}
		}
	}
}

func (ow *Owner) lose(why error) {
	ow.mu.Lock()
	defer ow.mu.Unlock()
	if ow.reason != nil {
		return
	}
	ow.reason = fmt.Errorf("%w: identity %s: %w", ErrLost, ow.id.Name, why)
	close(ow.lost)
	ow.log.Warn("identity no longer owned: stop serving it", "why", why)
}

// Identity is the identity owned.
func (ow *Owner) Identity() Identity { return ow.id }

// Lost is closed when ownership ends.
func (ow *Owner) Lost() <-chan struct{} { return ow.lost }

// Err is nil while the identity is ours, else why it is not.
func (ow *Owner) Err() error {
	ow.mu.Lock()
	defer ow.mu.Unlock()
	if ow.reason == nil && !ow.clock.valid(time.Now()) {
		ow.reason = fmt.Errorf("%w: identity %s: lease not renewed in time (etcd unreachable?)", ErrLost, ow.id.Name)
		close(ow.lost)
		ow.log.Warn("identity no longer owned: stop serving it", "why", "lease not renewed in time on our own clock")
	}
	return ow.reason
}

// Cmps conditions a transaction on this owner's leader key still being
// the one it created: the fence of every store write for the identity.
func (ow *Owner) Cmps() []clientv3.Cmp {
	return []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(ow.election.Key()), "=", ow.election.Rev())}
}

// Resign gives the identity up: the leader key and the lease go at once,
// so another statd takes over without waiting for the TTL.
func (ow *Owner) Resign(ctx context.Context) error {
	ow.lose(errors.New("resigned"))
	err := ow.election.Resign(ctx)
	ow.close()
	return err
}

func (ow *Owner) close() {
	ow.stop()
	<-ow.done
	ow.session.Close() // revokes the lease
}

// Acquire campaigns until this statd owns id or ctx ends, as a standby
// does: a campaign whose own lease could not be kept renewed (etcd
// electing a new leader, a member lost) starts again with a new lease.
func Acquire(ctx context.Context, cli *clientv3.Client, prefix string, id Identity, holder string, o Options) (*Owner, error) {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	for {
		ow, err := Campaign(ctx, cli, prefix, id, holder, o)
		if err == nil {
			return ow, nil
		}
		if ctx.Err() != nil {
			return nil, err
		}
		o.Logger.Warn("campaign failed; starting again", "identity", id.Name, "err", err)
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(time.Second):
		}
	}
}
