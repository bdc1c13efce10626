// Package statd is hoststat's rpc.statd: the NSM daemon shell that wires the
// nsm package (store, schedule, matching) to ONC RPC sockets. It serves the
// seven SM_PROG procedures over UDP and TCP on IPv4 and IPv6, registers with
// the local rpcbind, notifies peers after a reboot, calls local registrants
// back when a peer reboots, and answers statdctl on a unix socket.
//
// The protocol decisions live in nsm as pure code; this package holds the
// goroutines, sockets and timers, and as little logic as it can.
package statd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hoststat/hoststat/nsm"
	"github.com/hoststat/hoststat/nsm/etcdstore"
	"github.com/hoststat/hoststat/oncrpc"
)

// StoreFileName is the bbolt file inside the state directory.
const StoreFileName = "statd.db"

type daemon struct {
	cfg      Config
	log      *slog.Logger
	debug    bool        // debug records enabled: skip building them otherwise
	store    nsm.Storage // bbolt (*nsm.Store) or etcd (*etcdStorage)
	bootID   string
	started  time.Time
	proto    *protocol
	refusals *refusalLog
	refused  atomic.Uint64
	limiter  *nsm.RateLimiter
	ha       *haCallout
	mux      *oncrpc.Multicaller
	metrics  *metrics

	srv       *oncrpc.Server
	listeners []string
	ports     map[string]int // netid → port we serve on

	hub *telemetryHub // the one watcher of the table; nil without --telemetry
	tel *telemetry    // the host's own identity's (d.proto.tel); nil without --telemetry

	ids *identities // nil without --identity
}

// open does what both modes share: the state directory, the store, the
// reboot-versus-restart step and the outgoing socket.
func open(cfg Config, forceReboot bool) (*daemon, nsm.StartResult, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, nsm.StartResult{}, err
	}
	d := &daemon{cfg: cfg, log: cfg.Logger, debug: cfg.Logger.Enabled(context.Background(), slog.LevelDebug), started: time.Now(), refusals: newRefusalLog(),
		limiter: nsm.NewRateLimiter(1, 10, 4096), metrics: newMetrics()}
	if d.bootID, err = ReadBootID(cfg.BootIDPath); err != nil {
		return nil, nsm.StartResult{}, err
	}
	if cfg.Etcd != nil {
		d.store, err = openEtcd(cfg, d.log)
	} else {
		d.store, err = openStore(cfg, d.bootID, d.log, nsm.WithCommitHook(d.metrics.observeCommit))
	}
	if err != nil {
		return nil, nsm.StartResult{}, err
	}
	core := d.newCore()
	res, err := nsm.StartCore(context.Background(), d.store, core, d.bootID, forceReboot, time.Now())
	if err != nil {
		d.store.Close()
		return nil, res, err
	}
	d.log.Info("rpc.statd starting", "name", nsm.Quote(cfg.Name), "state", res.State, "previous_state", res.PrevState,
		"rebooted", res.Rebooted, "reason", res.Reason, "registrations_dropped", res.Dropped, "owed", res.Owed,
		"state_dir", cfg.StateDir, "store", d.storeName())
	if d.mux, err = oncrpc.ListenMulticaller(cfg.OutgoingPort); err != nil {
		d.store.Close()
		return nil, res, err
	}
	peer := &peerNotifier{mux: d.mux, resolver: cfg.Resolver, names: notifyNames(cfg.Name), rpcbPort: uint16(cfg.RPCBindPort), timeout: cfg.NotifyTimeout}
	d.proto = newProtocol(d.log, d.store, core, cfg.Resolver, newCallbacker(d.log, d.mux, cfg.RPCBindPort).call, peer)
	return d, res, nil
}

// newCore is a Core as the configuration asks, for the host's own
// identity and for each --identity.
func (d *daemon) newCore() *nsm.Core {
	cfg := d.cfg
	return nsm.NewCore(nsm.CoreConfig{AllowedPrograms: cfg.CallbackPrograms, Notify: cfg.Schedule,
		MaxNotifyInFlight: cfg.NotifyWorkers, NotifyOnRequest: cfg.NoNotify})
}

