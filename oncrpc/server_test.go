package oncrpc

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"github.com/hoststat/hoststat/internal/netlab"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hoststat/hoststat/oncrpc/xdr"
)

const (
	testProg = 0x20000099

	procEcho     = 1 // string<64> → the same string
	procSystem   = 2 // fails with a plain error → SYSTEM_ERR
	procTooWeak  = 3 // denies with AUTH_ERROR AUTH_TOOWEAK
	procBlock    = 4 // waits until the test releases it
	procDropOnce = 5 // drops its first call, answers the rest
	procWho      = 6 // → uid, machine name, remote port, transport
	procPanic    = 7
	procSlow     = 8  // sleeps for the uint32 milliseconds it is given
	procHold     = 9  // holds its handler slot until the test releases it
	procXID      = 10 // → the call's xid
)

// testServer is a server for testProg versions 1 and 3.
type testServer struct {
	*Server
	release   chan struct{}
	blocked   chan struct{}
	dropCalls atomic.Int32
}

func newTestServer(t *testing.T, s *Server) *testServer {
	t.Helper()
	if s == nil {
		s = &Server{}
	}
	if s.Logger == nil {
		s.Logger = slog.New(slog.DiscardHandler)
	}
	ts := &testServer{Server: s, release: make(chan struct{}), blocked: make(chan struct{}, 16)}
	for _, v := range []uint32{1, 3} {
		s.Handle(testProg, v, procEcho, func(_ context.Context, c *Call, res *xdr.Encoder) error {
			str := c.Args.String("text", 64)
			if c.Args.Err() != nil {
				return ErrGarbageArgs
			}
			res.String(str)
			return nil
		})
	}
	s.Handle(testProg, 1, procSystem, func(context.Context, *Call, *xdr.Encoder) error {
		return errors.New("disk on fire")
	})
	s.Handle(testProg, 1, procTooWeak, func(context.Context, *Call, *xdr.Encoder) error {
		return AuthError(AuthTooWeak)
	})
	s.Handle(testProg, 1, procBlock, func(ctx context.Context, _ *Call, res *xdr.Encoder) error {
		ts.blocked <- struct{}{}
		select {
		case <-ts.release:
		case <-ctx.Done():
			return ctx.Err()
		}
		res.Uint32(42)
		return nil
	})
	s.Handle(testProg, 1, procDropOnce, func(context.Context, *Call, *xdr.Encoder) error {
		if ts.dropCalls.Add(1) == 1 {
			return ErrDrop
		}
		return nil
	})
	s.Handle(testProg, 1, procWho, func(_ context.Context, c *Call, res *xdr.Encoder) error {
		var uid uint32
		var name string
		if c.AuthSys != nil {
			uid, name = c.AuthSys.UID, c.AuthSys.MachineName
		}
		res.Uint32(uid)
		res.String(name)
		res.Uint32(uint32(c.Remote.Port()))
		res.String(c.Transport)
		return nil
	})
	s.Handle(testProg, 1, procPanic, func(context.Context, *Call, *xdr.Encoder) error {
		panic("handler bug")
	})
	s.Handle(testProg, 1, procSlow, func(_ context.Context, c *Call, res *xdr.Encoder) error {
		ms := c.Args.Uint32()
		time.Sleep(time.Duration(ms) * time.Millisecond)
		return nil
	})
	s.Handle(testProg, 1, procHold, func(ctx context.Context, _ *Call, _ *xdr.Encoder) error {
		select {
		case <-ts.release:
		case <-ctx.Done():
		}
		return nil
	})
	s.Handle(testProg, 1, procXID, func(_ context.Context, c *Call, res *xdr.Encoder) error {
		res.Uint32(c.XID)
		return nil
	})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
	return ts
}

// listen starts serving on a loopback socket of network and returns its
// address; it skips when the machine lacks that loopback (IPv6, say).
func (ts *testServer) listen(t *testing.T, network string) string {
	t.Helper()
	host := "127.0.0.1"
	if strings.HasSuffix(network, "6") {
		host = "[::1]"
	}
	if strings.HasPrefix(network, "udp") {
		pc, err := net.ListenPacket(network, host+":0")
		if err != nil {
			t.Skipf("no %s loopback: %v", network, err)
		}
		go ts.ServeUDP(pc)
		return pc.LocalAddr().String()
	}
	l, err := net.Listen(network, host+":0")
	if err != nil {
		t.Skipf("no %s loopback: %v", network, err)
	}
	go ts.ServeTCP(l)
	return l.Addr().String()
}

