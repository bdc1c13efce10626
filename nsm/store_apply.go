package nsm

import (
	"bytes"
	"context"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Apply writes the changes a Core planned, in one transaction shared with
// other callers (group commit), and returns once they are durable. A
// registration written again with the priv it has keeps its first
// registration time; removing one that is not there is no error.
func (s *Store) Apply(ctx context.Context, changes []Change) error {
	if len(changes) == 0 {
		return nil
	}
	type prepared struct {
		remove bool
		idKey  []byte
		name   string
		val    []byte
	}
	ps := make([]prepared, len(changes))
	for i, ch := range changes {
		r := ch.Reg
		if !ch.Remove {
			id := MonID{MonName: r.MonName, MyID: r.MyID}
			if err := id.Validate(); err != nil {
				return err
			}
			if r.Registered.IsZero() {
				r.Registered = time.Now()
			}
		}
		ps[i] = prepared{remove: ch.Remove, idKey: myIDKey(r.MyID), name: r.MonName, val: regValue(r.Priv, r.Registered)}
	}
	return s.update(ctx, func(tx *bolt.Tx) error {
		regs := regsBucket(tx)
		for _, p := range ps {
			n, ok, err := myIDNumber(tx, p.idKey, !p.remove)
			if err != nil {
				return err
			}
			if !ok {
				continue // removing a registration of an unknown my_id
			}
			k := regKey(p.name, n)
			if p.remove {
				if err := regs.Delete(k); err != nil {
					return err
				}
				continue
			}
			if old := regs.Get(k); len(old) >= PrivLen && bytes.Equal(old[:PrivLen], p.val[:PrivLen]) {
				continue
			}
			if g := tx.Bucket(bucketGaveUp); g.Get([]byte(p.name)) != nil {
				if err := g.Delete([]byte(p.name)); err != nil {
					return err
				}
			}
			if err := regs.Put(k, p.val); err != nil {
				return err
			}
		}
		return nil
	})
}