// registrations lists the host identity's registrations: from the bbolt
// store, or with etcd from the core, which holds what etcd acknowledged
// (memory is a cache of the store), so statdctl and metrics answer while
// etcd does not.
func (d *daemon) registrations() ([]nsm.Registration, error) {
	if _, ok := d.store.(*etcdStorage); !ok {
		return d.store.Registrations()
	}
	return d.proto.registrations(), nil
}

// owed lists the host identity's debts, as registrations does.
func (d *daemon) owed() ([]nsm.Owed, error) {
	if _, ok := d.store.(*etcdStorage); !ok {
		return d.store.Owed()
	}
	return d.proto.owedNow(), nil
}

// storeName says where the state is kept, for the log.
func (d *daemon) storeName() string {
	if e := d.cfg.Etcd; e != nil {
		return fmt.Sprintf("etcd %v %s", e.Endpoints, etcdstore.IdentityPrefix(e.Prefix, d.cfg.Name))
	}
	return "bbolt " + filepath.Join(d.cfg.StateDir, StoreFileName)
}

// NotifySummary is the outcome of NotifyOnce.
type NotifySummary struct {
	State    int32 `json:"state"`
	Total    int   `json:"total"`    // hosts owed at the start of the pass
	Notified int   `json:"notified"` // reached in this pass
	Owed     int   `json:"owed"`     // still owed afterwards (left for the daemon)
	// Daemon is the pid of the running daemon that made the pass; 0 when
	// NotifyOnce made it itself.
	Daemon int `json:"pid,omitempty"`
}

// NotifyOnce is `rpc.statd -n`. When a daemon runs on cfg.StateDir it asks
// that daemon (admin socket) to make the pass now, at its state: the daemon
// already made the reboot step when it started in this boot, so the state
// does not move again. Otherwise it makes the reboot step itself, whatever
// the boot id says, and one pass over every host owed. Either way it
// returns the count of hosts still owed.
func NotifyOnce(ctx context.Context, cfg Config) (NotifySummary, error) {
	dir := cfg.StateDir
	if dir == "" {
		dir = DefaultStateDir
	}
	var sum NotifySummary
	err := askAdmin(ctx, dir, adminRequest{Op: AdminNotify}, &sum)
	if err == nil || !errors.Is(err, errNoDaemon) {
		return sum, err
	}
	d, _, err := open(cfg, true)
	if err != nil {
		return NotifySummary{}, err
	}
	defer d.store.Close()
	defer d.mux.Close()
	// A retry falling due during the pass is cut short when it ends: one
	// attempt each (the store keeps the first outcome).
	pctx, cancel := context.WithCancel(ctx)
	defer d.proto.wg.Wait()
	defer cancel()
	d.proto.ctx = pctx
	return d.notifyPass(ctx)
}

// notifyPass is one attempt at every host owed.
func (d *daemon) notifyPass(ctx context.Context) (NotifySummary, error) {
	start := time.Now()
	notified, total := d.proto.notifyPass(ctx)
	d.proto.mu.Lock()
	left := d.proto.core.OwedLen()
	d.proto.mu.Unlock()
	sum := NotifySummary{State: d.proto.state.Load(), Total: total, Notified: notified, Owed: left}
	d.log.Info("notification pass done", "state", sum.State, "notified", notified, "of", total,
		"still_owed", sum.Owed, "took", time.Since(start).Round(time.Millisecond))
	return sum, nil
}

// answerAdmin answers one admin socket request.
func (d *daemon) answerAdmin(ctx context.Context, req adminRequest) (any, error) {
	switch req.Op {
	case AdminForget:
		return d.forget(ctx, req.Host, req.Identity, "statdctl forget")
	case AdminNotify:
	default:
		return d.status()
	}
	d.log.Info("notification pass asked for (rpc.statd -n)")
	sum, err := d.notifyPass(ctx)
	sum.Daemon = os.Getpid()
	return sum, err
}