func dialTest(t *testing.T, network, addr string, opts ...DialOption) *Client {
	t.Helper()
	opts = append([]DialOption{WithRetransmit(50*time.Millisecond, 200*time.Millisecond)}, opts...)
	c, err := Dial(context.Background(), network, addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func echo(ctx context.Context, c *Client, vers uint32, s string) (string, error) {
	var got string
	err := c.Call(ctx, testProg, vers, procEcho, func(e *xdr.Encoder) { e.String(s) },
		func(d *xdr.Decoder) error { got = d.String("text", 64); return d.Err() })
	return got, err
}

func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

var allNetworks = []string{"udp4", "udp6", "tcp4", "tcp6"}

func TestEveryStatusReachesClientAsTypedError(t *testing.T) {
	for _, network := range allNetworks {
		t.Run(network, func(t *testing.T) {
			ts := newTestServer(t, nil)
			c := dialTest(t, network, ts.listen(t, network))
			ctx := ctxTimeout(t, 10*time.Second)

			if got, err := echo(ctx, c, 3, "hello"); err != nil || got != "hello" {
				t.Fatalf("echo = %q, %v", got, err)
			}
			if err := c.Call(ctx, testProg, 1, 0, nil, nil); err != nil {
				t.Errorf("NULL procedure: %v", err)
			}
			var acc *AcceptError
			err := c.Call(ctx, testProg+1, 1, 0, nil, nil)
			if !errors.Is(err, ErrProgUnavail) {
				t.Errorf("unknown program: %v", err)
			}
			err = c.Call(ctx, testProg, 2, 0, nil, nil)
			if !errors.As(err, &acc) || acc.Stat != ProgMismatch || acc.Low != 1 || acc.High != 3 {
				t.Errorf("unknown version: %v", err)
			}
			if !strings.Contains(fmt.Sprint(err), "versions 1 to 3") {
				t.Errorf("message does not name the versions: %v", err)
			}
			if err := c.Call(ctx, testProg, 1, 99, nil, nil); !errors.Is(err, ErrProcUnavail) {
				t.Errorf("unknown procedure: %v", err)
			}
			err = c.Call(ctx, testProg, 1, procEcho, func(e *xdr.Encoder) { e.Uint32(1000) }, nil)
			if !errors.Is(err, ErrGarbageArgs) {
				t.Errorf("bad arguments: %v", err)
			}
			if err := c.Call(ctx, testProg, 1, procSystem, nil, nil); !errors.Is(err, ErrSystem) {
				t.Errorf("failing handler: %v", err)
			}
			if err := c.Call(ctx, testProg, 1, procPanic, nil, nil); !errors.Is(err, ErrSystem) {
				t.Errorf("panicking handler: %v", err)
			}
			var rej *RejectError
			err = c.Call(ctx, testProg, 1, procTooWeak, nil, nil)
			if !errors.As(err, &rej) || rej.Stat != AuthErrorStat || rej.Auth != AuthTooWeak ||
				!errors.Is(err, ErrAuth) || !errors.Is(err, AuthError(AuthTooWeak)) || errors.Is(err, AuthError(AuthBadCred)) {
				t.Errorf("denying handler: %v", err)
			}
			// The server is still healthy after all that.
			if got, err := echo(ctx, c, 1, "still"); err != nil || got != "still" {
				t.Fatalf("echo after errors = %q, %v", got, err)
			}
		})
	}
}

// rawCall sends msg as one call over network and returns the parsed reply.
func rawCall(t *testing.T, network, addr string, msg []byte) Reply {
	t.Helper()
	conn, err := net.DialTimeout(network, addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	var b []byte
	if strings.HasPrefix(network, "udp") {
		if _, err := conn.Write(msg); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 65536)
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		b = buf[:n]
	} else {
		if err := WriteRecord(conn, msg); err != nil {
			t.Fatal(err)
		}
		if b, err = NewRecordReader(conn, 0).ReadRecord(); err != nil {
			t.Fatal(err)
		}
	}
	r, err := ParseReply(b)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func callMessage(h CallHeader, args ...uint32) []byte {
	e := xdr.NewEncoder(nil)
	h.Encode(e)
	for _, a := range args {
		e.Uint32(a)
	}
	return e.Bytes()
}

func TestDenials(t *testing.T) {
	good := CallHeader{XID: 77, RPCVersion: 2, Program: testProg, Version: 1, Procedure: 0}
	badSys := OpaqueAuth{Flavor: AuthSys, Body: []byte{0, 0, 0, 1, 0, 0, 1, 0}} // name length 256
	sys, _ := AuthSysParms{MachineName: "h", UID: 5}.Auth()
	cases := []struct {
		name string
		edit func(*CallHeader)
		want error
	}{
		{"rpc version 3", func(h *CallHeader) { h.RPCVersion = 3 }, &RejectError{Stat: RPCMismatch, Low: 2, High: 2}},
		{"flavor AUTH_DH", func(h *CallHeader) { h.Cred = OpaqueAuth{Flavor: AuthDH, Body: []byte{1, 2, 3, 4}} }, AuthError(AuthBadCred)},
		{"flavor AUTH_SHORT", func(h *CallHeader) { h.Cred = OpaqueAuth{Flavor: AuthShort, Body: []byte{1, 2, 3, 4}} }, AuthError(AuthRejectedCred)},
		{"malformed AUTH_SYS", func(h *CallHeader) { h.Cred = badSys }, AuthError(AuthBadCred)},
		{"AUTH_NONE with a body", func(h *CallHeader) { h.Cred = OpaqueAuth{Body: []byte{1, 2, 3, 4}} }, AuthError(AuthBadCred)},
		{"AUTH_SYS verifier", func(h *CallHeader) { h.Verf = sys }, AuthError(AuthBadVerf)},
		{"good AUTH_SYS", func(h *CallHeader) { h.Cred = sys }, nil},
	}
	for _, network := range []string{"udp4", "tcp6"} {
		ts := newTestServer(t, nil)
		addr := ts.listen(t, network)
		for _, tc := range cases {
			t.Run(network+"/"+tc.name, func(t *testing.T) {
				h := good
				tc.edit(&h)
				r := rawCall(t, network, addr, callMessage(h))
				if r.XID != 77 {
					t.Errorf("xid %d", r.XID)
				}
				if tc.want == nil {
					if r.Err != nil {
						t.Fatalf("got %v", r.Err)
					}
					return
				}
				var rej, want *RejectError
				errors.As(tc.want, &want)
				if !errors.As(r.Err, &rej) || *rej != *want {
					t.Fatalf("got %v, want %v", r.Err, tc.want)
				}
			})
		}
	}
}

func TestCredentialTooLongIsBadCred(t *testing.T) {
	// A credential body over 400 bytes is a broken credential, not garbage.
	e := xdr.NewEncoder(nil)
	for _, w := range []uint32{9, 0, 2, testProg, 1, 0, uint32(AuthSys), 404} {
		e.Uint32(w)
	}
	e.FixedOpaque(make([]byte, 404))
	e.Uint32(0)
	e.Uint32(0)
	ts := newTestServer(t, nil)
	r := rawCall(t, "udp4", ts.listen(t, "udp4"), e.Bytes())
	if !errors.Is(r.Err, AuthError(AuthBadCred)) {
		t.Fatalf("got %v", r.Err)
	}
}

func TestGarbageIsDroppedAndCounted(t *testing.T) {
	ts := newTestServer(t, nil)
	uaddr, taddr := ts.listen(t, "udp4"), ts.listen(t, "tcp4")
	u, err := net.Dial("udp4", uaddr)
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	for _, g := range [][]byte{{}, {1, 2, 3}, {0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0}, []byte("GET / HTTP/1.0\r\n\r\n")} {
		u.Write(g)
	}
	// TCP: a record that is no call closes the connection.
	tc, err := net.Dial("tcp4", taddr)
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	WriteRecord(tc, []byte{0, 0, 0, 1, 0, 0, 0, 1})
	tc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := tc.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("connection after garbage record: read %v, want EOF", err)
	}
	ctx := ctxTimeout(t, 5*time.Second)
	for network, addr := range map[string]string{"udp4": uaddr, "tcp4": taddr} {
		c := dialTest(t, network, addr)
		if got, err := echo(ctx, c, 1, "x"); err != nil || got != "x" {
			t.Fatalf("echo after garbage: %q %v", got, err)
		}
	}
	if m := ts.Stats().Malformed; m != 5 {
		t.Errorf("Malformed = %d, want 5", m)
	}
}

func TestMultiFragmentRecord(t *testing.T) {
	ts := newTestServer(t, nil)
	addr := ts.listen(t, "tcp4")
	conn, err := net.Dial("tcp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	e := xdr.NewEncoder(nil)
	(&CallHeader{XID: 5, RPCVersion: 2, Program: testProg, Version: 1, Procedure: procEcho}).Encode(e)
	e.String("in three pieces")
	msg := e.Bytes()
	// Fragments of odd sizes, one of them empty, each in its own write.
	cuts := []int{0, 7, 7, 30, len(msg)}
	for i := 0; i+1 < len(cuts); i++ {
		frag := msg[cuts[i]:cuts[i+1]]
		var hdr [4]byte
		n := uint32(len(frag))
		if i+2 == len(cuts) {
			n |= lastFragment
		}
		binary.BigEndian.PutUint32(hdr[:], n)
		conn.Write(hdr[:])
		conn.Write(frag)
		time.Sleep(5 * time.Millisecond)
	}
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	rec, err := NewRecordReader(conn, 0).ReadRecord()
	if err != nil {
		t.Fatal(err)
	}
	r, err := ParseReply(rec)
	if err != nil || r.Err != nil || r.XID != 5 {
		t.Fatalf("reply %+v, %v", r, err)
	}
	if s := xdr.NewDecoder(r.Results).String("s", 64); s != "in three pieces" {
		t.Fatalf("echo %q", s)
	}
}

func TestOversizeRecordClosesOnlyThatConnection(t *testing.T) {
	ts := newTestServer(t, &Server{MaxRecordSize: 1024})
	addr := ts.listen(t, "tcp4")
	c := dialTest(t, "tcp4", addr)
	ctx := ctxTimeout(t, 5*time.Second)
	if _, err := echo(ctx, c, 1, "before"); err != nil {
		t.Fatal(err)
	}
	bad, err := net.Dial("tcp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer bad.Close()
	// Claims 1 GiB; the server must not wait for (or allocate) it.
	bad.Write([]byte{0x80 | 0x40, 0, 0, 0})
	bad.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := bad.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("oversize connection still open: %v", err)
	}
	if got, err := echo(ctx, c, 1, "after"); err != nil || got != "after" {
		t.Fatalf("other connection: %q %v", got, err)
	}
	if n := ts.Stats().Oversize; n != 1 {
		t.Errorf("Oversize = %d", n)
	}
}

func TestIdleTimeout(t *testing.T) {
	ts := newTestServer(t, &Server{IdleTimeout: 150 * time.Millisecond})
	addr := ts.listen(t, "tcp6")
	idle, err := net.Dial("tcp6", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	start := time.Now()
	idle.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := idle.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("idle connection: %v", err)
	}
	if d := time.Since(start); d < 100*time.Millisecond {
		t.Errorf("closed after %v, before the idle timeout", d)
	}
	// A call that outlasts the idle timeout still gets its answer.
	c := dialTest(t, "tcp6", addr)
	ctx := ctxTimeout(t, 5*time.Second)
	if err := c.Call(ctx, testProg, 1, procSlow, func(e *xdr.Encoder) { e.Uint32(400) }, nil); err != nil {
		t.Fatalf("slow call over an idle-timed connection: %v", err)
	}
	if n := ts.Stats().IdleClosed; n != 1 {
		t.Errorf("IdleClosed = %d, want 1", n)
	}
	// And the client reconnects after the server closed its idle connection.
	time.Sleep(300 * time.Millisecond)
	if got, err := echo(ctx, c, 1, "again"); err != nil || got != "again" {
		t.Fatalf("after the idle close: %q %v", got, err)
	}
}

func TestUDPRetransmission(t *testing.T) {
	for _, network := range []string{"udp4", "udp6"} {
		t.Run(network, func(t *testing.T) {
			ts := newTestServer(t, nil)
			c := dialTest(t, network, ts.listen(t, network))
			start := time.Now()
			if err := c.Call(ctxTimeout(t, 5*time.Second), testProg, 1, procDropOnce, nil, nil); err != nil {
				t.Fatal(err)
			}
			if n := ts.dropCalls.Load(); n != 2 {
				t.Errorf("handler ran %d times, want 2", n)
			}
			if d := time.Since(start); d < 40*time.Millisecond {
				t.Errorf("answered after %v, before any retransmission", d)
			}
			if n := ts.Stats().Dropped; n != 1 {
				t.Errorf("Dropped = %d", n)
			}
		})
	}
}

func TestCallTimesOutWithoutServer(t *testing.T) {
	// A socket that never answers: retransmissions until the deadline.
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	var got atomic.Int32
	go func() {
		buf := make([]byte, 1500)
		for {
			if _, _, err := pc.ReadFrom(buf); err != nil {
				return
			}
			got.Add(1)
		}
	}()
	c := dialTest(t, "udp4", pc.LocalAddr().String())
	err = c.Call(ctxTimeout(t, 400*time.Millisecond), testProg, 1, 0, nil, nil)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v", err)
	}
	if n := got.Load(); n < 3 {
		t.Errorf("only %d transmissions in 400ms at a 50ms first interval", n)
	}
}

func TestBlockedHandlerDoesNotBlockOthers(t *testing.T) {
	for _, network := range []string{"udp4", "tcp4"} {
		t.Run(network, func(t *testing.T) {
			ts := newTestServer(t, nil)
			c := dialTest(t, network, ts.listen(t, network))
			ctx := ctxTimeout(t, 10*time.Second)
			blockedDone := make(chan error, 1)
			go func() {
				blockedDone <- c.Call(ctx, testProg, 1, procBlock, nil, func(d *xdr.Decoder) error {
					if v := d.Uint32(); v != 42 {
						return fmt.Errorf("result %d, want 42", v)
					}
					return d.Err()
				})
			}()
			<-ts.blocked
			for i := range 20 {
				if got, err := echo(ctx, c, 1, fmt.Sprint(i)); err != nil || got != fmt.Sprint(i) {
					t.Fatalf("echo while another call is blocked: %q %v", got, err)
				}
			}
			select {
			case err := <-blockedDone:
				t.Fatalf("blocked call returned early: %v", err)
			default:
			}
			close(ts.release)
			if err := <-blockedDone; err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestAuthSysReachesHandler(t *testing.T) {
	for _, network := range []string{"udp6", "tcp4"} {
		t.Run(network, func(t *testing.T) {
			ts := newTestServer(t, nil)
			c := dialTest(t, network, ts.listen(t, network), WithAuthSys(AuthSysParms{MachineName: "node7", UID: 1001, GID: 100, GIDs: []uint32{4, 24}}))
			uid, name, port, transport := who(t, c)
			if uid != 1001 || name != "node7" || port != uint32(c.LocalAddr().Port()) || transport != network[:3] {
				t.Fatalf("handler saw uid %d name %q port %d transport %q (client port %d)", uid, name, port, transport, c.LocalAddr().Port())
			}
		})
	}
}

func who(t *testing.T, c *Client) (uid uint32, name string, port uint32, transport string) {
	t.Helper()
	err := c.Call(ctxTimeout(t, 5*time.Second), testProg, 1, procWho, nil, func(d *xdr.Decoder) error {
		uid, name, port, transport = d.Uint32(), d.String("n", 255), d.Uint32(), d.String("t", 8)
		return d.Err()
	})
	if err != nil {
		t.Fatal(err)
	}
	return
}

func TestPrivilegedPort(t *testing.T) {
	netlab.RequireRoot(t)
	for _, network := range allNetworks {
		t.Run(network, func(t *testing.T) {
			ts := newTestServer(t, nil)
			c := dialTest(t, network, ts.listen(t, network), WithPrivilegedPort())
			_, _, port, _ := who(t, c)
			if port >= 1024 || port < privilegedPortLow {
				t.Fatalf("server saw port %d", port)
			}
			if reservedPortBlacklist()[int(port)] {
				t.Errorf("port %d is on the bindresvport blacklist", port)
			}
		})
	}
}

func TestShutdownWaitsForHandlers(t *testing.T) {
	s := &Server{}
	ts := newTestServer(t, s)
	c := dialTest(t, "tcp4", ts.listen(t, "tcp4"))
	u := dialTest(t, "udp4", ts.listen(t, "udp4"))
	ctx := ctxTimeout(t, 10*time.Second)
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	for _, cl := range []*Client{c, u} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- cl.Call(ctx, testProg, 1, procBlock, nil, nil)
		}()
	}
	<-ts.blocked
	<-ts.blocked
	shut := make(chan error, 1)
	go func() { shut <- s.Shutdown(ctx) }()
	time.Sleep(100 * time.Millisecond)
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned with handlers in flight: %v", err)
	default:
	}
	close(ts.release)
	if err := <-shut; err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("call in flight at shutdown: %v", err)
		}
	}
}

func TestShutdownGivesUpAtDeadline(t *testing.T) {
	s := &Server{}
	ts := newTestServer(t, s)
	c := dialTest(t, "udp4", ts.listen(t, "udp4"))
	go c.Call(ctxTimeout(t, 5*time.Second), testProg, 1, procBlock, nil, nil)
	<-ts.blocked
	// The handler watches ctx, which Shutdown cancels when it gives up.
	if err := s.Shutdown(ctxTimeout(t, 100*time.Millisecond)); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown = %v", err)
	}
}

