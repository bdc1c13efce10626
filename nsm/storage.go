package nsm

import (
	"context"
	"fmt"
	"time"
)

// Storage is what the daemon needs of a durable store, whichever one holds
// the state: the local bbolt Store or a replicated one (nsm/etcdstore).
// Every change comes from a Core and is applied by Apply, which returns
// only once it is durable; concurrent Apply calls may share one commit
// (group commit). At start the daemon fills its Core from Boot,
// Registrations and Owed. The state number a Storage hands out never goes
// backwards.
type Storage interface {
	// Apply writes the changes a Core planned, durably, before the reply.
	Apply(ctx context.Context, changes []Change) error
	// Boot is what the store remembers of the last start (state number
	// and boot id).
	Boot() (Boot, error)
	// Registrations lists the registrations in force, by mon_name.
	Registrations() ([]Registration, error)
	// Owed lists the notifications still owed, by host.
	Owed() ([]Owed, error)
	// Close waits for queued mutations, then releases the store.
	Close() error
}

var _ Storage = (*Store)(nil)

// StartCore is a daemon's start: it fills c (a new Core) from s, plans the
// reboot-versus-restart step (Core.Start; force as rpc.statd -n), writes
// it, and only then applies it to c.
func StartCore(ctx context.Context, s Storage, c *Core, bootID string, force bool, now time.Time) (StartResult, error) {
	regs, err := s.Registrations()
	if err != nil {
		return StartResult{}, err
	}
	b, err := s.Boot()
	if err != nil {
		return StartResult{}, err
	}
	owed, err := s.Owed()
	if err != nil {
		return StartResult{}, err
	}
	c.Load(regs)
	c.Restore(b, owed)
	rd, res, err := c.Start(bootID, force, now)
	if err != nil {
		return StartResult{}, err
	}
	if err := s.Apply(ctx, rd.Persist); err != nil {
		return StartResult{}, fmt.Errorf("start: %w", err)
	}
	c.Apply(rd.Persist)
	return res, nil
}

// TakeOver is a statd's start on an identity it just won from another
// (or that nobody served): it fills c (a new Core) from s, plans the move
// of the identity's state to the next odd number with every monitored host
// owed it and the registrations kept (the SM_SIMU_CRASH step: the lock
// manager serving the identity reclaims, its registrations stand), writes
// it, and only then applies it to c. It returns the new state.
func TakeOver(ctx context.Context, s Storage, c *Core, now time.Time) (int32, error) {
	regs, err := s.Registrations()
	if err != nil {
		return 0, err
	}
	b, err := s.Boot()
	if err != nil {
		return 0, err
	}
	owed, err := s.Owed()
	if err != nil {
		return 0, err
	}
	c.Load(regs)
	c.Restore(b, owed)
	rd, state, err := c.SimuCrash(now)
	if err != nil {
		return 0, err
	}
	if err := s.Apply(ctx, rd.Persist); err != nil {
		return 0, fmt.Errorf("takeover: %w", err)
	}
	c.Apply(rd.Persist)
	return state, nil
}
