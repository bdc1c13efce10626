package etcdstore

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/hoststat/hoststat/nsm"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Apply writes the changes a Core planned and returns once etcd committed
// them. Concurrent calls share transactions. A registration written again
// with the priv it has keeps its first registration time; removing one
// that is not there is no error. Changes too many for one transaction
// (an SM_UNMON_ALL of a busy my_id) commit in several, in order.
//
// Only registrations: owed notifications and the state number move through
// Start, Reboot, SimulateCrash and the outcome methods, whose transactions
// guard against a second writer of the identity; a Core's owed and state
// changes are refused (rpc.statd is not wired to this store, see
// docs/ha.md).
func (s *Store) Apply(ctx context.Context, changes []nsm.Change) error {
	regs := make([]nsm.Registration, len(changes))
	for i, ch := range changes {
		if ch.Kind != nsm.ChangeReg {
			return fmt.Errorf("etcdstore: change of kind %d (owed notification or state number) not supported by Apply", ch.Kind)
		}
		r := ch.Reg
		if !ch.Remove {
			id := nsm.MonID{MonName: r.MonName, MyID: r.MyID}
			if err := id.Validate(); err != nil {
				return err
			}
			if r.Registered.IsZero() {
				r.Registered = time.Now()
			}
		}
		regs[i] = r
	}
	per := s.batchOps() / 2 // a registration: its key and the host's gave-up key
	for start := 0; start < len(changes); start += per {
		end := min(start+per, len(changes))
		if err := s.update(ctx, s.applyOp(changes[start:end], regs[start:end])); err != nil {
			return err
		}
	}
	return nil
}

func (s *Store) applyOp(changes []nsm.Change, regs []nsm.Registration) *op {
	o := &op{weight: 2 * len(changes)}
	for i, r := range regs {
		if !changes[i].Remove {
			o.reads = append(o.reads, s.regsPrefix()+regKey(r.MonName, r.MyID))
		}
	}
	o.fn = func(v *view) error {
		for i, r := range regs {
			k := s.regsPrefix() + regKey(r.MonName, r.MyID)
			if changes[i].Remove {
				v.del(k)
				continue
			}
			if old, ok := v.get(k); ok {
				if priv, _, err := parseRegValue(k, old); err == nil && priv == r.Priv {
					continue // idempotent: keep the first registration time
				}
			}
			v.put(k, regValue(r))
			v.del(s.gaveUpKey(r.MonName)) // heard of again: no longer given up on
		}
		return nil
	}
	return o
}

// MarkNotified removes host's owed notification once state was delivered.
// A record owing a newer state is kept. Reports whether it was removed.
func (s *Store) MarkNotified(ctx context.Context, host string, state int32) (bool, error) {
	return s.settle(ctx, host, state, time.Time{})
}

// GiveUp removes host's owed notification after the schedule ran out and
// remembers that it did; like MarkNotified it keeps a newer-state record.
func (s *Store) GiveUp(ctx context.Context, host string, state int32, now time.Time) (bool, error) {
	return s.settle(ctx, host, state, now)
}

func (s *Store) settle(ctx context.Context, host string, state int32, gaveUpAt time.Time) (bool, error) {
	return s.updateOwed(ctx, host, func(o nsm.Owed, v *view) bool {
		if o.State > state {
			return false
		}
		if !gaveUpAt.IsZero() {
			v.put(s.gaveUpKey(host), gaveUpValue(nsm.GaveUp{Host: host, State: o.State, At: gaveUpAt.UTC()}))
		}
		v.del(s.owedKey(host))
		return true
	})
}

// Reschedule records a failed attempt; it never creates a record, so it
// cannot resurrect a settled one.
func (s *Store) Reschedule(ctx context.Context, host string, next time.Time, attempts int) error {
	_, err := s.updateOwed(ctx, host, func(o nsm.Owed, v *view) bool {
		o.NextTry, o.Attempts = next.UTC(), attempts
		v.put(s.owedKey(host), owedValue(o))
		return true
	})
	return err
}

// updateOwed runs fn on host's owed record, if there is one, in the group
// commit, and reports what fn said once committed.
func (s *Store) updateOwed(ctx context.Context, host string, fn func(nsm.Owed, *view) bool) (bool, error) {
	k := s.owedKey(host)
	var did bool
	err := s.update(ctx, &op{reads: []string{k}, weight: 2, fn: func(v *view) error {
		did = false // the op may run again after a conflict
		b, ok := v.get(k)
		if !ok {
			return nil
		}
		o, err := parseOwed(host, b)
		if err != nil {
			return err
		}
		did = fn(o, v)
		return nil
	}})
	return did && err == nil, err
}