func TestConnectionLimit(t *testing.T) {
	ts := newTestServer(t, &Server{MaxConns: 1})
	addr := ts.listen(t, "tcp4")
	c := dialTest(t, "tcp4", addr)
	ctx := ctxTimeout(t, 5*time.Second)
	if _, err := echo(ctx, c, 1, "first"); err != nil {
		t.Fatal(err)
	}
	extra, err := net.Dial("tcp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer extra.Close()
	extra.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := extra.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("connection over the limit: %v", err)
	}
	if n := ts.Stats().RefusedConns; n != 1 {
		t.Errorf("RefusedConns = %d", n)
	}
}

func TestUDPPortUnreachableFailsFast(t *testing.T) {
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := pc.LocalAddr().String()
	pc.Close()
	c := dialTest(t, "udp4", addr)
	start := time.Now()
	err = c.Call(ctxTimeout(t, 5*time.Second), testProg, 1, 0, nil, nil)
	if err == nil || time.Since(start) > 2*time.Second || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("after %v: %v", time.Since(start), err)
	}
}

func BenchmarkNullCall(b *testing.B) {
	for _, network := range []string{"udp4", "tcp4"} {
		b.Run(network, func(b *testing.B) {
			s := &Server{}
			s.Handle(testProg, 1, 0, nullProc)
			var addr string
			if network == "udp4" {
				pc, _ := net.ListenPacket(network, "127.0.0.1:0")
				go s.ServeUDP(pc)
				addr = pc.LocalAddr().String()
			} else {
				l, _ := net.Listen(network, "127.0.0.1:0")
				go s.ServeTCP(l)
				addr = l.Addr().String()
			}
			defer s.Shutdown(context.Background())
			c, err := Dial(context.Background(), network, addr)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			ctx := context.Background()
			b.Run("serial", func(b *testing.B) {
				for b.Loop() {
					if err := c.Call(ctx, testProg, 1, 0, nil, nil); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "calls/s")
			})
			b.Run("parallel", func(b *testing.B) {
				b.SetParallelism(8)
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						if err := c.Call(ctx, testProg, 1, 0, nil, nil); err != nil {
							b.Error(err)
							return
						}
					}
				})
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "calls/s")
			})
		})
	}
}

