package etcdstore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/hoststat/hoststat/nsm"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Apply writes the changes a Core planned and returns once etcd committed
// them: every kind the Core emits, so the daemon runs the same Core with
// this store as with bbolt. Concurrent calls share transactions. A
// registration written again with the priv it has keeps its first
// registration time; removing one that is not there is no error.
//
// Changes that fit in one etcd transaction commit in one. More (a reboot
// owing many hosts, an SM_UNMON_ALL of a busy my_id) commit in several, in
// order, except that the state number goes last: the debts of a new state
// are written before the state is, so a crash in between leaves records
// owing a state not yet recorded (the next start owes them again, from
// the same number) and never a state whose debts are missing.
//
// The state number is a compare-and-swap: it is written only if the
// stored number is the one this store last read or wrote (another writer
// of the identity moved it otherwise) and it does not go backwards; with
// a Fence it is fenced like every other write.
func (s *Store) Apply(ctx context.Context, changes []nsm.Change) error {
	var state *nsm.Change
	var segs [][]nsm.Change // runs of registration and owed changes; nil: drop the registrations
	var cur []nsm.Change
	for i := range changes {
		ch := changes[i]
		switch ch.Kind {
		case nsm.ChangeReg:
			if !ch.Remove {
				id := nsm.MonID{MonName: ch.Reg.MonName, MyID: ch.Reg.MyID}
				if err := id.Validate(); err != nil {
					return err
				}
				if ch.Reg.Registered.IsZero() {
					ch.Reg.Registered = time.Now()
				}
			}
		case nsm.ChangeOwed:
			if err := nsm.ValidateMonName(ch.Owed.Host); err != nil {
				return fmt.Errorf("etcdstore: owed notification: %w", err)
			}
		case nsm.ChangeState:
			if ch.State <= 0 {
				return fmt.Errorf("etcdstore: state number %d is not a state to record", ch.State)
			}
			if state != nil {
				return errors.New("etcdstore: two state changes in one Apply")
			}
			state = &ch
			continue
		case nsm.ChangeDropRegs:
			if len(cur) > 0 {
				segs = append(segs, cur)
			}
			segs, cur = append(segs, nil), nil
			continue
		default:
			return fmt.Errorf("etcdstore: change of unknown kind %d", ch.Kind)
		}
		cur = append(cur, ch)
	}
	if len(cur) > 0 {
		segs = append(segs, cur)
	}
	per := s.batchOps() / 2 // a change writes at most two keys
	for i, seg := range segs {
		last := i == len(segs)-1
		if seg == nil {
			var st *nsm.Change
			if last {
				st = state // one transaction drops the registrations and moves the state
			}
			if err := s.update(ctx, &op{solo: func(ctx context.Context) error { return s.dropRegs(ctx, st) }}); err != nil {
				return err
			}
			if st != nil {
				s.stateCommitted(st.State)
				state = nil
			}
			continue
		}
		for start := 0; start < len(seg); start += per {
			end := min(start+per, len(seg))
			var st *nsm.Change
			if last && end == len(seg) && 2*(end-start)+stateWeight <= s.batchOps() {
				st = state
			}
			if err := s.update(ctx, s.applyOp(seg[start:end], st)); err != nil {
				return err
			}
			if st != nil {
				s.stateCommitted(st.State)
				state = nil
			}
		}
	}
	if state != nil {
		if err := s.update(ctx, s.applyOp(nil, state)); err != nil {
			return err
		}
		s.stateCommitted(state.State)
	}
	return nil
}

// stateWeight is the writes of a state change: state, boot id, magic.
const stateWeight = 3

func (s *Store) applyOp(changes []nsm.Change, state *nsm.Change) *op {
	o := &op{weight: 2 * len(changes)}
	for _, ch := range changes {
		switch {
		case ch.Kind == nsm.ChangeReg && !ch.Remove:
			o.reads = append(o.reads, s.regsPrefix()+regKey(ch.Reg.MonName, ch.Reg.MyID))
		case ch.Kind == nsm.ChangeOwed && ch.Remove:
			o.reads = append(o.reads, s.owedKey(ch.Owed.Host))
		}
	}
	if state != nil {
		o.weight += stateWeight
		o.reads = append(o.reads, s.stateKey())
	}
	o.fn = func(v *view) error {
		if state != nil {
			var stored int32
			if b, ok := v.get(s.stateKey()); ok {
				var err error
				if stored, err = parseState(b); err != nil {
					return fmt.Errorf("etcdstore: under %q: %w", s.prefix, err)
				}
			}
			if err := s.checkState(stored, state.State); err != nil {
				return err
			}
			s.putState(v, *state)
		}
		for _, ch := range changes {
			var err error
			if ch.Kind == nsm.ChangeReg {
				s.applyReg(v, ch)
			} else {
				err = s.applyOwed(v, ch)
			}
			if err != nil {
				return err
			}
		}
		return nil
	}
	return o
}

