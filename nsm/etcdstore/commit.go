package etcdstore

import (
	"context"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// op is one queued mutation. fn reads only the keys in reads (through
// the view) and may run more than once (after a conflict), so it assigns
// its results rather than accumulating them. weight is the most
// operations it adds to a transaction. A solo op runs alone, outside any
// batch, with its own transactions.
type op struct {
	reads  []string
	weight int
	fn     func(*view) error
	solo   func(ctx context.Context) error
	done   chan error
}

// view is a batch's snapshot of the keys it read plus the writes planned
// so far, so a later op in the batch sees an earlier one's writes.
type view struct {
	snap   map[string][]byte // nil value: absent
	writes map[string][]byte // nil value: delete
	order  []string
}

func (v *view) get(k string) ([]byte, bool) {
	if w, ok := v.writes[k]; ok {
		return w, w != nil
	}
	if _, read := v.snap[k]; !read {
		panic("etcdstore: op read key " + k + " it did not declare") // a bug of ours, not of input
	}
	b := v.snap[k]
	return b, b != nil
}

func (v *view) put(k string, val []byte) { v.write(k, val) }
func (v *view) del(k string)             { v.write(k, nil) }

func (v *view) write(k string, val []byte) {
	if _, ok := v.writes[k]; !ok {
		v.order = append(v.order, k)
	}
	v.writes[k] = val
}

// fork starts an op's writes on top of the batch's; join keeps them.
func (v *view) fork() *view {
	return &view{snap: v.snap, writes: map[string][]byte{}}
}

// update queues a mutation and waits until etcd committed it. If ctx ends
// first the mutation may still commit later; every mutation is
// idempotent, so a caller that retries is safe.
func (s *Store) update(ctx context.Context, o *op) error {
	o.done = make(chan error, 1)
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return ErrClosed
	}
	select {
	case s.ops <- o:
	case <-ctx.Done():
		s.mu.RUnlock()
		return ctx.Err()
	}
	s.mu.RUnlock()
	select {
	case err := <-o.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// commitLoop is the group commit: whatever queued while the previous
// transaction was in flight goes into the next one, up to what one etcd
// transaction may carry. A lone request is committed at once.
func (s *Store) commitLoop() {
	defer close(s.stopped)
	var held *op // the op that did not fit in the last batch
	for {
		o := held
		held = nil
		if o == nil {
			var ok bool
			if o, ok = <-s.ops; !ok {
				return
			}
		}
		if o.solo != nil {
			ctx, cancel := s.ctx()
			o.done <- o.solo(ctx)
			cancel()
			continue
		}
		batch, weight := []*op{o}, o.weight
	fill:
		for {
			select {
			case n, ok := <-s.ops:
				if !ok {
					break fill
				}
				if n.solo != nil || weight+n.weight > s.batchOps() {
					held = n
					break fill
				}
				batch, weight = append(batch, n), weight+n.weight
			default:
				break fill
			}
		}
		s.commit(batch)
	}
}

// commit runs one batch as one etcd transaction: read every key the ops
// declared, run the ops on that snapshot, then write everything, on
// condition that none of the keys read changed since (and the fence
// holds). A conflict re-reads and retries; an op whose fn fails gets its
// error and its writes are left out, without failing the others.
func (s *Store) commit(batch []*op) {
	ctx, cancel := s.ctx()
	defer cancel()
	errs := make([]error, len(batch))
	finish := func(err error) {
		for i, o := range batch {
			if err != nil {
				o.done <- err
			} else {
				o.done <- errs[i]
			}
		}
	}
	var keys []string
	seen := map[string]bool{}
	for _, o := range batch {
		for _, k := range o.reads {
			if !seen[k] {
				seen[k] = true
				keys = append(keys, k)
			}
		}
	}
	for range maxConflicts {
		if err := s.fenceErr(); err != nil {
			finish(err)
			return
		}
		snap, revs, err := s.read(ctx, keys)
		if err != nil {
			finish(err)
			return
		}
		v := &view{snap: snap, writes: map[string][]byte{}}
		for i, o := range batch {
			f := v.fork()
			f.writes, f.order = cloneWrites(v)
			if errs[i] = o.fn(f); errs[i] == nil {
				v.writes, v.order = f.writes, f.order
			}
		}
		if len(v.order) == 0 {
			finish(nil)
			return
		}
		cmps := s.fenceCmps()
		for _, k := range keys {
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(k), "=", revs[k]))
		}
		var writes []clientv3.Op
		for _, k := range v.order {
			if val := v.writes[k]; val != nil {
				writes = append(writes, clientv3.OpPut(k, string(val)))
			} else {
				writes = append(writes, clientv3.OpDelete(k))
			}
		}
		ok, err := s.txn(ctx, cmps, writes)
		if err != nil {
			finish(err)
			return
		}
		if ok {
			finish(nil)
			return
		}
		if err := s.fenced(ctx); err != nil {
			finish(err)
			return
		}
		// Another writer changed a key we read: read again.
	}
	finish(fmt.Errorf("etcdstore: %d conflicting writes in a row under %q; another writer is using this identity", maxConflicts, s.prefix))
}

