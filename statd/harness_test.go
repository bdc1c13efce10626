package statd

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hoststat/hoststat/internal/netlab"
	"github.com/hoststat/hoststat/nsm"
	"github.com/hoststat/hoststat/oncrpc"
	"github.com/hoststat/hoststat/oncrpc/rpcbind"
	"github.com/hoststat/hoststat/oncrpc/xdr"
)

// Portmapper version 2 GETPORT, all that fakeRPCBind answers.
const (
	pmapVers    = 2
	pmapGetPort = 3
)

// fakeRPCBind answers portmapper v2 GETPORT from a table, on UDP at
// 0.0.0.0:port so every 127.x.y.z "host" of a test finds it. It stands in
// for the local rpcbind (callbacks) and for every peer's (notifications).
type fakeRPCBind struct {
	srv  *oncrpc.Server
	port int
	mu   sync.Mutex
	tab  map[[3]uint32]uint32 // prog, vers, proto → port
}

func newFakeRPCBind(t testing.TB) *fakeRPCBind {
	t.Helper()
	pc, err := net.ListenPacket("udp4", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeRPCBind{srv: &oncrpc.Server{Logger: slog.New(slog.DiscardHandler)}, port: pc.LocalAddr().(*net.UDPAddr).Port, tab: map[[3]uint32]uint32{}}
	f.srv.Handle(rpcbind.Program, pmapVers, pmapGetPort, func(_ context.Context, call *oncrpc.Call, res *xdr.Encoder) error {
		prog, vers, proto := call.Args.Uint32(), call.Args.Uint32(), call.Args.Uint32()
		call.Args.Uint32()
		f.mu.Lock()
		p := f.tab[[3]uint32{prog, vers, proto}]
		f.mu.Unlock()
		res.Uint32(p)
		return nil
	})
	go f.srv.ServeUDP(pc)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		f.srv.Shutdown(ctx)
	})
	return f
}

func (f *fakeRPCBind) set(prog, vers, proto uint32, port int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.tab[[3]uint32{prog, vers, proto}] = uint32(port)
}

// testDaemon is an in-process daemon on loopback with its own state
// directory, boot id file and fake rpcbind.
type testDaemon struct {
	t      testing.TB
	dir    string
	bootID string
	rpcb   *fakeRPCBind
	logs   *netlab.LogBuffer
	cfg    Config
	cancel context.CancelFunc
	done   chan error
	udp    string // 127.0.0.1:port
	tcp    string
	// in runs the daemon (nil: here); netlab.Host.Do runs it inside a lab
	// host's network namespace.
	in func(func() error) error
}

func newTestDaemon(t testing.TB, mutate func(*Config)) *testDaemon {
	t.Helper()
	return newTestDaemonIn(t, mutate, nil)
}