func (s *Store) applyReg(v *view, ch nsm.Change) {
	r := ch.Reg
	k := s.regsPrefix() + regKey(r.MonName, r.MyID)
	if ch.Remove {
		v.del(k)
		return
	}
	if old, ok := v.get(k); ok {
		if priv, _, err := parseRegValue(k, old); err == nil && priv == r.Priv {
			return // idempotent: keep the first registration time
		}
	}
	v.put(k, regValue(r))
	v.del(s.gaveUpKey(r.MonName)) // heard of again: no longer given up on
}

// applyOwed writes a debt, or removes it (recording the host as given up
// on when asked) unless the stored record owes a newer state.
func (s *Store) applyOwed(v *view, ch nsm.Change) error {
	host := ch.Owed.Host
	if !ch.Remove {
		o := ch.Owed
		if o.NextTry.IsZero() {
			o.NextTry = o.FirstOwed
		}
		o.FirstOwed, o.NextTry = o.FirstOwed.UTC(), o.NextTry.UTC()
		v.put(s.owedKey(host), owedValue(o))
		v.del(s.gaveUpKey(host))
		return nil
	}
	b, ok := v.get(s.owedKey(host))
	if !ok {
		return nil
	}
	o, err := parseOwed(host, b)
	if err != nil {
		return fmt.Errorf("etcdstore: under %q: %w", s.prefix, err)
	}
	if o.State > ch.Owed.State {
		return nil // a newer state became owed meanwhile: still owed
	}
	if ch.GaveUp {
		v.put(s.gaveUpKey(host), gaveUpValue(nsm.GaveUp{Host: host, State: o.State, At: ch.At.UTC()}))
	}
	v.del(s.owedKey(host))
	return nil
}

func (s *Store) putState(v *view, ch nsm.Change) {
	v.put(s.stateKey(), []byte(stateValue(ch.State)))
	v.put(s.magicKey(), []byte(magic))
	if ch.BootID != "" {
		v.put(s.bootKey(), []byte(ch.BootID))
	}
}

// checkState refuses a state change that would go backwards, or that
// starts from a number this store did not last see (another writer of the
// identity moved it: two statds must never hand out the same number).
func (s *Store) checkState(stored, next int32) error {
	if next < stored {
		return fmt.Errorf("etcdstore: state under %q is %d: %d would go backwards", s.prefix, stored, next)
	}
	if k := s.known.Load(); k >= 0 && int32(k) != stored {
		return fmt.Errorf("etcdstore: state under %q moved from %d to %d by another writer; this statd does not own the identity", s.prefix, k, stored)
	}
	return nil
}

// stateCommitted records a committed state number as the one this store
// last saw, and tells Options.OnState.
func (s *Store) stateCommitted(state int32) {
	s.known.Store(int64(state))
	if s.o.OnState != nil {
		s.o.OnState(state)
	}
}

// dropRegs removes every registration in one transaction (the reboot
// step), moving the state in the same one when st is set.
func (s *Store) dropRegs(ctx context.Context, st *nsm.Change) error {
	for range maxConflicts {
		if err := s.fenceErr(); err != nil {
			return err
		}
		cmps := s.fenceCmps()
		writes := []clientv3.Op{clientv3.OpDelete(s.regsPrefix(), clientv3.WithPrefix())}
		if st != nil {
			var resp *clientv3.GetResponse
			err := retry(ctx, func() (err error) { resp, err = s.cli.Get(ctx, s.stateKey()); return err })
			if err != nil {
				return fmt.Errorf("etcdstore: reading state under %q: %w", s.prefix, err)
			}
			var stored int32
			var rev int64
			if len(resp.Kvs) == 1 {
				if stored, err = parseState(resp.Kvs[0].Value); err != nil {
					return fmt.Errorf("etcdstore: under %q: %w", s.prefix, err)
				}
				rev = resp.Kvs[0].ModRevision
			}
			if err := s.checkState(stored, st.State); err != nil {
				return err
			}
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(s.stateKey()), "=", rev))
			writes = append(writes, clientv3.OpPut(s.stateKey(), stateValue(st.State)), clientv3.OpPut(s.magicKey(), magic))
			if st.BootID != "" {
				writes = append(writes, clientv3.OpPut(s.bootKey(), st.BootID))
			}
		}
		ok, err := s.txn(ctx, cmps, writes)
		if err != nil || ok {
			return err
		}
		if err := s.fenced(ctx); err != nil {
			return err
		}
	}
	return fmt.Errorf("etcdstore: state under %q changed %d times while moving it; another writer is using this identity", s.prefix, maxConflicts)
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
	if err == nil {
		s.known.Store(int64(b.State))
	}
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
	s.stateCommitted(res.State)
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
