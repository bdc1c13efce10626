package oncrpc

import (
	"errors"
	"fmt"
)

// AcceptStat is the status of an accepted reply.
type AcceptStat uint32

const (
	Success      AcceptStat = 0
	ProgUnavail  AcceptStat = 1
	ProgMismatch AcceptStat = 2
	ProcUnavail  AcceptStat = 3
	GarbageArgs  AcceptStat = 4
	SystemErr    AcceptStat = 5
)

func (s AcceptStat) String() string {
	switch s {
	case Success:
		return "SUCCESS"
	case ProgUnavail:
		return "PROG_UNAVAIL"
	case ProgMismatch:
		return "PROG_MISMATCH"
	case ProcUnavail:
		return "PROC_UNAVAIL"
	case GarbageArgs:
		return "GARBAGE_ARGS"
	case SystemErr:
		return "SYSTEM_ERR"
	}
	return fmt.Sprintf("accept status %d", uint32(s))
}

// RejectStat is the status of a denied reply.
type RejectStat uint32

const (
	RPCMismatch   RejectStat = 0
	AuthErrorStat RejectStat = 1 // AUTH_ERROR; the AuthStat says why
)

func (s RejectStat) String() string {
	switch s {
	case RPCMismatch:
		return "RPC_MISMATCH"
	case AuthErrorStat:
		return "AUTH_ERROR"
	}
	return fmt.Sprintf("reject status %d", uint32(s))
}

// AuthStat says why a call was denied with AUTH_ERROR.
type AuthStat uint32

const (
	AuthOK           AuthStat = 0
	AuthBadCred      AuthStat = 1 // bad credential (seal broken)
	AuthRejectedCred AuthStat = 2 // client must begin a new session
	AuthBadVerf      AuthStat = 3 // bad verifier (seal broken)
	AuthRejectedVerf AuthStat = 4 // verifier expired or replayed
	AuthTooWeak      AuthStat = 5 // rejected for security reasons
	AuthInvalidResp  AuthStat = 6 // bogus response verifier
	AuthFailed       AuthStat = 7 // reason unknown
)

func (s AuthStat) String() string {
	switch s {
	case AuthOK:
		return "AUTH_OK"
	case AuthBadCred:
		return "AUTH_BADCRED"
	case AuthRejectedCred:
		return "AUTH_REJECTEDCRED"
	case AuthBadVerf:
		return "AUTH_BADVERF"
	case AuthRejectedVerf:
		return "AUTH_REJECTEDVERF"
	case AuthTooWeak:
		return "AUTH_TOOWEAK"
	case AuthInvalidResp:
		return "AUTH_INVALIDRESP"
	case AuthFailed:
		return "AUTH_FAILED"
	}
	return fmt.Sprintf("auth status %d", uint32(s))
}

// AcceptError is an accepted reply whose status is not SUCCESS. Low and High
// are the supported versions of a PROG_MISMATCH.
type AcceptError struct {
	Stat      AcceptStat
	Low, High uint32
}

func (e *AcceptError) Error() string {
	switch e.Stat {
	case ProgUnavail:
		return "program not served (PROG_UNAVAIL)"
	case ProgMismatch:
		return fmt.Sprintf("program version not served (PROG_MISMATCH: versions %d to %d are)", e.Low, e.High)
	case ProcUnavail:
		return "procedure not served (PROC_UNAVAIL)"
	case GarbageArgs:
		return "server could not decode the arguments (GARBAGE_ARGS)"
	case SystemErr:
		return "server failed to carry out the call (SYSTEM_ERR)"
	}
	return "call accepted but failed: " + e.Stat.String()
}

// Is makes errors.Is(err, ErrProgMismatch) and the like match on the status
// alone.
func (e *AcceptError) Is(target error) bool {
	t, ok := target.(*AcceptError)
	return ok && t.Stat == e.Stat
}

// RejectError is a denied reply: RPC_MISMATCH with the supported RPC versions
// Low and High, or AUTH_ERROR with the reason Auth.
type RejectError struct {
	Stat      RejectStat
	Low, High uint32
	Auth      AuthStat
}

func (e *RejectError) Error() string {
	if e.Stat == RPCMismatch {
		return fmt.Sprintf("call denied: RPC version not served (RPC_MISMATCH: versions %d to %d are)", e.Low, e.High)
	}
	if e.Stat == AuthErrorStat {
		return "call denied: AUTH_ERROR " + e.Auth.String()
	}
	return "call denied: " + e.Stat.String()
}

// Is matches on the reject status and, for AUTH_ERROR, on a non-zero Auth of
// the target, so errors.Is(err, ErrAuth) matches every AUTH_ERROR.
func (e *RejectError) Is(target error) bool {
	t, ok := target.(*RejectError)
	if !ok || t.Stat != e.Stat {
		return false
	}
	return e.Stat != AuthErrorStat || t.Auth == AuthOK || t.Auth == e.Auth
}

// Errors a handler returns to pick the reply status, and that errors.Is
// matches against what the client returns.
var (
	ErrProgUnavail  error = &AcceptError{Stat: ProgUnavail}
	ErrProgMismatch error = &AcceptError{Stat: ProgMismatch}
	ErrProcUnavail  error = &AcceptError{Stat: ProcUnavail}
	ErrGarbageArgs  error = &AcceptError{Stat: GarbageArgs}
	ErrSystem       error = &AcceptError{Stat: SystemErr}
	ErrRPCMismatch  error = &RejectError{Stat: RPCMismatch}
	// ErrAuth matches every AUTH_ERROR denial; AuthError(s) matches one.
	ErrAuth error = &RejectError{Stat: AuthErrorStat}
)

// AuthError returns the error with which a handler denies a call with
// AUTH_ERROR s.
func AuthError(s AuthStat) error { return &RejectError{Stat: AuthErrorStat, Auth: s} }

// ErrDrop, returned by a handler, sends no reply at all; a UDP client will
// retransmit. It suits flood control.
var ErrDrop = errors.New("oncrpc: call dropped without reply")