// Registrations lists every registration, ordered by mon_name.
func (s *Store) Registrations() ([]nsm.Registration, error) {
	ctx, cancel := s.ctx()
	defer cancel()
	var resp *clientv3.GetResponse
	err := retry(ctx, func() (err error) { resp, err = s.cli.Get(ctx, s.regsPrefix(), clientv3.WithPrefix()); return err })
	if err != nil {
		return nil, fmt.Errorf("etcdstore: listing %q: %w", s.regsPrefix(), err)
	}
	out := make([]nsm.Registration, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		name, my, err := parseRegKey(strings.TrimPrefix(string(kv.Key), s.regsPrefix()))
		if err != nil {
			return nil, fmt.Errorf("etcdstore: under %q: %w", s.prefix, err)
		}
		priv, at, err := parseRegValue(string(kv.Key), kv.Value)
		if err != nil {
			return nil, fmt.Errorf("etcdstore: %w", err)
		}
		out = append(out, nsm.Registration{MonName: name, MyID: my, Priv: priv, Registered: at})
	}
	return out, nil
}

// Owed lists the notifications still owed, ordered by host.
func (s *Store) Owed() ([]nsm.Owed, error) { return list(s, s.owedPrefix(), parseOwed) }

// GaveUp lists the hosts the notifier gave up on.
func (s *Store) GaveUp() ([]nsm.GaveUp, error) { return list(s, s.gaveUpPrefix(), parseGaveUp) }

func list[T any](s *Store, prefix string, parse func(string, []byte) (T, error)) ([]T, error) {
	ctx, cancel := s.ctx()
	defer cancel()
	var resp *clientv3.GetResponse
	err := retry(ctx, func() (err error) { resp, err = s.cli.Get(ctx, prefix, clientv3.WithPrefix()); return err })
	if err != nil {
		return nil, fmt.Errorf("etcdstore: listing %q: %w", prefix, err)
	}
	out := make([]T, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		r, err := parse(strings.TrimPrefix(string(kv.Key), prefix), kv.Value)
		if err != nil {
			return nil, fmt.Errorf("etcdstore: under %q: %w", s.prefix, err)
		}
		out = append(out, r)
	}
	return out, nil
}

// State is the current state number (0 before the first Start).
func (s *Store) State() (int32, error) {
	b, err := s.Boot()
	return b.State, err
}

// Boot reports what the store remembers of the last start.
func (s *Store) Boot() (nsm.Boot, error) {
	ctx, cancel := s.ctx()
	defer cancel()
	var resp *clientv3.TxnResponse
	err := retry(ctx, func() (err error) {
		resp, err = s.cli.Txn(ctx).Then(clientv3.OpGet(s.stateKey()), clientv3.OpGet(s.bootKey())).Commit()
		return err
	})
	if err != nil {
		return nsm.Boot{}, fmt.Errorf("etcdstore: reading state under %q: %w", s.prefix, err)
	}
	b, _, err := s.parseBoot(resp)
	return b, err
}

// parseBoot reads the state and boot keys from a transaction whose first
// two responses are their gets; it returns the state key's mod revision.
func (s *Store) parseBoot(resp *clientv3.TxnResponse) (nsm.Boot, int64, error) {
	var b nsm.Boot
	var rev int64
	if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) == 1 {
		st, err := parseState(kvs[0].Value)
		if err != nil {
			return b, 0, fmt.Errorf("etcdstore: under %q: %w", s.prefix, err)
		}
		b.State, rev = st, kvs[0].ModRevision
	}
	kvs := resp.Responses[1].GetResponseRange().Kvs
	b.New = len(kvs) == 0
	if !b.New {
		b.BootID = string(kvs[0].Value)
	}
	return b, rev, nil
}

// Start is the reboot-versus-restart step (nsm.DecideStart). On a reboot
// the state moves to the next odd number, every monitored host and every
// host still owed is owed it on a fresh schedule, and the registrations
// are dropped. On a restart only the boot id is recorded.
func (s *Store) Start(bootID string, now time.Time) (nsm.StartResult, error) {
	return s.move(bootID, now, moveStart)
}

// Reboot is Start as `rpc.statd -n` runs it: a reboot whatever the boot id.
func (s *Store) Reboot(bootID string, now time.Time) (nsm.StartResult, error) {
	return s.move(bootID, now, moveReboot)
}

// SimulateCrash (SM_SIMU_CRASH) moves the state to the next odd number and
// owes every monitored host, keeping the registrations. Taking over an
// identity from another statd is the same step.
func (s *Store) SimulateCrash(ctx context.Context, now time.Time) (int32, error) {
	res, err := s.move("", now, moveCrash)
	return res.State, err
}

type moveKind int

const (
	moveStart moveKind = iota
	moveReboot
	moveCrash
)

