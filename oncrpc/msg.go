package oncrpc

import (
	"errors"
	"fmt"

	"github.com/hoststat/hoststat/oncrpc/xdr"
)

// RPCVersion is the only version of the RPC protocol spoken here.
const RPCVersion = 2

// MaxAuthBody is the largest credential or verifier body RFC 5531 allows.
const MaxAuthBody = 400

const (
	msgCall  = 0
	msgReply = 1

	replyAccepted = 0
	replyDenied   = 1
)

// ErrMalformed means a message is not a well-formed RPC call or reply; a
// server drops such a datagram or closes such a connection without a reply.
var ErrMalformed = errors.New("oncrpc: malformed message")

// AuthFlavor names a credential or verifier flavor.
type AuthFlavor uint32

const (
	AuthNone  AuthFlavor = 0
	AuthSys   AuthFlavor = 1 // also known as AUTH_UNIX
	AuthShort AuthFlavor = 2
	AuthDH    AuthFlavor = 3
	RPCSecGSS AuthFlavor = 6
)

func (f AuthFlavor) String() string {
	switch f {
	case AuthNone:
		return "AUTH_NONE"
	case AuthSys:
		return "AUTH_SYS"
	case AuthShort:
		return "AUTH_SHORT"
	case AuthDH:
		return "AUTH_DH"
	case RPCSecGSS:
		return "RPCSEC_GSS"
	}
	return fmt.Sprintf("flavor %d", uint32(f))
}

// OpaqueAuth is a credential or verifier: a flavor and at most 400 bytes.
type OpaqueAuth struct {
	Flavor AuthFlavor
	Body   []byte
}

func (a OpaqueAuth) encode(e *xdr.Encoder) {
	e.Uint32(uint32(a.Flavor))
	e.Opaque(a.Body)
}

func decodeOpaqueAuth(d *xdr.Decoder, what string) OpaqueAuth {
	f := AuthFlavor(d.Uint32())
	b := d.Opaque(what, MaxAuthBody)
	return OpaqueAuth{Flavor: f, Body: b}
}

// AuthSysParms is the body of an AUTH_SYS credential.
type AuthSysParms struct {
	Stamp       uint32
	MachineName string // at most 255 bytes
	UID, GID    uint32
	GIDs        []uint32 // at most 16
}

const (
	maxMachineName = 255
	maxAuthSysGIDs = 16
)

// Auth encodes p as an AUTH_SYS credential. Over-long names and gid lists are
// an error rather than something a server would reject later.
func (p AuthSysParms) Auth() (OpaqueAuth, error) {
	if len(p.MachineName) > maxMachineName {
		return OpaqueAuth{}, fmt.Errorf("oncrpc: AUTH_SYS machine name is %d bytes, max %d", len(p.MachineName), maxMachineName)
	}
	if len(p.GIDs) > maxAuthSysGIDs {
		return OpaqueAuth{}, fmt.Errorf("oncrpc: AUTH_SYS has %d gids, max %d", len(p.GIDs), maxAuthSysGIDs)
	}
	e := xdr.NewEncoder(make([]byte, 0, 32+len(p.MachineName)+4*len(p.GIDs)))
	e.Uint32(p.Stamp)
	e.String(p.MachineName)
	e.Uint32(p.UID)
	e.Uint32(p.GID)
	e.Uint32(uint32(len(p.GIDs)))
	for _, g := range p.GIDs {
		e.Uint32(g)
	}
	return OpaqueAuth{Flavor: AuthSys, Body: e.Bytes()}, nil
}

// ParseAuthSys decodes the body of an AUTH_SYS credential. The whole body
// must be used: trailing bytes mean a malformed credential.
func ParseAuthSys(body []byte) (AuthSysParms, error) {
	d := xdr.NewDecoder(body)
	var p AuthSysParms
	p.Stamp = d.Uint32()
	p.MachineName = d.String("machinename", maxMachineName)
	p.UID = d.Uint32()
	p.GID = d.Uint32()
	n := d.Uint32()
	if d.Err() == nil && n > maxAuthSysGIDs {
		d.Fail(&xdr.LengthError{What: "gids", Len: n, Max: maxAuthSysGIDs})
	}
	if d.Err() == nil && n > 0 {
		p.GIDs = make([]uint32, n)
		for i := range p.GIDs {
			p.GIDs[i] = d.Uint32()
		}
	}
	if d.Err() == nil && d.Remaining() != 0 {
		d.Fail(fmt.Errorf("%d bytes after the gids", d.Remaining()))
	}
	if err := d.Err(); err != nil {
		return AuthSysParms{}, fmt.Errorf("oncrpc: AUTH_SYS credential: %w", err)
	}
	return p, nil
}

// CallHeader is everything in a call message before the arguments.
type CallHeader struct {
	XID        uint32
	RPCVersion uint32 // 2 on everything we send
	Program    uint32
	Version    uint32
	Procedure  uint32
	Cred, Verf OpaqueAuth
}

// Encode appends the header; the arguments follow it directly.
func (h *CallHeader) Encode(e *xdr.Encoder) {
	e.Uint32(h.XID)
	e.Uint32(msgCall)
	e.Uint32(h.RPCVersion)
	e.Uint32(h.Program)
	e.Uint32(h.Version)
	e.Uint32(h.Procedure)
	h.Cred.encode(e)
	h.Verf.encode(e)
}

