// Package oncrpc implements ONC RPC version 2 (RFC 5531): call and reply
// messages with every accept and reject status, the AUTH_NONE and AUTH_SYS
// credential flavors, record marking for stream transports, a concurrent
// server over UDP and TCP (IPv4 and IPv6), and a client with UDP
// retransmission, TCP reconnection and optional binding to a privileged port.
//
// A server dispatches each call to the Handler registered for its program,
// version and procedure. Handlers run concurrently, each in its own goroutine
// under a bound, so a slow handler never holds up other callers. A handler
// reports failure with an error: ErrGarbageArgs, ErrSystem, ErrProcUnavail
// and the other sentinels become the matching accept status, AuthError(x)
// denies the call with AUTH_ERROR x, ErrDrop sends no reply at all, and any
// other error becomes SYSTEM_ERR.
//
// Local callers (loopback addresses and unix sockets) and remote ones draw on
// separate handler and connection slots, and remote peers are further bounded
// per address and by shorter idle timeouts, so no remote traffic can starve a
// local caller; docs/security.md states every bound.
//
// The client turns every status other than SUCCESS into an *AcceptError or a
// *RejectError, which errors.Is matches against the same sentinels.
//
// Credentials: AUTH_NONE and AUTH_SYS are accepted. A call with AUTH_SHORT is
// denied with AUTH_REJECTEDCRED (we never hand out short-hand credentials, so
// the client should start again with its full ones); any other flavor, or a
// credential whose body does not decode, is denied with AUTH_BADCRED, as the
// Linux kernel's RPC server does. The verifier of a call must be AUTH_NONE,
// otherwise the call is denied with AUTH_BADVERF.
package oncrpc
