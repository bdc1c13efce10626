package oncrpc

import (
	"context"
	"log/slog"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hoststat/hoststat/oncrpc/xdr"
)

// TestHandleOnceAnswersRetransmissionsFromCache: a procedure registered
// with HandleOnce runs once for a call retransmitted with the same xid
// from the same socket (the retransmission gets the first reply), again
// for a new xid or another caller, and again once the bounded cache has
// forgotten the call; one registered with Handle runs every time (before
// the cache, SM_SIMU_CRASH retransmitted moved the state twice).
func TestHandleOnceAnswersRetransmissionsFromCache(t *testing.T) {
	const procOnce, procPlain = 20, 21
	s := &Server{Logger: slog.New(slog.DiscardHandler), ReplyCacheSize: 2}
	var once, plain atomic.Uint32
	s.HandleOnce(testProg, 1, procOnce, func(_ context.Context, _ *Call, res *xdr.Encoder) error {
		res.Uint32(once.Add(1))
		return nil
	})
	s.Handle(testProg, 1, procPlain, func(_ context.Context, _ *Call, res *xdr.Encoder) error {
		res.Uint32(plain.Add(1))
		return nil
	})
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.ServeUDP(pc)
	t.Cleanup(func() { s.Shutdown(context.Background()) })
	dial := func() *net.UDPConn {
		c, err := net.DialUDP("udp4", nil, pc.LocalAddr().(*net.UDPAddr))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	call := func(c *net.UDPConn, xid, proc uint32) uint32 {
		t.Helper()
		e := xdr.NewEncoder(nil)
		(&CallHeader{XID: xid, RPCVersion: 2, Program: testProg, Version: 1, Procedure: proc}).Encode(e)
		buf := make([]byte, 512)
		c.Write(e.Bytes())
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := c.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		r, err := ParseReply(buf[:n])
		if err != nil || r.XID != xid {
			t.Fatalf("reply %+v, %v", r, err)
		}
		d := xdr.NewDecoder(r.Results)
		return d.Uint32()
	}
	a, b := dial(), dial()
	for i, step := range []struct {
		c         *net.UDPConn
		xid, proc uint32
		want      uint32
	}{
		{a, 7, procOnce, 1},
		{a, 7, procOnce, 1}, // retransmission: the first reply
		{a, 7, procOnce, 1},
		{a, 8, procOnce, 2},  // a new call
		{b, 7, procOnce, 3},  // another caller, same xid
		{a, 7, procOnce, 4},  // forgotten: the cache holds two calls
		{a, 7, procPlain, 1}, // idempotent procedures are not cached
		{a, 7, procPlain, 2},
	} {
		if got := call(step.c, step.xid, step.proc); got != step.want {
			t.Fatalf("step %d: handler's count %d, want %d", i, got, step.want)
		}
	}
}
