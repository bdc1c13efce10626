package oncrpc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hoststat/hoststat/oncrpc/xdr"
)

// Handler carries out one call. It decodes its arguments from call.Args,
// appends its results to results (never resetting it) and returns nil, or
// returns an error that picks the reply: see the package documentation. An
// error wrapping xdr.ErrTruncated or *xdr.LengthError means GARBAGE_ARGS, and
// so does returning nil while call.Args holds an error. ctx is cancelled when
// a Shutdown runs out of time.
type Handler func(ctx context.Context, call *Call, results *xdr.Encoder) error

// Call is what a handler learns about the call it serves.
type Call struct {
	CallHeader
	// AuthSys is the decoded credential when the flavor is AUTH_SYS.
	AuthSys *AuthSysParms
	// Remote and Local are the peer's and our address; IPv4-mapped IPv6
	// addresses are unmapped, so a loopback check is Remote.Addr().IsLoopback().
	// Both are zero on a unix socket.
	Remote, Local netip.AddrPort
	// Transport is "udp", "tcp" or "unix".
	Transport string
	Args      *xdr.Decoder
}

// Defaults for the Server's limits on local callers (loopback, unix).
const (
	DefaultIdleTimeout = 5 * time.Minute
	DefaultMaxConns    = 256
	DefaultMaxInFlight = 1024
)

// Server serves registered programs over any number of UDP sockets and TCP
// (or unix) listeners. Set its fields before the first Handle or Serve call.
//
// Local callers (loopback addresses and unix sockets) and remote ones have
// separate handler slots and connection slots (see PeerStats): the limits
// named Remote bound remote peers, the others local callers.
type Server struct {
	Logger *slog.Logger // nil: slog.Default()
	// MaxRecordSize caps a record on a connection; a larger one closes the
	// connection. 0: DefaultMaxRecordSize.
	MaxRecordSize int
	// IdleTimeout closes a local connection with no call in progress and no
	// bytes received for that long. 0: DefaultIdleTimeout; negative: never.
	IdleTimeout time.Duration
	// RemoteIdleTimeout is IdleTimeout for remote connections.
	// 0: DefaultRemoteIdleTimeout; negative: never.
	RemoteIdleTimeout time.Duration
	// RecordTimeout closes a connection that starts a record and does not
	// complete it within that long, however slowly its bytes trickle in.
	// 0: DefaultRecordTimeout; negative: never.
	RecordTimeout time.Duration
	// MaxConns bounds open local connections; more are closed at once.
	// 0: DefaultMaxConns.
	MaxConns int
	// MaxRemoteConns bounds open remote connections in all, and
	// MaxConnsPerRemote those from one address; more are closed at once.
	// 0: DefaultMaxRemoteConns, DefaultMaxConnsPerRemote.
	MaxRemoteConns, MaxConnsPerRemote int
	// MaxInFlight bounds local callers' handlers running at once; past it
	// the server stops reading local calls until one finishes.
	// 0: DefaultMaxInFlight.
	MaxInFlight int
	// MaxRemoteInFlight bounds remote callers' handlers running at once;
	// past it a remote connection waits and remote datagrams are dropped
	// (their senders retransmit). 0: DefaultMaxRemoteInFlight.
	MaxRemoteInFlight int
	// ReplyCacheSize bounds the reply cache of HandleOnce procedures.
	// 0: DefaultReplyCacheSize.
	ReplyCacheSize int

	mu        sync.RWMutex
	once      map[[3]uint32]bool // procedures registered with HandleOnce
	replies   *replyCache
	progs     map[uint32]map[uint32]map[uint32]Handler
	packets   map[net.PacketConn]struct{}
	listeners map[net.Listener]struct{}
	conns     map[net.Conn]struct{}
	perRemote map[netip.Addr]int // open connections per remote address
	closing   atomic.Bool
	initOnce  sync.Once
	local     *peerClass
	remote    *peerClass
	done      chan struct{}
	ctx       context.Context
	cancel    context.CancelFunc
	active    sync.WaitGroup
	warned    sync.Map // kinds of trouble already logged at warning level

	calls, malformed, oversize, dropped atomic.Uint64
}