// Run serves until ctx ends: after the start step it listens, registers
// with rpcbind, starts notifying, answers the admin socket, and calls ready
// once all of that is in place. On the way out it unregisters and lets
// calls in flight finish.
func Run(ctx context.Context, cfg Config, ready func()) error {
	d, res, err := open(cfg, false)
	if err != nil {
		return err
	}
	defer d.store.Close()
	defer d.mux.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	d.ha = newHACallout(d.cfg.HACallout, d.log)
	defer d.ha.close()

	if d.cfg.Telemetry != "" {
		d.hub = newTelemetryHub(d.log, d.cfg)
	}
	d.tel = d.telemetryFor(ctx, d.proto, "", d.log)
	d.proto.ctx = ctx
	protoDone := make(chan struct{})
	go func() {
		defer close(protoDone)
		d.proto.run(ctx)
	}()
	defer func() { <-protoDone }()
	defer cancel()

	if err := d.listen(); err != nil {
		sctx, scancel := context.WithTimeout(context.Background(), time.Second)
		d.srv.Shutdown(sctx)
		scancel()
		return err
	}
	defer func() {
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		d.srv.Shutdown(sctx)
		scancel()
	}()
	stopMetrics, err := d.serveMetrics()
	if err != nil {
		return err
	}
	defer stopMetrics()
	if d.cfg.Register {
		if err := d.register(ctx); err != nil {
			return err
		}
		defer d.unregister()
	}
	admin, err := listenAdmin(d.cfg.StateDir, func(req adminRequest) (any, error) { return d.answerAdmin(ctx, req) }, d.log)
	if err != nil {
		return err
	}
	defer admin.close()
	if err := d.dropPrivileges(); err != nil {
		return err
	}

	if !d.cfg.NoNotify && res.Rebooted && d.cfg.EndGracePath != "" {
		d.proto.owed.grace = &graceAfterReboot{path: d.cfg.EndGracePath, settle: d.cfg.GraceSettle, log: d.log, ended: &d.proto.owed.graceEnded}
		d.proto.owed.grace.armed.Store(true)
	}
	if d.cfg.NoNotify && res.Owed > 0 {
		// Debts already tried were asked for (rpc.statd -n) in this boot,
		// before this daemon restarted: the core carries on with them.
		d.log.Info("not notifying hosts owed a notification until rpc.statd -n asks (-L)", "owed", res.Owed)
	}
	if d.tel != nil {
		// Liveness before the first attempts: a debt to a host telemetry
		// shows down waits for its return from the start.
		d.tel.start()
	}
	d.proto.mu.Lock()
	rd := d.proto.core.StartNotifying(d.proto.now())
	d.proto.mu.Unlock()
	d.proto.act(rd)
	d.proto.owedChanged()
	d.proto.kick()
	if d.tel != nil {
		var tels sync.WaitGroup
		tels.Add(2)
		go func() {
			defer tels.Done()
			d.tel.run(ctx)
		}()
		go func() {
			defer tels.Done()
			d.hub.run(ctx) // the one scan of the table, for every identity
		}()
		defer tels.Wait()
		d.log.Info("following the telemetry table", "dir", d.cfg.Telemetry)
	}
	d.proto.mu.Lock()
	nregs := d.proto.core.Len()
	d.proto.mu.Unlock()
	if len(d.cfg.Identities) > 0 {
		d.ids = newIdentities(d.cfg.Identities)
		defer d.serveIdentities(ctx)()
		defer cancel()
	}
	d.log.Info("rpc.statd serving", "listeners", d.listeners, "registrations", nregs, "state", d.proto.state.Load())
	if ready != nil {
		ready()
	}
	<-ctx.Done()
	d.log.Info("rpc.statd stopping")
	return nil
}

// listen opens UDP and TCP sockets on every configured address, on one
// port: -p's, or the ephemeral port the first socket got, so rpcinfo shows
// one port (as nfs-utils' statd does when it can).
func (d *daemon) listen() error {
	d.srv = &oncrpc.Server{Logger: d.log}
	for proc, h := range d.handlers() {
		if proc == nsm.ProcSimuCrash {
			d.srv.HandleOnce(nsm.Program, nsm.Version, proc, h) // moves the state: a retransmission must not move it again
			continue
		}
		d.srv.Handle(nsm.Program, nsm.Version, proc, h)
	}
	d.ports = map[string]int{}
	port := d.cfg.Port
	for _, a := range d.cfg.Listen {
		v6 := a.Is6()
		udpNet, tcpNet, udpID, tcpID := "udp4", "tcp4", "udp", "tcp"
		if v6 {
			udpNet, tcpNet, udpID, tcpID = "udp6", "tcp6", "udp6", "tcp6"
		}
		pc, ln, p, err := listenPair(udpNet, tcpNet, a, port)
		if err != nil {
			if v6 && len(d.ports) > 0 && !errors.Is(err, syscall.EADDRINUSE) {
				// No IPv6 here (disabled, or a namespace without it): serve IPv4.
				d.log.Warn("not serving IPv6", "err", err)
				continue
			}
			return fmt.Errorf("cannot listen: %w", err)
		}
		port = p
		d.ports[udpID], d.ports[tcpID] = p, p
		d.listeners = append(d.listeners, "udp "+pc.LocalAddr().String(), "tcp "+ln.Addr().String())
		go d.srv.ServeUDP(pc)
		go d.srv.ServeTCP(ln)
	}
	if len(d.ports) == 0 {
		return errors.New("cannot listen: no address to listen on")
	}
	return nil
}