// newTestDaemonIn is newTestDaemon with the daemon run by in.
func newTestDaemonIn(t testing.TB, mutate func(*Config), in func(func() error) error) *testDaemon {
	t.Helper()
	td := &testDaemon{t: t, dir: t.TempDir(), rpcb: newFakeRPCBind(t), logs: &netlab.LogBuffer{}, in: in}
	td.bootID = filepath.Join(td.dir, "boot_id")
	writeBootID(t, td.bootID, "boot-1")
	td.cfg = Config{
		Name:          "me.example.com",
		StateDir:      filepath.Join(td.dir, "state"),
		Listen:        []netip.Addr{netip.IPv4Unspecified()},
		RPCBindPort:   td.rpcb.port,
		BootIDPath:    td.bootID,
		NotifyTimeout: 2 * time.Second,
		// The in-test registrants' programs (see newRegistrant callers).
		CallbackPrograms: []uint32{7, 200100, 200200},
		Logger:           slog.New(slog.NewTextHandler(td.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if mutate != nil {
		mutate(&td.cfg)
	}
	t.Cleanup(func() {
		td.stop()
		if t.Failed() {
			t.Logf("daemon log:\n%s", td.logs.String())
		}
	})
	td.start()
	return td
}

func writeBootID(t testing.TB, path, id string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(id+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

func (td *testDaemon) start() {
	td.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	td.cancel = cancel
	td.done = make(chan error, 1)
	ready := make(chan struct{})
	run := func() error { return Run(ctx, td.cfg, func() { close(ready) }) }
	go func() {
		if td.in != nil {
			td.done <- td.in(run)
			return
		}
		td.done <- run()
	}()
	select {
	case <-ready:
	case err := <-td.done:
		td.t.Fatalf("daemon did not start: %v", err)
	case <-time.After(10 * time.Second):
		td.t.Fatal("daemon not ready after 10s")
	}
	st := td.status()
	td.udp, td.tcp = "", ""
	for _, l := range st.Listeners {
		network, addr, _ := strings.Cut(l, " ")
		ap := netip.MustParseAddrPort(addr)
		a := netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), ap.Port()).String()
		if network == "udp" && td.udp == "" {
			td.udp = a
		}
		if network == "tcp" && td.tcp == "" {
			td.tcp = a
		}
	}
}

func (td *testDaemon) stop() {
	if td.cancel == nil {
		return
	}
	td.cancel()
	td.cancel = nil
	select {
	case err := <-td.done:
		if err != nil {
			td.t.Errorf("daemon: %v", err)
		}
	case <-time.After(10 * time.Second):
		td.t.Error("daemon did not stop within 10s")
	}
}

func (td *testDaemon) restart() {
	td.stop()
	td.start()
}

func (td *testDaemon) status() *Status {
	td.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := FetchStatus(ctx, td.cfg.StateDir)
	if err != nil {
		td.t.Fatal(err)
	}
	return st
}

func (td *testDaemon) dial(network string) *oncrpc.Client {
	td.t.Helper()
	addr := td.udp
	if network == "tcp" {
		addr = td.tcp
	}
	return dialT(td.t, network, addr)
}

func dialT(t testing.TB, network, addr string, opts ...oncrpc.DialOption) *oncrpc.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	opts = append(opts, oncrpc.WithRetransmit(100*time.Millisecond, 500*time.Millisecond))
	c, err := oncrpc.Dial(ctx, network, addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// Typed calls of the seven procedures.

func callMon(ctx context.Context, c *oncrpc.Client, m nsm.Mon) (nsm.StatRes, error) {
	var r nsm.StatRes
	err := c.Call(ctx, nsm.Program, nsm.Version, nsm.ProcMon, func(e *xdr.Encoder) { m.Encode(e) }, r.Decode)
	return r, err
}

func callStat(ctx context.Context, c *oncrpc.Client, name string) (nsm.StatRes, error) {
	var r nsm.StatRes
	n := nsm.Name{MonName: name}
	err := c.Call(ctx, nsm.Program, nsm.Version, nsm.ProcStat, func(e *xdr.Encoder) { n.Encode(e) }, r.Decode)
	return r, err
}

func callUnmon(ctx context.Context, c *oncrpc.Client, id nsm.MonID) (nsm.Stat, error) {
	var r nsm.Stat
	err := c.Call(ctx, nsm.Program, nsm.Version, nsm.ProcUnmon, func(e *xdr.Encoder) { id.Encode(e) }, r.Decode)
	return r, err
}

func callUnmonAll(ctx context.Context, c *oncrpc.Client, my nsm.MyID) (nsm.Stat, error) {
	var r nsm.Stat
	err := c.Call(ctx, nsm.Program, nsm.Version, nsm.ProcUnmonAll, func(e *xdr.Encoder) { my.Encode(e) }, r.Decode)
	return r, err
}

func callNotify(ctx context.Context, c *oncrpc.Client, name string, state int32) error {
	sc := nsm.StatChange{MonName: name, State: state}
	return c.Call(ctx, nsm.Program, nsm.Version, nsm.ProcNotify, func(e *xdr.Encoder) { sc.Encode(e) }, nil)
}

func callSimuCrash(ctx context.Context, c *oncrpc.Client) error {
	return c.Call(ctx, nsm.Program, nsm.Version, nsm.ProcSimuCrash, nil, nil)
}

// registrant is an in-test lock manager: an RPC server that records the
// status callbacks it gets, registered with the fake rpcbind.
type registrant struct {
	prog, vers, proc uint32
	got              chan gotStatus
}

type gotStatus struct {
	st   nsm.Status
	from netip.AddrPort
}

func newRegistrant(t *testing.T, rpcb *fakeRPCBind, prog uint32) *registrant {
	t.Helper()
	r := &registrant{prog: prog, vers: 1, proc: 16, got: make(chan gotStatus, 100)}
	srv := &oncrpc.Server{Logger: slog.New(slog.DiscardHandler)}
	srv.Handle(prog, r.vers, r.proc, func(_ context.Context, call *oncrpc.Call, _ *xdr.Encoder) error {
		var st nsm.Status
		if err := st.Decode(call.Args); err != nil {
			return err
		}
		r.got <- gotStatus{st, call.Remote}
		return nil
	})
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.ServeUDP(pc)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	rpcb.set(prog, r.vers, rpcbind.ProtoUDP, pc.LocalAddr().(*net.UDPAddr).Port)
	return r
}

func (r *registrant) myID() nsm.MyID {
	return nsm.MyID{Name: "127.0.0.1", Prog: r.prog, Vers: r.vers, Proc: r.proc}
}

func (r *registrant) next(t *testing.T, within time.Duration) gotStatus {
	t.Helper()
	select {
	case g := <-r.got:
		return g
	case <-time.After(within):
		t.Fatalf("no callback within %v", within)
	}
	return gotStatus{}
}

func (r *registrant) none(t *testing.T, within time.Duration) {
	t.Helper()
	select {
	case g := <-r.got:
		t.Fatalf("unexpected callback %+v", g.st)
	case <-time.After(within):
	}
}

// fakePeer stands for remote statds: it listens for SM_NOTIFY on one port
// at each of the given loopback addresses (each one a "host"), records the
// calls, and is registered with the fake rpcbind that all of them share.
type fakePeer struct {
	mu    sync.Mutex
	got   []peerNotify
	srv   *oncrpc.Server
	port  int
	calls chan peerNotify
}

type peerNotify struct {
	to    netip.Addr // which "host" was notified
	from  netip.AddrPort
	name  string
	state int32
}

func newFakePeer(t *testing.T, rpcb *fakeRPCBind, hosts ...string) *fakePeer {
	t.Helper()
	p := &fakePeer{srv: &oncrpc.Server{Logger: slog.New(slog.DiscardHandler)}, calls: make(chan peerNotify, 100000)}
	p.srv.Handle(nsm.Program, nsm.Version, nsm.ProcNotify, func(_ context.Context, call *oncrpc.Call, _ *xdr.Encoder) error {
		var sc nsm.StatChange
		if err := sc.Decode(call.Args); err != nil {
			return err
		}
		n := peerNotify{to: call.Local.Addr(), from: call.Remote, name: sc.MonName, state: sc.State}
		p.mu.Lock()
		p.got = append(p.got, n)
		p.mu.Unlock()
		p.calls <- n
		return nil
	})
	for _, h := range hosts {
		pc, err := net.ListenPacket("udp4", net.JoinHostPort(h, strconv.Itoa(p.port)))
		if err != nil {
			t.Fatal(err)
		}
		p.port = pc.LocalAddr().(*net.UDPAddr).Port
		go p.srv.ServeUDP(pc)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		p.srv.Shutdown(ctx)
	})
	rpcb.set(nsm.Program, nsm.Version, rpcbind.ProtoUDP, p.port)
	return p
}

func (p *fakePeer) received() []peerNotify {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]peerNotify(nil), p.got...)
}

func isAuthTooWeak(err error) bool {
	return errors.Is(err, oncrpc.AuthError(oncrpc.AuthTooWeak))
}

// rawCall sends one UDP call from a chosen local address (which
// oncrpc.Client cannot pick) and returns the reply's error and results.
func rawCall(t *testing.T, from, to string, proc uint32, args func(*xdr.Encoder)) ([]byte, error) {
	t.Helper()
	la, err := net.ResolveUDPAddr("udp", from)
	if err != nil {
		t.Fatal(err)
	}
	ra, err := net.ResolveUDPAddr("udp", to)
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.DialUDP("udp", la, ra)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	e := xdr.NewEncoder(nil)
	h := oncrpc.CallHeader{XID: 77, RPCVersion: 2, Program: nsm.Program, Version: nsm.Version, Procedure: proc}
	h.Encode(e)
	if args != nil {
		args(e)
	}
	return exchangeUDP(c, e.Bytes())
}

// exchangeUDP sends an encoded call on a connected UDP socket, resending
// every 300 ms up to ten times, and returns the reply's results and error.
func exchangeUDP(c *net.UDPConn, call []byte) ([]byte, error) {
	buf := make([]byte, 9000)
	for try := 0; try < 10; try++ {
		c.Write(call)
		c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		n, err := c.Read(buf)
		if err != nil {
			continue
		}
		r, err := oncrpc.ParseReply(buf[:n])
		if err != nil {
			return nil, err
		}
		return r.Results, r.Err
	}
	return nil, errNoReply
}

var errNoReply = errors.New("no reply")