// ServerStats counts what a Server has seen.
type ServerStats struct {
	Calls        uint64 // well-formed calls answered or dropped
	Malformed    uint64 // messages that were no call header, dropped
	Oversize     uint64 // connections closed for a record over the cap
	RefusedConns uint64 // connections closed at once for being over a limit (both classes)
	IdleClosed   uint64 // connections closed by an idle timeout (both classes)
	Dropped      uint64 // calls a handler dropped with ErrDrop
	// Local and Remote count each class of callers on its own.
	Local, Remote PeerStats
}

// Stats returns the server's counters.
func (s *Server) Stats() ServerStats {
	s.init()
	l, r := s.local.stats(), s.remote.stats()
	return ServerStats{
		Calls: s.calls.Load(), Malformed: s.malformed.Load(), Oversize: s.oversize.Load(),
		RefusedConns: l.ConnsRefused + r.ConnsRefused, IdleClosed: l.IdleTimeouts + r.IdleTimeouts,
		Dropped: s.dropped.Load(), Local: l, Remote: r,
	}
}

func (s *Server) init() {
	s.initOnce.Do(func() {
		s.local = newPeerClass(true, limit(s.MaxInFlight, DefaultMaxInFlight),
			limit(s.MaxConns, DefaultMaxConns), orDefault(s.IdleTimeout, DefaultIdleTimeout))
		s.remote = newPeerClass(false, limit(s.MaxRemoteInFlight, DefaultMaxRemoteInFlight),
			limit(s.MaxRemoteConns, DefaultMaxRemoteConns), orDefault(s.RemoteIdleTimeout, DefaultRemoteIdleTimeout))
		s.done = make(chan struct{})
		s.ctx, s.cancel = context.WithCancel(context.Background())
		s.mu.Lock()
		if s.progs == nil {
			s.progs = map[uint32]map[uint32]map[uint32]Handler{}
		}
		s.packets = map[net.PacketConn]struct{}{}
		s.listeners = map[net.Listener]struct{}{}
		s.conns = map[net.Conn]struct{}{}
		s.perRemote = map[netip.Addr]int{}
		s.mu.Unlock()
	})
}

// class is the capacity a caller draws on.
func (s *Server) class(remote netip.AddrPort, transport string) *peerClass {
	if isLocalPeer(remote, transport) {
		return s.local
	}
	return s.remote
}

func (s *Server) logger() *slog.Logger {
	if s.Logger != nil {
		return s.Logger
	}
	return slog.Default()
}

// warnOnce logs the first trouble of a kind as a warning and later ones at
// debug level, so a flood of garbage cannot flood the log.
func (s *Server) warnOnce(kind, msg string, args ...any) {
	if _, seen := s.warned.LoadOrStore(kind, true); seen {
		s.logger().Debug(msg, args...)
		return
	}
	s.logger().Warn(msg+" (further ones logged at debug level)", args...)
}

// Handle registers h for a procedure. Registering any procedure of a version
// also answers that version's procedure 0 (NULL) with no results unless a
// handler is registered for it.
func (s *Server) Handle(prog, vers, proc uint32, h Handler) {
	s.init()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.progs[prog] == nil {
		s.progs[prog] = map[uint32]map[uint32]Handler{}
	}
	if s.progs[prog][vers] == nil {
		s.progs[prog][vers] = map[uint32]Handler{}
	}
	s.progs[prog][vers][proc] = h
}

func nullProc(context.Context, *Call, *xdr.Encoder) error { return nil }