// listenPair opens UDP and TCP on the same port; with port 0 it retries a
// few times if the TCP side of the UDP's ephemeral port is taken.
func listenPair(udpNet, tcpNet string, a netip.Addr, port int) (net.PacketConn, net.Listener, int, error) {
	for try := 0; ; try++ {
		pc, err := net.ListenPacket(udpNet, net.JoinHostPort(a.String(), strconv.Itoa(port)))
		if err != nil {
			return nil, nil, 0, err
		}
		p := pc.LocalAddr().(*net.UDPAddr).Port
		ln, err := net.Listen(tcpNet, net.JoinHostPort(a.String(), strconv.Itoa(p)))
		if err == nil {
			return pc, ln, p, nil
		}
		pc.Close()
		if port != 0 || try >= 20 {
			return nil, nil, 0, err
		}
	}
}

// status builds the admin view from the store and the schedule, and for
// each identity served from its core (what etcd acknowledged).
func (d *daemon) status() (*Status, error) {
	regs, err := d.registrations()
	if err != nil {
		return nil, err
	}
	st := &Status{Name: d.cfg.Name, State: d.proto.state.Load(), Pid: os.Getpid(), BootID: d.bootID,
		StateDir: d.cfg.StateDir, Started: d.started, Listeners: d.listeners,
		StoreErrors:        d.proto.storeErrors.Load(),
		CallbacksDelivered: d.proto.delivered.Load(), CallbacksGivenUp: d.proto.failed.Load(),
		HACalloutsDropped: d.ha.droppedTotal(), Metrics: d.metrics.addr, Serving: d.ids.list()}
	st.Monitored, st.Owed = d.view(regs, d.proto.pendingOwed(), d.tel)
	for _, name := range st.Serving {
		p, _ := d.ids.route(name)
		if p == nil {
			continue // lost since list
		}
		regs := p.registrations()
		is := IdentityStatus{Name: name, State: p.state.Load()}
		is.Monitored, is.Owed = d.view(regs, p.pendingOwed(), p.tel)
		st.Identities = append(st.Identities, is)
	}
	return st, nil
}

// view is one identity's registrations (sorted by mon_name) and debts as
// the admin status shows them, with what that identity's telemetry (nil
// without) says of each host.
func (d *daemon) view(regs []nsm.Registration, pending []nsm.OwedInfo, tel *telemetry) ([]Monitored, []Owed) {
	mon, owed := []Monitored{}, []Owed{}
	for _, r := range regs {
		if n := len(mon); n == 0 || mon[n-1].MonName != r.MonName {
			mon = append(mon, Monitored{MonName: r.MonName, Liveness: tel.liveness(r.MonName)})
		}
		m := &mon[len(mon)-1]
		m.Registrants = append(m.Registrants, Registrant{MyName: r.MyID.Name, Prog: r.MyID.Prog,
			Vers: r.MyID.Vers, Proc: r.MyID.Proc, Priv: fmt.Sprintf("%x", r.Priv)})
	}
	for _, o := range pending {
		ow := Owed{Host: o.Host, State: o.State, Since: o.FirstOwed, Attempts: o.Attempts,
			NextTry: o.NextTry, GiveUp: o.FirstOwed.Add(d.cfg.Schedule.GiveUpAfter), LastErr: o.LastErr,
			Liveness: tel.liveness(o.Host)}
		if ow.Liveness != nil && ow.Liveness.State != "unknown" {
			ow.GiveUp = time.Time{} // until gone
		}
		owed = append(owed, ow)
	}
	sort.Slice(owed, func(i, j int) bool { return owed[i].Host < owed[j].Host })
	return mon, owed
}
