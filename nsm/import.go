package nsm

import (
	"context"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Import is state taken over from another NSM implementation (nfs-utils'
// state directory): a state number, registrations in force and hosts owed
// a notification.
type Import struct {
	// State is the other implementation's state number: ours is raised to
	// it when lower, never lowered.
	State int32
	// BootID is recorded as the boot of the last start when the store had
	// never been started: the current boot id when the imported state was
	// written in this boot (the next Start is then a restart, keeping the
	// registrations), anything else when it is older (a reboot).
	BootID        string
	Registrations []Registration
	Owed          []string
	Now           time.Time
}

// ImportResult says what Import changed.
type ImportResult struct {
	State         int32 // the state number afterwards
	Raised        bool  // the state number was raised to the imported one
	Registrations int   // registrations added or updated
	Owed          int   // hosts newly owed a notification
}

// Import merges im into the store in one transaction, durably: the state
// number is raised to im.State (the state file first), registrations are
// added as SM_MON would add them, and every host in im.Owed not already
// owed is owed the (new) state now. Names are validated; an invalid one
// fails the whole import.
func (s *Store) Import(ctx context.Context, im Import) (ImportResult, error) {
	for _, r := range im.Registrations {
		id := MonID{MonName: r.MonName, MyID: r.MyID}
		if err := id.Validate(); err != nil {
			return ImportResult{}, err
		}
	}
	for _, h := range im.Owed {
		if err := ValidateMonName(h); err != nil {
			return ImportResult{}, err
		}
	}
	if im.Now.IsZero() {
		im.Now = time.Now()
	}
	var res ImportResult
	err := s.update(ctx, func(tx *bolt.Tx) error {
		res = ImportResult{}
		prev, err := s.readBootFloor(tx)
		if err != nil {
			return err
		}
		res.State = prev.State
		if im.State > prev.State {
			res.State, res.Raised = im.State, true
			if err := s.putState(tx, im.State); err != nil {
				return err
			}
		}
		meta := tx.Bucket(bucketMeta)
		if prev.New && im.BootID != "" {
			if err := meta.Put(keyBoot, []byte(im.BootID)); err != nil {
				return err
			}
		}
		for _, r := range im.Registrations {
			if r.Registered.IsZero() {
				r.Registered = im.Now
			}
			if err := putRegistration(tx, r); err != nil {
				return err
			}
		}
		res.Registrations = len(im.Registrations)
		owed := tx.Bucket(bucketOwed)
		for _, h := range im.Owed {
			if owed.Get([]byte(h)) != nil {
				continue
			}
			if err := owed.Put([]byte(h), owedValue(Owed{State: res.State, FirstOwed: im.Now, NextTry: im.Now})); err != nil {
				return err
			}
			res.Owed++
		}
		return nil
	})
	if err != nil {
		return ImportResult{}, fmt.Errorf("nsm: store %q: import: %w", s.path, err)
	}
	return res, nil
}
