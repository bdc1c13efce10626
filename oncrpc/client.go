package oncrpc

import (
	"context"
	crand "crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"github.com/hoststat/hoststat/oncrpc/xdr"
)

// Client defaults.
const (
	DefaultCallTimeout    = 25 * time.Second // when ctx has no deadline, as libtirpc
	DefaultRetransmit     = 500 * time.Millisecond
	DefaultMaxRetransmit  = 4 * time.Second
	DefaultMaxReplySize   = 1 << 20
	privilegedPortLow     = 665
	privilegedPortHigh    = 1023
	bindresvportBlacklist = "/etc/bindresvport.blacklist"
	maxUDPDatagram        = 65535
	reconnectBackoffLimit = 2 * time.Second
	reconnectBackoffStart = 100 * time.Millisecond
)

// DialOption configures a Client.
type DialOption func(*dialOptions)

type dialOptions struct {
	privileged          bool
	cred                OpaqueAuth
	credErr             error
	retransmit, maxRetx time.Duration
	timeout             time.Duration
	maxReply            int
}

// WithPrivilegedPort binds the client's socket to a free port below 1024
// (665 to 1023, skipping those in /etc/bindresvport.blacklist), as
// bindresvport(3) does; servers such as the kernel's lock manager accept
// some calls only from such a port. It needs CAP_NET_BIND_SERVICE.
func WithPrivilegedPort() DialOption { return func(o *dialOptions) { o.privileged = true } }

// WithAuthSys sends p as an AUTH_SYS credential on every call.
func WithAuthSys(p AuthSysParms) DialOption {
	return func(o *dialOptions) { o.cred, o.credErr = p.Auth() }
}

// WithRetransmit sets the first UDP retransmission interval and the cap of
// its doubling.
func WithRetransmit(first, limit time.Duration) DialOption {
	return func(o *dialOptions) { o.retransmit, o.maxRetx = first, max(first, limit) }
}

// WithCallTimeout bounds calls whose context has no deadline.
func WithCallTimeout(d time.Duration) DialOption { return func(o *dialOptions) { o.timeout = d } }

// WithMaxReplySize caps a reply record on a stream transport.
func WithMaxReplySize(n int) DialOption { return func(o *dialOptions) { o.maxReply = n } }

// Caller makes calls to one server, as Client.Call does. Protocol clients
// built on oncrpc (rpcbind.NewClient) take a Caller, so a transport other
// than Client can reuse their encoding.
type Caller interface {
	Call(ctx context.Context, prog, vers, proc uint32, args func(*xdr.Encoder), result func(*xdr.Decoder) error) error
}

// Client calls one server. Its methods are safe for concurrent use; calls
// share one socket and are matched to replies by transaction id.
type Client struct {
	network, address string
	stream           bool
	opts             dialOptions

	mu     sync.Mutex
	conn   *clientConn // nil until (re)connected
	closed bool
	xids   *rand.ChaCha8 // seeded from crypto/rand: an xid is no guide to the next
}

// reply is a reply record, or the failure that ends the wait for one.
type reply struct {
	msg []byte
	err error
}

type clientConn struct {
	c      net.Conn
	peer   netip.AddrPort // the address called: a datagram from elsewhere is no reply
	wmu    sync.Mutex
	mu     sync.Mutex
	wait   map[uint32]chan reply
	err    error // set once the connection is dead
	stream bool
}

// Dial returns a client for the server at address on network ("udp",
// "udp4", "udp6", "tcp", "tcp4", "tcp6" or "unix"). A UDP client connects
// its socket so only the server's datagrams reach it; a stream client
// connects now and reconnects after a failure.
func Dial(ctx context.Context, network, address string, opts ...DialOption) (*Client, error) {
	var seed [32]byte
	crand.Read(seed[:]) // never fails (Go 1.24)
	c := &Client{network: network, address: address, xids: rand.NewChaCha8(seed)}
	c.opts = dialOptions{retransmit: DefaultRetransmit, maxRetx: DefaultMaxRetransmit,
		timeout: DefaultCallTimeout, maxReply: DefaultMaxReplySize, cred: OpaqueAuth{Flavor: AuthNone}}
	for _, o := range opts {
		o(&c.opts)
	}
	if c.opts.credErr != nil {
		return nil, c.opts.credErr
	}
	switch network {
	case "udp", "udp4", "udp6":
	case "tcp", "tcp4", "tcp6", "unix":
		c.stream = true
	default:
		return nil, fmt.Errorf("oncrpc: unsupported network %q", network)
	}
	if _, err := c.connection(ctx); err != nil {
		return nil, err
	}
	return c, nil
}

