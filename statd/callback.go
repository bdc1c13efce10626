package statd

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
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
// we are root (the Linux lock manager ignores other callers). Each callback
// runs on its own goroutine, at most cap(sem) at once, and is retried on
// a short schedule: the registrant may be restarting too.
type callbacker struct {
	ctx      context.Context
	log      *slog.Logger
	mux      *datagramMux
	rpcbind  netip.AddrPort // the local rpcbind
	sem      chan struct{}
	delays   []time.Duration
	wg       sync.WaitGroup
	privWarn sync.Once

	delivered, failed atomic.Uint64
}

func newCallbacker(ctx context.Context, log *slog.Logger, mux *datagramMux, rpcbindPort int) *callbacker {
	return &callbacker{
		ctx: ctx, log: log, mux: mux,
		rpcbind: netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), uint16(rpcbindPort)),
		sem:     make(chan struct{}, 64),
		delays:  []time.Duration{0, time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second, 30 * time.Second, 60 * time.Second},
	}
}

func (c *callbacker) enqueue(cb callback) {
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		for i, delay := range c.delays {
			select {
			case <-c.ctx.Done():
				return
			case <-time.After(delay):
			}
			select {
			case c.sem <- struct{}{}:
			case <-c.ctx.Done():
				return
			}
			err := c.call(cb)
			<-c.sem
			if err == nil {
				c.delivered.Add(1)
				c.log.Info("called registrant back", "mon_name", nsm.Quote(cb.monName), "state", cb.state,
					"my_prog", cb.my.Prog, "my_vers", cb.my.Vers, "my_proc", cb.my.Proc)
				return
			}
			c.log.Warn("callback failed", "mon_name", nsm.Quote(cb.monName), "my_prog", cb.my.Prog,
				"my_vers", cb.my.Vers, "my_proc", cb.my.Proc, "attempt", i+1, "err", err)
		}
		c.failed.Add(1)
		c.log.Error("gave up calling registrant back", "mon_name", nsm.Quote(cb.monName), "state", cb.state,
			"my_prog", cb.my.Prog, "my_vers", cb.my.Vers, "my_proc", cb.my.Proc)
	}()
}

func (c *callbacker) call(cb callback) error {
	ctx, cancel := context.WithTimeout(c.ctx, 5*time.Second)
	defer cancel()
	network := "udp"
	port, err := c.mux.lookup(ctx, c.rpcbind, cb.my.Prog, cb.my.Vers, rpcbind.ProtoUDP)
	if err != nil {
		// A registrant may listen on TCP only.
		tport, terr := c.mux.lookup(ctx, c.rpcbind, cb.my.Prog, cb.my.Vers, rpcbind.ProtoTCP)
		if terr != nil {
			return fmt.Errorf("rpcbind lookup of %d/%d: %w", cb.my.Prog, cb.my.Vers, err)
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
	st := nsm.Status{MonName: cb.monName, State: cb.state, Priv: cb.priv}
	return cl.Call(ctx, cb.my.Prog, cb.my.Vers, cb.my.Proc, func(e *xdr.Encoder) { st.Encode(e) }, nil)
}

func (c *callbacker) wait() { c.wg.Wait() }