// lookup finds the handler for a call or the accept error that answers it.
func (s *Server) lookup(prog, vers, proc uint32) (Handler, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	versions, ok := s.progs[prog]
	if !ok {
		return nil, ErrProgUnavail
	}
	procs, ok := versions[vers]
	if !ok {
		low, high := ^uint32(0), uint32(0)
		for v := range versions {
			low, high = min(low, v), max(high, v)
		}
		return nil, &AcceptError{Stat: ProgMismatch, Low: low, High: high}
	}
	if h, ok := procs[proc]; ok {
		return h, nil
	}
	if proc == 0 {
		return nullProc, nil
	}
	return nil, ErrProcUnavail
}

// checkAuth judges the credential and verifier; see the package doc.
func checkAuth(h *CallHeader) (*AuthSysParms, error) {
	if h.Verf.Flavor != AuthNone || len(h.Verf.Body) != 0 {
		return nil, AuthError(AuthBadVerf)
	}
	switch h.Cred.Flavor {
	case AuthNone:
		if len(h.Cred.Body) != 0 {
			return nil, AuthError(AuthBadCred)
		}
		return nil, nil
	case AuthSys:
		p, err := ParseAuthSys(h.Cred.Body)
		if err != nil {
			return nil, AuthError(AuthBadCred)
		}
		return &p, nil
	case AuthShort:
		return nil, AuthError(AuthRejectedCred)
	}
	return nil, AuthError(AuthBadCred)
}

// replyReserve is room for a record mark and a SUCCESS reply header, filled
// in after the handler has appended its results.
const replyReserve = 4 + 24

// handle serves one well-formed call (or one whose header already earned a
// rejection in perr) and returns the reply as a record (mark included), or
// nil for no reply.
func (s *Server) handle(h CallHeader, args []byte, perr error, remote, local netip.AddrPort, transport string) []byte {
	s.calls.Add(1)
	fail := func(err error) []byte { return errorReply(h.XID, err) }
	if perr != nil {
		return fail(perr)
	}
	cred, err := checkAuth(&h)
	if err != nil {
		return fail(err)
	}
	handler, err := s.lookup(h.Program, h.Version, h.Procedure)
	if err != nil {
		return fail(err)
	}
	if s.isOnce(&h) {
		k := replyKey{remote: remote, transport: transport, xid: h.XID, prog: h.Program, vers: h.Version, proc: h.Procedure}
		fresh, reply := s.replies.begin(k)
		if !fresh {
			return reply // a retransmission: the first reply, or none yet
		}
		reply = s.run1(h, cred, handler, args, remote, local, transport)
		s.replies.finish(k, reply)
		return reply
	}
	return s.run1(h, cred, handler, args, remote, local, transport)
}

// errorReply is the reply record answering call xid with err.
func errorReply(xid uint32, err error) []byte {
	e := xdr.NewEncoder(make([]byte, 4, 40))
	appendReplyHeader(e, xid, err)
	b := e.Bytes()
	markRecord(b)
	return b
}

// run1 runs the handler of one call and returns its reply record (nil: none).
func (s *Server) run1(h CallHeader, cred *AuthSysParms, handler Handler, args []byte, remote, local netip.AddrPort, transport string) []byte {
	fail := func(err error) []byte { return errorReply(h.XID, err) }
	call := &Call{CallHeader: h, AuthSys: cred, Remote: remote, Local: local, Transport: transport, Args: xdr.NewDecoder(args)}
	e := xdr.NewEncoder(make([]byte, replyReserve, 256))
	err := s.run(handler, call, e)
	if err == nil && call.Args.Err() != nil {
		// The handler ignored a decoding failure; its results are not to be trusted.
		err = fmt.Errorf("%w: %v", ErrGarbageArgs, call.Args.Err())
	}
	if err == nil && e.Len() < replyReserve {
		err = errors.New("handler reset its results encoder")
	}
	if err != nil {
		err = s.replyError(call, err)
		if err == ErrDrop {
			s.dropped.Add(1)
			return nil
		}
		return fail(err)
	}
	b := e.Bytes()
	hdr := xdr.NewEncoder(b[4:4])
	appendReplyHeader(hdr, h.XID, nil)
	markRecord(b)
	return b
}

