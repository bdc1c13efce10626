package nsm

import (
	"context"
	"time"
)

// Storage is what the daemon needs of a durable store, whichever one holds
// the state: the local bbolt Store or a replicated one (nsm/etcdstore).
// Every mutation returns only once it is durable; concurrent Apply calls
// may share one commit (group commit). The state number a Storage hands
// out never goes backwards and is never handed out twice.
type Storage interface {
	// Apply writes the changes a Core planned, durably, before the reply.
	Apply(ctx context.Context, changes []Change) error
	// State is the current state number (0 before the first Start).
	State() (int32, error)
	// Start is the reboot-versus-restart step (DecideStart) of a start.
	Start(bootID string, now time.Time) (StartResult, error)
	// Reboot is Start as `rpc.statd -n` runs it.
	Reboot(bootID string, now time.Time) (StartResult, error)
	// SimulateCrash moves an up state on by two and owes every host.
	SimulateCrash(ctx context.Context, now time.Time) (int32, error)
	// Registrations lists the registrations in force, by mon_name.
	Registrations() ([]Registration, error)
	// Owed lists the notifications still owed, by host.
	Owed() ([]Owed, error)
	// MarkNotified, Reschedule and GiveUp record an attempt's outcome.
	MarkNotified(ctx context.Context, host string, state int32) (bool, error)
	Reschedule(ctx context.Context, host string, next time.Time, attempts int) error
	GiveUp(ctx context.Context, host string, state int32, now time.Time) (bool, error)
	// Close waits for queued mutations, then releases the store.
	Close() error
}

var _ Storage = (*Store)(nil)