// move is every change of the state number, run alone in the commit loop.
// It reads the state, the boot id and the registered and owed hosts at one
// revision; writes the owed records (in as many transactions as they
// need: a record owing a state not yet announced is harmless, the next
// attempt rewrites it); then moves the state in one transaction that
// holds only if the state key and the registrations did not change since
// that revision, so two writers racing from the same number cannot both
// succeed: the loser reads again and moves on from the winner's number.
func (s *Store) move(bootID string, now time.Time, kind moveKind) (nsm.StartResult, error) {
	var res nsm.StartResult
	err := s.update(context.Background(), &op{solo: func(ctx context.Context) error {
		for range maxConflicts {
			if err := s.fenceErr(); err != nil {
				return err
			}
			var resp *clientv3.TxnResponse
			err := retry(ctx, func() (err error) {
				resp, err = s.cli.Txn(ctx).Then(
					clientv3.OpGet(s.stateKey()), clientv3.OpGet(s.bootKey()),
					clientv3.OpGet(s.regsPrefix(), clientv3.WithPrefix(), clientv3.WithKeysOnly()),
					clientv3.OpGet(s.owedPrefix(), clientv3.WithPrefix(), clientv3.WithKeysOnly()),
				).Commit()
				return err
			})
			if err != nil {
				return fmt.Errorf("etcdstore: reading state under %q: %w", s.prefix, err)
			}
			rev := resp.Header.Revision
			prev, stateRev, err := s.parseBoot(resp)
			if err != nil {
				return err
			}
			var dec nsm.StartDecision
			if kind == moveCrash {
				dec.Reboot, dec.Reason = true, "simulated crash"
				dec.State, err = nsm.NextUpState(prev.State)
			} else {
				dec, err = nsm.DecideStart(prev, bootID, kind == moveReboot)
			}
			if err != nil {
				return err
			}
			regs := resp.Responses[2].GetResponseRange().Kvs
			var hosts []string
			for _, kv := range resp.Responses[3].GetResponseRange().Kvs {
				hosts = append(hosts, strings.TrimPrefix(string(kv.Key), s.owedPrefix()))
			}
			owedBefore := len(hosts)
			if dec.Reboot {
				for _, kv := range regs {
					name, _, err := parseRegKey(strings.TrimPrefix(string(kv.Key), s.regsPrefix()))
					if err != nil {
						return fmt.Errorf("etcdstore: under %q: %w", s.prefix, err)
					}
					hosts = append(hosts, name)
				}
				slices.Sort(hosts)
				hosts = slices.Compact(hosts)
				if err := s.oweAll(ctx, hosts, dec.State, now); err != nil {
					return err
				}
			}
			cmps := append(s.fenceCmps(), clientv3.Compare(clientv3.ModRevision(s.stateKey()), "=", stateRev))
			writes := []clientv3.Op{clientv3.OpPut(s.stateKey(), stateValue(dec.State)), clientv3.OpPut(s.magicKey(), magic)}
			if kind != moveCrash {
				writes = append(writes, clientv3.OpPut(s.bootKey(), bootID))
			}
			if dec.Reboot {
				// Owed computed from the registrations at rev: none may
				// have been added since, or it would go un-notified.
				cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(s.regsPrefix()).WithPrefix(), "<", rev+1))
			}
			if dec.Reboot && kind != moveCrash {
				// The registrants died with the host.
				writes = append(writes, clientv3.OpDelete(s.regsPrefix(), clientv3.WithPrefix()))
			}
			ok, err := s.txn(ctx, cmps, writes)
			if err != nil {
				return err
			}
			if !ok {
				if err := s.fenced(ctx); err != nil {
					return err
				}
				continue
			}
			res = nsm.StartResult{Rebooted: dec.Reboot, Reason: dec.Reason, PrevState: prev.State, State: dec.State, Owed: owedBefore}
			if dec.Reboot {
				res.Owed = len(hosts)
				if kind != moveCrash {
					res.Dropped = len(regs)
				}
			}
			return nil
		}
		return fmt.Errorf("etcdstore: state under %q changed %d times while moving it; another writer is using this identity", s.prefix, maxConflicts)
	}})
	if err != nil {
		return nsm.StartResult{}, err
	}
	if s.o.OnState != nil {
		s.o.OnState(res.State)
	}
	return res, nil
}

// oweAll writes a fresh owed record for each host and forgets it was given
// up on, in transactions as large as the server allows.
func (s *Store) oweAll(ctx context.Context, hosts []string, state int32, now time.Time) error {
	per := s.batchOps() / 2
	for start := 0; start < len(hosts); start += per {
		var writes []clientv3.Op
		for _, h := range hosts[start:min(start+per, len(hosts))] {
			writes = append(writes,
				clientv3.OpPut(s.owedKey(h), string(owedValue(nsm.Owed{Host: h, State: state, FirstOwed: now.UTC(), NextTry: now.UTC()}))),
				clientv3.OpDelete(s.gaveUpKey(h)))
		}
		ok, err := s.txn(ctx, s.fenceCmps(), writes)
		if err != nil {
			return err
		}
		if !ok {
			return ErrFenced
		}
	}
	return nil
}
