package statd

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"github.com/hoststat/hoststat/nsm"
	"github.com/hoststat/hoststat/oncrpc"
	"github.com/hoststat/hoststat/oncrpc/rpcbind"
	"github.com/hoststat/hoststat/oncrpc/xdr"
)

// callbacker calls registrants back with status{mon_name, state, priv}.
// Always on loopback, whatever my_name says (CERT CA-99.05: a statd that
// calls where it is told can be made to attack third parties), at the port
// the local rpcbind gives for my_prog/my_vers, from a port below 1024 when
// we are root (the Linux lock manager ignores other callers). It makes one
// attempt per call: nsm.Core decides when, how often and with what state.
type callbacker struct {
	log      *slog.Logger
	mux      *oncrpc.Multicaller
	rpcbind  netip.AddrPort // the local rpcbind
	privWarn sync.Once
}

func newCallbacker(log *slog.Logger, mux *oncrpc.Multicaller, rpcbindPort int) *callbacker {
	return &callbacker{
		log: log, mux: mux,
		rpcbind: netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), uint16(rpcbindPort)),
	}
}

func (c *callbacker) call(ctx context.Context, cb nsm.Callback) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	network := "udp"
	port, err := lookupPort(ctx, c.mux, c.rpcbind, cb.MyID.Prog, cb.MyID.Vers, rpcbind.ProtoUDP)
	if err != nil {
		// A registrant may listen on TCP only.
		tport, terr := lookupPort(ctx, c.mux, c.rpcbind, cb.MyID.Prog, cb.MyID.Vers, rpcbind.ProtoTCP)
		if terr != nil {
			return fmt.Errorf("rpcbind lookup of %d/%d: %w", cb.MyID.Prog, cb.MyID.Vers, err)
		}
		network, port = "tcp", tport
	}
	addr := netip.AddrPortFrom(c.rpcbind.Addr(), port).String()
	var opts []oncrpc.DialOption
	if canBindReserved() {
		opts = append(opts, oncrpc.WithPrivilegedPort())
	} else {
		c.privWarn.Do(func() {
			c.log.Warn("not root: calling registrants back from unprivileged ports; the kernel lock manager will ignore them")
		})
	}
	opts = append(opts, oncrpc.WithRetransmit(200*time.Millisecond, time.Second))
	cl, err := oncrpc.Dial(ctx, network, addr, opts...)
	if err != nil {
		return err
	}
	defer cl.Close()
	st := nsm.Status{MonName: cb.MonName, State: cb.State, Priv: cb.Priv}
	return cl.Call(ctx, cb.MyID.Prog, cb.MyID.Vers, cb.MyID.Proc, func(e *xdr.Encoder) { st.Encode(e) }, nil)
}