// LocalAddr is the address of the client's current socket (zero when not
// connected or on a unix socket).
func (c *Client) LocalAddr() netip.AddrPort {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn == nil {
		return netip.AddrPort{}
	}
	return unmap(addrPortOf(c.conn.c.LocalAddr()))
}

// Close closes the socket; calls in progress fail.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	if c.conn != nil {
		c.conn.fail(net.ErrClosed)
		c.conn = nil
	}
	return nil
}

var errClientClosed = errors.New("oncrpc: client closed")

// connection returns the live connection, dialing one if needed.
func (c *Client) connection(ctx context.Context) (*clientConn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, errClientClosed
	}
	if c.conn != nil {
		c.conn.mu.Lock()
		dead := c.conn.err != nil
		c.conn.mu.Unlock()
		if !dead {
			return c.conn, nil
		}
		c.conn = nil
	}
	nc, err := c.dial(ctx)
	if err != nil {
		return nil, err
	}
	cc := &clientConn{c: nc, wait: map[uint32]chan reply{}, stream: c.stream, peer: unmap(addrPortOf(nc.RemoteAddr()))}
	c.conn = cc
	go cc.read(c.opts.maxReply)
	return cc, nil
}

func (c *Client) dial(ctx context.Context) (net.Conn, error) {
	if !c.opts.privileged || c.network == "unix" {
		var d net.Dialer
		return d.DialContext(ctx, c.network, c.address)
	}
	return dialPrivileged(ctx, c.network, c.address)
}

// fail ends the connection and every wait on it.
func (cc *clientConn) fail(err error) {
	cc.mu.Lock()
	if cc.err == nil {
		cc.err = err
		for xid, ch := range cc.wait {
			deliver(ch, reply{err: err})
			delete(cc.wait, xid)
		}
	}
	cc.mu.Unlock()
	cc.c.Close()
}

func (cc *clientConn) read(maxReply int) {
	var rr *RecordReader
	var buf []byte
	if cc.stream {
		rr = NewRecordReader(cc.c, maxReply)
	} else {
		buf = make([]byte, maxUDPDatagram)
	}
	for {
		var msg []byte
		if cc.stream {
			rec, err := rr.ReadRecord()
			if err != nil {
				cc.fail(fmt.Errorf("connection lost: %w", err))
				return
			}
			msg = rec
		} else {
			n, from, err := cc.readDatagram(buf)
			if errors.Is(err, syscall.ECONNREFUSED) {
				// An ICMP port unreachable: nobody serves the port now.
				cc.broadcast(err)
				continue
			}
			if err != nil {
				cc.fail(err)
				return
			}
			if from.IsValid() && unmap(from) != cc.peer {
				continue // not from the address called, whatever its xid
			}
			msg = append([]byte(nil), buf[:n]...)
		}
		if len(msg) < 8 || binary.BigEndian.Uint32(msg[4:]) != msgReply {
			continue // stray or garbage: not ours to judge
		}
		xid := binary.BigEndian.Uint32(msg)
		cc.mu.Lock()
		if ch, ok := cc.wait[xid]; ok {
			delete(cc.wait, xid)
			deliver(ch, reply{msg: msg})
		}
		cc.mu.Unlock()
	}
}

// readDatagram reads one datagram and, on a UDP socket, its source. The
// socket is connected, so the kernel already drops datagrams from others;
// checking again also covers those queued before the connect, as on a
// socket bound to a privileged port first.
func (cc *clientConn) readDatagram(buf []byte) (int, netip.AddrPort, error) {
	if u, ok := cc.c.(*net.UDPConn); ok {
		return u.ReadFromUDPAddrPort(buf)
	}
	n, err := cc.c.Read(buf)
	return n, netip.AddrPort{}, err
}

// broadcast tells every waiting call of a transient error without ending
// the connection.
func (cc *clientConn) broadcast(err error) {
	cc.mu.Lock()
	for xid, ch := range cc.wait {
		deliver(ch, reply{err: err})
		delete(cc.wait, xid)
	}
	cc.mu.Unlock()
}

// deliver never blocks: a waiter holds at most one reply, and a second (to a
// retransmission) is a duplicate.
func deliver(ch chan reply, r reply) {
	select {
	case ch <- r:
	default:
	}
}

func (cc *clientConn) expect(xid uint32, ch chan reply) error {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if cc.err != nil {
		return cc.err
	}
	cc.wait[xid] = ch
	return nil
}

func (cc *clientConn) waiting(xid uint32) bool {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	_, ok := cc.wait[xid]
	return ok
}

func (cc *clientConn) forget(xid uint32) {
	cc.mu.Lock()
	delete(cc.wait, xid)
	cc.mu.Unlock()
}

