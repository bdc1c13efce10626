package nsm

import (
	"context"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Apply writes the changes a Core planned, in order, in one transaction
// shared with other callers (group commit), and returns once they are
// durable: registrations (one written again with the priv it has keeps
// its first registration time; removing one that is not there is no
// error), owed notifications (a removal keeps a record owing a newer
// state; writing one forgets that the host was given up on) and the state
// number (the state file first, then the store; the state hook is told
// once it is committed).
func (s *Store) Apply(ctx context.Context, changes []Change) error {
	if len(changes) == 0 {
		return nil
	}
	changes = append([]Change(nil), changes...) // the caller's are applied to the Core as given
	state := int32(-1)
	for i := range changes {
		ch := &changes[i]
		switch ch.Kind {
		case ChangeReg:
			if ch.Remove {
				continue
			}
			id := MonID{MonName: ch.Reg.MonName, MyID: ch.Reg.MyID}
			if err := id.Validate(); err != nil {
				return fmt.Errorf("nsm: store %q: %w", s.path, err)
			}
			if ch.Reg.Registered.IsZero() {
				ch.Reg.Registered = time.Now()
			}
		case ChangeOwed:
			if err := ValidateMonName(ch.Owed.Host); err != nil {
				return fmt.Errorf("nsm: store %q: owed notification: %w", s.path, err)
			}
		case ChangeDropRegs:
		case ChangeState:
			if ch.State <= 0 {
				return fmt.Errorf("nsm: store %q: state number %d is not a state to record", s.path, ch.State)
			}
			state = ch.State
		default:
			return fmt.Errorf("nsm: store %q: change of unknown kind %d", s.path, ch.Kind)
		}
	}
	err := s.update(ctx, func(tx *bolt.Tx) error {
		owed := tx.Bucket(bucketOwed)
		owed.FillPercent = owedFillPercent // not persisted by bbolt: set per transaction
		for _, ch := range changes {
			var err error
			switch ch.Kind {
			case ChangeReg:
				err = applyReg(tx, ch)
			case ChangeOwed:
				err = applyOwedRecord(tx, owed, ch)
			case ChangeState:
				if err = s.putState(tx, ch.State); err == nil && ch.BootID != "" {
					err = tx.Bucket(bucketMeta).Put(keyBoot, []byte(ch.BootID))
				}
			case ChangeDropRegs:
				err = dropRegistrations(tx)
			}
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("nsm: store %q: %w", s.path, err)
	}
	if state > 0 && s.onState != nil {
		s.onState(state)
	}
	return nil
}

func applyReg(tx *bolt.Tx, ch Change) error {
	if !ch.Remove {
		return putRegistration(tx, ch.Reg)
	}
	n, ok, err := myIDNumber(tx, myIDKey(ch.Reg.MyID), false)
	if err != nil || !ok {
		return err // !ok: removing a registration of an unknown my_id
	}
	return regsBucket(tx).Delete(regKey(ch.Reg.MonName, n))
}

func applyOwedRecord(tx *bolt.Tx, owed *bolt.Bucket, ch Change) error {
	host := []byte(ch.Owed.Host)
	gaveUp := tx.Bucket(bucketGaveUp)
	if !ch.Remove {
		o := ch.Owed
		if o.NextTry.IsZero() {
			o.NextTry = o.FirstOwed
		}
		if err := owed.Put(host, owedValue(o)); err != nil {
			return err
		}
		return gaveUp.Delete(host)
	}
	v := owed.Get(host)
	if v == nil {
		return nil
	}
	o, err := parseOwedValue(ch.Owed.Host, v)
	if err != nil {
		return err
	}
	if o.State > ch.Owed.State {
		return nil // a newer state became owed meanwhile: still owed
	}
	if ch.GaveUp {
		if err := gaveUp.Put(host, gaveUpValue(o.State, ch.At)); err != nil {
			return err
		}
	}
	return owed.Delete(host)
}

// dropRegistrations empties the registrations and the my_id dictionary in
// one step (their pages freed whole, not key by key).
func dropRegistrations(tx *bolt.Tx) error {
	for _, b := range [][]byte{bucketRegs, bucketIDs} {
		if err := tx.DeleteBucket(b); err != nil {
			return err
		}
		if _, err := tx.CreateBucket(b); err != nil {
			return err
		}
	}
	return nil
}