// run calls the handler, turning a panic into SYSTEM_ERR rather than a crash.
func (s *Server) run(h Handler, call *Call, e *xdr.Encoder) (err error) {
	defer func() {
		if p := recover(); p != nil {
			s.logger().Error("oncrpc: handler panicked", "program", call.Program, "version", call.Version,
				"procedure", call.Procedure, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			err = ErrSystem
		}
	}()
	return h(s.ctx, call, e)
}

// replyError maps a handler's error to what the reply carries.
func (s *Server) replyError(call *Call, err error) error {
	var acc *AcceptError
	var rej *RejectError
	var le *xdr.LengthError
	switch {
	case errors.Is(err, ErrDrop):
		return ErrDrop
	case errors.As(err, &rej):
		return rej
	case errors.As(err, &acc):
		return acc
	case errors.Is(err, xdr.ErrTruncated), errors.As(err, &le):
		return ErrGarbageArgs
	}
	s.logger().Error("oncrpc: handler failed", "program", call.Program, "version", call.Version,
		"procedure", call.Procedure, "remote", call.Remote.String(), "err", err)
	return ErrSystem
}

// ServeUDP answers calls arriving on pc until Shutdown, then waits for its
// handlers, closes pc and returns nil. A datagram that is no call is dropped.
// On Linux a *net.UDPConn bound to a wildcard address answers each call from
// the address it was sent to (IP_PKTINFO), as connected clients require, and
// Call.Local is that address.
func (s *Server) ServeUDP(pc net.PacketConn) error {
	s.init()
	s.mu.Lock()
	if s.closing.Load() {
		s.mu.Unlock()
		pc.Close()
		return nil
	}
	s.packets[pc] = struct{}{}
	s.active.Add(1)
	s.mu.Unlock()
	bound := addrPortOf(pc.LocalAddr())
	udp, _ := pc.(*net.UDPConn)
	var v6, pktinfo bool
	var oob []byte
	if udp != nil {
		v6, pktinfo = enablePacketInfo(udp)
		oob = make([]byte, 128)
	}
	var handlers sync.WaitGroup
	defer func() {
		handlers.Wait()
		s.mu.Lock()
		delete(s.packets, pc)
		s.mu.Unlock()
		pc.Close()
		s.active.Done()
	}()
	buf := make([]byte, 65536)
	for {
		if s.closing.Load() {
			return nil
		}
		var n, oobn int
		var remote netip.AddrPort
		var err error
		local := bound
		if udp != nil {
			n, oobn, _, remote, err = udp.ReadMsgUDPAddrPort(buf, oob)
		} else {
			var a net.Addr
			n, a, err = pc.ReadFrom(buf)
			remote = addrPortOf(a)
		}
		if err != nil {
			if s.closing.Load() {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			s.warnOnce("udp-read", "oncrpc: reading a datagram failed", "local", bound.String(), "err", err)
			time.Sleep(10 * time.Millisecond) // do not spin on a persistent error
			continue
		}
		from := remote // as the socket knows it: a dual-stack one answers to the mapped form
		remote = unmap(remote)
		// A remote datagram never waits for a handler slot: while the
		// loop waited, local calls would queue behind it in the socket.
		class := s.class(remote, "udp")
		if !class.local && !class.tryAcquire() {
			class.callsShed.Add(1)
			continue
		}
		var source []byte // the control message choosing the reply's source
		if pktinfo {
			if dst, ifindex, ok := packetDest(oob[:oobn]); ok {
				local = unmap(netip.AddrPortFrom(dst, bound.Port()))
				source = replySourceOOB(dst, ifindex, v6)
			}
		}
		h, args, perr := ParseCall(buf[:n])
		if errors.Is(perr, ErrMalformed) {
			if !class.local {
				class.release()
			}
			s.malformed.Add(1)
			s.warnOnce("malformed", "oncrpc: dropped a message that is no call", "transport", "udp",
				"remote", remote.String(), "err", perr)
			continue
		}
		msg := make([]byte, len(args))
		copy(msg, args)
		if class.local && !class.acquire(s.done) {
			return nil
		}
		handlers.Add(1)
		s.active.Add(1)
		go func() {
			defer s.active.Done()
			defer handlers.Done()
			defer class.release()
			reply := s.handle(h, msg, perr, remote, local, "udp")
			if reply == nil {
				return
			}
			var err error
			if udp != nil {
				_, _, err = udp.WriteMsgUDPAddrPort(reply[4:], source, from)
			} else {
				_, err = pc.WriteTo(reply[4:], net.UDPAddrFromAddrPort(remote))
			}
			if err != nil && !s.closing.Load() {
				s.warnOnce("udp-write", "oncrpc: sending a reply failed", "remote", remote.String(), "err", err)
			}
		}()
	}
}

// ServeTCP accepts connections on l (TCP or unix) and answers the records
// on each until Shutdown; it closes l and returns nil then.
func (s *Server) ServeTCP(l net.Listener) error {
	s.init()
	s.mu.Lock()
	if s.closing.Load() {
		s.mu.Unlock()
		l.Close()
		return nil
	}
	s.listeners[l] = struct{}{}
	s.active.Add(1)
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, l)
		s.mu.Unlock()
		l.Close()
		s.active.Done()
	}()
	backoff := 5 * time.Millisecond
	for {
		c, err := l.Accept()
		if err != nil {
			if s.closing.Load() {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			// Out of descriptors and the like pass; wait rather than spin.
			s.warnOnce("accept", "oncrpc: accepting a connection failed", "listener", l.Addr().String(), "err", err)
			time.Sleep(backoff)
			backoff = min(2*backoff, time.Second)
			continue
		}
		backoff = 5 * time.Millisecond
		transport := "tcp"
		if c.LocalAddr().Network() == "unix" {
			transport = "unix"
		}
		remote := unmap(addrPortOf(c.RemoteAddr()))
		class := s.class(remote, transport)
		s.mu.Lock()
		if s.closing.Load() {
			s.mu.Unlock()
			c.Close()
			return nil
		}
		if over := s.overLimit(class, remote.Addr()); over != "" {
			s.mu.Unlock()
			class.refused.Add(1)
			s.warnOnce("conns-"+over, "oncrpc: closing a new connection: too many "+over,
				"remote", remote.String(), "class", class.name())
			c.Close()
			continue
		}
		s.conns[c] = struct{}{}
		class.conns.Add(1)
		if !class.local {
			s.perRemote[remote.Addr()]++
		}
		s.active.Add(1)
		s.mu.Unlock()
		go s.serveConn(c, class, remote, transport)
	}
}

// overLimit names the limit a new connection from addr would exceed, or
// returns "". s.mu is held.
func (s *Server) overLimit(class *peerClass, addr netip.Addr) string {
	switch {
	case class.conns.Load() >= int64(class.maxConns):
		return class.name() + " connections"
	case !class.local && s.perRemote[addr] >= limit(s.MaxConnsPerRemote, DefaultMaxConnsPerRemote):
		return "connections from one address"
	}
	return ""
}

// serveConn reads the records of one connection and hands each call to a
// handler under class's bound. Waiting for a record is bounded by the
// class's idle timeout, and reading one, once its first byte is in, by
// RecordTimeout: a peer trickling bytes cannot hold a slot for longer.
func (s *Server) serveConn(c net.Conn, class *peerClass, remote netip.AddrPort, transport string) {
	defer s.active.Done()
	var handlers sync.WaitGroup
	var inFlight atomic.Int32
	var wmu sync.Mutex
	defer func() {
		handlers.Wait() // replies still owed go out before the close
		s.mu.Lock()
		delete(s.conns, c)
		class.conns.Add(-1)
		if !class.local {
			if s.perRemote[remote.Addr()]--; s.perRemote[remote.Addr()] <= 0 {
				delete(s.perRemote, remote.Addr())
			}
		}
		s.mu.Unlock()
		c.Close()
	}()
	local := unmap(addrPortOf(c.LocalAddr()))
	recordTimeout := orDefault(s.RecordTimeout, DefaultRecordTimeout)
	// deadline sets the read deadline d from now (none if d < 0) and
	// reports whether the server is still serving: a Shutdown's deadline
	// set before this one is seen through closing.
	deadline := func(d time.Duration) bool {
		var t time.Time
		if d > 0 {
			t = time.Now().Add(d)
		}
		c.SetReadDeadline(t)
		return !s.closing.Load()
	}
	rr := NewRecordReader(c, s.MaxRecordSize)
	for {
		if !deadline(class.idle) {
			return
		}
		if err := rr.Await(); err != nil {
			switch {
			case s.closing.Load():
			case isTimeout(err) && inFlight.Load() > 0:
				continue // not idle: a handler is still working for this peer
			case isTimeout(err):
				class.idleTimeouts.Add(1)
				s.logger().Debug("oncrpc: closing idle connection", "remote", remote.String(), "class", class.name())
			}
			return
		}
		if !deadline(recordTimeout) {
			return
		}
		rec, err := rr.ReadRecord()
		if err != nil {
			switch {
			case s.closing.Load():
			case isTimeout(err):
				class.recordTimeouts.Add(1)
				s.warnOnce("record-timeout", "oncrpc: closing a connection that did not complete a record in time",
					"remote", remote.String(), "class", class.name(), "timeout", recordTimeout)
			case errors.Is(err, ErrRecordTooLarge):
				s.oversize.Add(1)
				s.warnOnce("oversize", "oncrpc: closing a connection that sent an oversize record",
					"remote", remote.String(), "err", err)
				c.Close() // at once: the stream is out of step
			}
			return
		}
		h, args, perr := ParseCall(rec)
		if errors.Is(perr, ErrMalformed) {
			s.malformed.Add(1)
			s.warnOnce("malformed", "oncrpc: closing a connection that sent a message that is no call",
				"transport", transport, "remote", remote.String(), "err", perr)
			c.Close()
			return
		}
		if !class.acquire(s.done) {
			return
		}
		handlers.Add(1)
		inFlight.Add(1)
		go func() {
			defer handlers.Done()
			defer inFlight.Add(-1)
			defer class.release()
			reply := s.handle(h, args, perr, remote, local, transport)
			if reply == nil {
				return
			}
			wmu.Lock()
			defer wmu.Unlock()
			if _, err := c.Write(reply); err != nil && !s.closing.Load() {
				s.logger().Debug("oncrpc: sending a reply failed", "remote", remote.String(), "err", err)
			}
		}()
	}
}

// Shutdown stops reading new calls, lets the handlers in flight finish and
// send their replies, and closes every socket. If ctx ends first, it cancels
// the handlers' context, closes everything at once and returns ctx.Err().
func (s *Server) Shutdown(ctx context.Context) error {
	s.init()
	s.mu.Lock()
	if !s.closing.Swap(true) {
		close(s.done)
	}
	past := time.Unix(1, 0)
	for l := range s.listeners {
		l.Close()
	}
	for pc := range s.packets {
		pc.SetReadDeadline(past)
	}
	for c := range s.conns {
		c.SetReadDeadline(past)
	}
	s.mu.Unlock()
	finished := make(chan struct{})
	go func() {
		s.active.Wait()
		close(finished)
	}()
	select {
	case <-finished:
		return nil
	case <-ctx.Done():
	}
	s.cancel()
	s.mu.Lock()
	for pc := range s.packets {
		pc.Close()
	}
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	return ctx.Err()
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func addrPortOf(a net.Addr) netip.AddrPort {
	switch a := a.(type) {
	case *net.UDPAddr:
		return a.AddrPort()
	case *net.TCPAddr:
		return a.AddrPort()
	}
	return netip.AddrPort{}
}

func unmap(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}