// ParseCall decodes a call message and returns its header and its argument
// bytes (aliasing msg). The error is:
//   - wrapping ErrMalformed when msg is not a call header at all: no reply is due;
//   - a *RejectError when a reply is due and the header says which: RPC_MISMATCH
//     for an rpcvers other than 2, AUTH_ERROR AUTH_BADCRED or AUTH_BADVERF when
//     the credential or verifier does not decode.
//
// The credential's flavor is not judged here; see the package documentation.
func ParseCall(msg []byte) (CallHeader, []byte, error) {
	d := xdr.NewDecoder(msg)
	var h CallHeader
	h.XID = d.Uint32()
	mtype := d.Uint32()
	h.RPCVersion = d.Uint32()
	if d.Err() != nil {
		return h, nil, fmt.Errorf("%w: %d-byte message is too short for a call header", ErrMalformed, len(msg))
	}
	if mtype != msgCall {
		return h, nil, fmt.Errorf("%w: message type %d is not CALL", ErrMalformed, mtype)
	}
	if h.RPCVersion != RPCVersion {
		return h, nil, &RejectError{Stat: RPCMismatch, Low: RPCVersion, High: RPCVersion}
	}
	h.Program = d.Uint32()
	h.Version = d.Uint32()
	h.Procedure = d.Uint32()
	if d.Err() != nil {
		return h, nil, fmt.Errorf("%w: call header truncated", ErrMalformed)
	}
	h.Cred = decodeOpaqueAuth(d, "credential")
	if d.Err() != nil {
		return h, nil, &RejectError{Stat: AuthErrorStat, Auth: AuthBadCred}
	}
	h.Verf = decodeOpaqueAuth(d, "verifier")
	if d.Err() != nil {
		return h, nil, &RejectError{Stat: AuthErrorStat, Auth: AuthBadVerf}
	}
	return h, d.Rest(), nil
}

// Reply is a decoded reply message.
type Reply struct {
	XID  uint32
	Verf OpaqueAuth // of an accepted reply
	// Err is nil for SUCCESS, else an *AcceptError or a *RejectError.
	Err error
	// Results are the bytes after the header of a SUCCESS reply, aliasing
	// the message.
	Results []byte
}

// ParseReply decodes a reply message. Its error, always wrapping
// ErrMalformed, means the message is no well-formed reply; a well-formed
// reply carrying a failure status has it in Reply.Err instead.
func ParseReply(msg []byte) (Reply, error) {
	d := xdr.NewDecoder(msg)
	var r Reply
	r.XID = d.Uint32()
	mtype := d.Uint32()
	stat := d.Uint32()
	if d.Err() != nil {
		return r, fmt.Errorf("%w: %d-byte message is too short for a reply header", ErrMalformed, len(msg))
	}
	if mtype != msgReply {
		return r, fmt.Errorf("%w: message type %d is not REPLY", ErrMalformed, mtype)
	}
	switch stat {
	case replyAccepted:
		r.Verf = decodeOpaqueAuth(d, "verifier")
		as := AcceptStat(d.Uint32())
		switch as {
		case Success:
			r.Results = d.Rest()
		case ProgMismatch:
			low, high := d.Uint32(), d.Uint32()
			r.Err = &AcceptError{Stat: as, Low: low, High: high}
		default:
			r.Err = &AcceptError{Stat: as}
		}
	case replyDenied:
		rs := RejectStat(d.Uint32())
		switch rs {
		case RPCMismatch:
			low, high := d.Uint32(), d.Uint32()
			r.Err = &RejectError{Stat: rs, Low: low, High: high}
		case AuthErrorStat:
			r.Err = &RejectError{Stat: rs, Auth: AuthStat(d.Uint32())}
		default:
			d.Fail(fmt.Errorf("reject status %d", uint32(rs)))
		}
	default:
		d.Fail(fmt.Errorf("reply status %d", stat))
	}
	if err := d.Err(); err != nil {
		return Reply{XID: r.XID}, fmt.Errorf("%w: reply: %v", ErrMalformed, err)
	}
	return r, nil
}

// appendReplyHeader appends the header of a reply carrying err: nil for
// SUCCESS (the results follow), an *AcceptError or a *RejectError.
func appendReplyHeader(e *xdr.Encoder, xid uint32, err error) {
	e.Uint32(xid)
	e.Uint32(msgReply)
	var rej *RejectError
	if errors.As(err, &rej) {
		e.Uint32(replyDenied)
		e.Uint32(uint32(rej.Stat))
		if rej.Stat == RPCMismatch {
			e.Uint32(rej.Low)
			e.Uint32(rej.High)
		} else {
			e.Uint32(uint32(rej.Auth))
		}
		return
	}
	e.Uint32(replyAccepted)
	OpaqueAuth{Flavor: AuthNone}.encode(e)
	if err == nil {
		e.Uint32(uint32(Success))
		return
	}
	acc := &AcceptError{Stat: SystemErr}
	errors.As(err, &acc)
	e.Uint32(uint32(acc.Stat))
	if acc.Stat == ProgMismatch {
		e.Uint32(acc.Low)
		e.Uint32(acc.High)
	}
}

// AppendReply appends a whole reply message: the header for err (nil,
// *AcceptError or *RejectError; anything else becomes SYSTEM_ERR) and, for
// SUCCESS, the results.
func AppendReply(e *xdr.Encoder, xid uint32, err error, results []byte) {
	appendReplyHeader(e, xid, err)
	if err == nil {
		e.FixedOpaque(results) // results are whole XDR units already
	}
}
