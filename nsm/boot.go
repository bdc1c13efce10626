package nsm

import (
	"errors"
	"math"
)

// ErrStateExhausted means the state number cannot move on without leaving
// int32; it would take a billion reboots.
var ErrStateExhausted = errors.New("nsm: state number cannot grow past 2147483647")

// NextUpState is the next odd state number strictly above s: the number
// announced after a reboot. An even (down) state moves by one, an odd (up)
// state by two, so the sequence never decreases and is odd afterwards.
func NextUpState(s int32) (int32, error) {
	if s < 0 {
		s = 0 // never written by us; treat as a fresh store
	}
	step := int32(1)
	if s%2 == 1 {
		step = 2
	}
	if s > math.MaxInt32-step {
		return 0, ErrStateExhausted
	}
	return s + step, nil
}

// Boot is what the store remembers about the last start.
type Boot struct {
	New    bool   // the store had never been started
	BootID string // host boot id seen at the last start
	State  int32
}

// StartDecision is the outcome of the reboot-versus-restart step.
type StartDecision struct {
	Reboot bool   // the host rebooted (or a reboot was forced)
	Reason string // why, for the log
	State  int32  // the state number from now on
}

// DecideStart is the pure reboot-versus-restart rule. A reboot (new store,
// boot id changed, or forced as by `rpc.statd -n`) moves to the next odd
// state; the caller then owes notifications to every monitored host and
// drops the registrations, whose registrants died with the host. A daemon
// restart within the same boot keeps state and registrations: the kernel's
// lock manager still holds its locks and will not register again.
func DecideStart(prev Boot, bootID string, force bool) (StartDecision, error) {
	var reason string
	switch {
	case force:
		reason = "reboot forced"
	case prev.New:
		reason = "new store"
	case prev.BootID != bootID:
		reason = "boot id changed"
	default:
		if prev.State%2 == 0 {
			// A restart must not announce a down state; this happens only if
			// an old store was written by another implementation.
			s, err := NextUpState(prev.State)
			return StartDecision{State: s, Reason: "restart with even state"}, err
		}
		return StartDecision{State: prev.State, Reason: "daemon restart within the same boot"}, nil
	}
	s, err := NextUpState(prev.State)
	return StartDecision{Reboot: true, State: s, Reason: reason}, err
}
