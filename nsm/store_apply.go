package nsm

import (
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
	regs := make([]Registration, len(changes))
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
		regs[i] = r
	}
	return s.update(ctx, func(tx *bolt.Tx) error {
		for i, r := range regs {
			if !changes[i].Remove {
				if err := putRegistration(tx, r); err != nil {
					return err
				}
				continue
			}
			n, ok, err := myIDNumber(tx, myIDKey(r.MyID), false)
			if err != nil {
				return err
			}
			if !ok {
				continue // removing a registration of an unknown my_id
			}
			if err := regsBucket(tx).Delete(regKey(r.MonName, n)); err != nil {
				return err
			}
		}
		return nil
	})
}