func TestUDPReplyComesFromTheAddressCalled(t *testing.T) {
	// A server on the wildcard address of a host with several addresses
	// must answer from the one it was called at: a client with a connected
	// socket (ours, the kernel's) drops a reply from any other. 127.0.0.2 is
	// such a second address; the client's socket sits on 127.0.0.1.
	for _, network := range []string{"udp4", "udp"} {
		t.Run(network, func(t *testing.T) {
			ts := newTestServer(t, nil)
			pc, err := net.ListenPacket(network, ":0")
			if err != nil {
				t.Skip(err)
			}
			go ts.ServeUDP(pc)
			port := pc.LocalAddr().(*net.UDPAddr).Port
			d := net.Dialer{LocalAddr: &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}}
			conn, err := d.Dial("udp4", fmt.Sprintf("127.0.0.2:%d", port))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			msg := callMessage(CallHeader{XID: 3, RPCVersion: 2, Program: testProg, Version: 1})
			conn.SetReadDeadline(time.Now().Add(2 * time.Second))
			conn.Write(msg)
			buf := make([]byte, 1500)
			n, err := conn.Read(buf)
			if err != nil {
				t.Fatalf("no reply on a socket connected to 127.0.0.2: %v", err)
			}
			if r, err := ParseReply(buf[:n]); err != nil || r.XID != 3 || r.Err != nil {
				t.Fatalf("reply %+v, %v", r, err)
			}
		})
	}
}

func TestUnixSocket(t *testing.T) {
	ts := newTestServer(t, nil)
	path := t.TempDir() + "/rpc.sock"
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	go ts.ServeTCP(l)
	c := dialTest(t, "unix", path)
	if _, _, _, transport := who(t, c); transport != "unix" {
		t.Fatalf("transport %q", transport)
	}
}