func cloneWrites(v *view) (map[string][]byte, []string) {
	w := make(map[string][]byte, len(v.writes))
	for k, val := range v.writes {
		w[k] = val
	}
	return w, append([]string(nil), v.order...)
}

// read gets keys at one revision; an absent key has value nil and mod
// revision 0.
func (s *Store) read(ctx context.Context, keys []string) (map[string][]byte, map[string]int64, error) {
	snap := make(map[string][]byte, len(keys))
	revs := make(map[string]int64, len(keys))
	if len(keys) == 0 {
		return snap, revs, nil
	}
	var rev int64
	for start := 0; start < len(keys); start += s.o.MaxTxnOps {
		chunk := keys[start:min(start+s.o.MaxTxnOps, len(keys))]
		gets := make([]clientv3.Op, len(chunk))
		for i, k := range chunk {
			if rev > 0 {
				gets[i] = clientv3.OpGet(k, clientv3.WithRev(rev))
			} else {
				gets[i] = clientv3.OpGet(k)
			}
		}
		var resp *clientv3.TxnResponse
		err := retry(ctx, func() (err error) { resp, err = s.cli.Txn(ctx).Then(gets...).Commit(); return err })
		if err != nil {
			return nil, nil, fmt.Errorf("etcdstore: reading under %q: %w", s.prefix, err)
		}
		if rev == 0 {
			rev = resp.Header.Revision
		}
		for i, r := range resp.Responses {
			k := chunk[i]
			snap[k], revs[k] = nil, 0
			if kvs := r.GetResponseRange().Kvs; len(kvs) == 1 {
				snap[k], revs[k] = kvs[0].Value, kvs[0].ModRevision
			}
		}
	}
	return snap, revs, nil
}

// batchOps is how many operations a batch may carry: the server's limit
// less room for the fence's comparisons.
func (s *Store) batchOps() int { return s.o.MaxTxnOps - fenceReserve }

// fenceReserve is the comparisons kept free for a Fence.
const fenceReserve = 4

// txn commits one conditional write and counts it.
func (s *Store) txn(ctx context.Context, cmps []clientv3.Cmp, writes []clientv3.Op) (bool, error) {
	if err := s.fenceErr(); err != nil {
		return false, err
	}
	if len(cmps) > s.o.MaxTxnOps || len(writes) > s.o.MaxTxnOps {
		return false, fmt.Errorf("etcdstore: transaction of %d comparisons and %d writes exceeds %d", len(cmps), len(writes), s.o.MaxTxnOps)
	}
	var resp *clientv3.TxnResponse
	err := retry(ctx, func() (err error) { resp, err = s.cli.Txn(ctx).If(cmps...).Then(writes...).Commit(); return err })
	if err != nil {
		return false, fmt.Errorf("etcdstore: writing under %q: %w", s.prefix, err)
	}
	if resp.Succeeded {
		s.txns.Add(1)
	}
	return resp.Succeeded, nil
}

// fenceErr is ErrFenced while the fence itself says ownership is gone.
func (s *Store) fenceErr() error {
	if s.o.Fence == nil {
		return nil
	}
	if err := s.o.Fence.Err(); err != nil {
		return fmt.Errorf("%w: %w", ErrFenced, err)
	}
	return nil
}

func (s *Store) fenceCmps() []clientv3.Cmp {
	if s.o.Fence == nil {
		return nil
	}
	return s.o.Fence.Cmps()
}

// fenced tells a failed transaction's cause: ErrFenced when the fence no
// longer holds, nil when it was a conflict on our own keys.
func (s *Store) fenced(ctx context.Context) error {
	cmps := s.fenceCmps()
	if len(cmps) == 0 {
		return nil
	}
	var resp *clientv3.TxnResponse
	err := retry(ctx, func() (err error) { resp, err = s.cli.Txn(ctx).If(cmps...).Commit(); return err })
	if err != nil {
		return fmt.Errorf("etcdstore: checking ownership under %q: %w", s.prefix, err)
	}
	if !resp.Succeeded {
		return ErrFenced
	}
	return nil
}