func (cc *clientConn) send(record []byte) error {
	cc.wmu.Lock()
	defer cc.wmu.Unlock()
	var err error
	if cc.stream {
		_, err = cc.c.Write(record)
	} else {
		_, err = cc.c.Write(record[4:])
	}
	return err
}

// nextXID draws an unpredictable xid (so an off-path attacker cannot forge
// the reply to a call it did not see) that no call in progress uses.
func (c *Client) nextXID() uint32 {
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		xid := uint32(c.xids.Uint64())
		if c.conn == nil || !c.conn.waiting(xid) {
			return xid
		}
	}
}

// Call calls procedure proc of version vers of program prog: args (nil for
// none) encodes the arguments, result (nil to ignore them) decodes the
// results. Over UDP the call is retransmitted, with the interval doubling,
// until a reply or the end of ctx (or DefaultCallTimeout, when ctx has no
// deadline); over a stream a lost connection is redialed and the call sent
// again. A reply with a status other than SUCCESS returns an *AcceptError or
// a *RejectError.
func (c *Client) Call(ctx context.Context, prog, vers, proc uint32, args func(*xdr.Encoder), result func(*xdr.Decoder) error) error {
	if _, ok := ctx.Deadline(); !ok && c.opts.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.opts.timeout)
		defer cancel()
	}
	xid := c.nextXID()
	e := xdr.NewEncoder(make([]byte, 4, 128))
	h := CallHeader{XID: xid, RPCVersion: RPCVersion, Program: prog, Version: vers, Procedure: proc,
		Cred: c.opts.cred, Verf: OpaqueAuth{Flavor: AuthNone}}
	h.Encode(e)
	if args != nil {
		args(e)
	}
	record := e.Bytes()
	if !c.stream && len(record)-4 > maxUDPDatagram-28 {
		return c.wrap(prog, vers, proc, fmt.Errorf("%d-byte call too large for a datagram", len(record)-4))
	}
	markRecord(record)
	msg, err := c.exchange(ctx, xid, record)
	if err != nil {
		return c.wrap(prog, vers, proc, err)
	}
	r, err := ParseReply(msg)
	if err == nil {
		err = r.Err
	}
	if err == nil && result != nil {
		if err = result(xdr.NewDecoder(r.Results)); err != nil {
			err = fmt.Errorf("decoding the results: %w", err)
		}
	}
	if err != nil {
		return c.wrap(prog, vers, proc, err)
	}
	return nil
}

func (c *Client) wrap(prog, vers, proc uint32, err error) error {
	return fmt.Errorf("oncrpc: %s %s program %d version %d procedure %d: %w", c.network, c.address, prog, vers, proc, err)
}

// exchange sends record until its reply comes back or ctx ends.
func (c *Client) exchange(ctx context.Context, xid uint32, record []byte) ([]byte, error) {
	ch := make(chan reply, 1)
	interval := c.opts.retransmit
	pause := reconnectBackoffStart
	var last error
	var cc *clientConn
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	defer func() {
		if cc != nil {
			cc.forget(xid)
		}
	}()
	done := func() error {
		if last != nil {
			return fmt.Errorf("%w (last error: %v)", ctx.Err(), last)
		}
		return ctx.Err()
	}
	// backOff waits before the next attempt after a failure.
	backOff := func() bool {
		timer.Reset(pause)
		pause = min(2*pause, reconnectBackoffLimit)
		select {
		case <-timer.C:
			return true
		case <-ctx.Done():
			return false
		}
	}
	for {
		var err error
		cc, err = c.connection(ctx)
		if err == nil {
			if err = cc.expect(xid, ch); err == nil {
				if err = cc.send(record); err != nil && cc.stream {
					cc.fail(err)
				}
			}
		}
		if errors.Is(err, errClientClosed) || errors.Is(err, syscall.ECONNREFUSED) && !c.stream {
			return nil, err // nobody serves the port: retrying soon cannot help
		}
		if err != nil {
			last = err
			if !backOff() {
				return nil, done()
			}
			continue
		}
		if cc.stream {
			timer.Stop() // a stream delivers or fails: no retransmission
		} else {
			timer.Reset(interval)
			interval = min(2*interval, c.opts.maxRetx)
		}
		select {
		case r := <-ch:
			switch {
			case r.err == nil:
				return r.msg, nil
			case errors.Is(r.err, syscall.ECONNREFUSED):
				return nil, r.err
			case errors.Is(r.err, net.ErrClosed):
				return nil, errClientClosed
			}
			last = r.err // the stream broke: reconnect and send again
			if !backOff() {
				return nil, done()
			}
		case <-timer.C: // retransmit
		case <-ctx.Done():
			return nil, done()
		}
	}
}
