package statd

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/hoststat/hoststat/nsm"
	"github.com/hoststat/hoststat/oncrpc"
	"github.com/hoststat/hoststat/oncrpc/xdr"
)

// Refusals, and what the caller gets back. nfs-utils answers a remote
// SM_MON with stat_fail and state -1, and so do we. SM_UNMON, SM_UNMON_ALL
// and SM_SIMU_CRASH have no failure code in their results (nfs-utils answers
// them as if they had worked), so we deny them at the RPC level with
// AUTH_ERROR/AUTH_TOOWEAK: the caller learns it was refused, and why, without
// a result that looks like success. Bad names: stat_fail for SM_STAT and
// SM_MON (nfs-utils, FreeBSD); SM_UNMON of a name that cannot have been
// registered answers our state as for any unknown registration; a received
// SM_NOTIFY with a bad name is GARBAGE_ARGS.
const (
	reasonRemote      = "not from loopback"
	reasonUnprivPort  = "not from a privileged loopback port"
	reasonBadMonName  = "invalid mon_name"
	reasonBadMyName   = "invalid my_name"
	reasonRateLimited = "SM_NOTIFY rate limit"
	reasonProgram     = "callback program not allowed (--callback-program adds one)"
	reasonGarbage     = "arguments do not decode"
	reasonNotServed   = "my_name is an --identity another statd serves now"
)

func (d *daemon) handlers() map[uint32]oncrpc.Handler {
	return map[uint32]oncrpc.Handler{
		nsm.ProcNull:      d.null,
		nsm.ProcStat:      d.stat,
		nsm.ProcMon:       d.mon,
		nsm.ProcUnmon:     d.unmon,
		nsm.ProcUnmonAll:  d.unmonAll,
		nsm.ProcSimuCrash: d.simuCrash,
		nsm.ProcNotify:    d.notify,
	}
}

// refuse logs a refusal once per (caller, reason), the offending value
// quoted, and counts it.
func (d *daemon) refuse(call *oncrpc.Call, proc, reason, value string) {
	d.refused.Add(1)
	d.metrics.refused(proc, reason)
	log, skipped := d.refusals.first(call.Remote.Addr().String(), proc+": "+reason, time.Now())
	if !log {
		return
	}
	args := []any{"caller", call.Remote.String(), "transport", call.Transport, "reason", reason, "value", nsm.Quote(value),
		"note", "further identical refusals from this caller are not logged"}
	if skipped > 0 {
		args = append(args, "unlogged_refusals_before", skipped)
	}
	d.log.Warn("refused "+proc, args...)
}

// decode reads a call's arguments. Ones that do not decode are refused
// with GARBAGE_ARGS and logged like any other refusal, the decoder's
// complaint as the value.
func (d *daemon) decode(call *oncrpc.Call, proc string, arg interface{ Decode(*xdr.Decoder) error }) error {
	if err := arg.Decode(call.Args); err != nil {
		d.refuse(call, proc, reasonGarbage, err.Error())
		return err
	}
	return nil
}

func fromLoopback(call *oncrpc.Call) bool {
	return call.Remote.Addr().Unmap().IsLoopback()
}

func (d *daemon) null(_ context.Context, call *oncrpc.Call, _ *xdr.Encoder) error {
	d.log.Debug("SM_NULL", "caller", call.Remote.String(), "transport", call.Transport)
	return nil
}

// stat answers stat_succ when mon_name is valid and resolves (an address
// literal always does), as nfs-utils and FreeBSD do; both answers carry our
// state. A name the core looked up lately is answered from its cache;
// otherwise at most statLookups callers wait for a lookup at once, 2 s at
// most, and the rest get stat_fail at once: anyone may call SM_STAT, and
// names whose DNS never answers must not tie up the handlers loopback
// callers need.
func (d *daemon) stat(ctx context.Context, call *oncrpc.Call, res *xdr.Encoder) error {
	var arg nsm.Name
	if err := d.decode(call, "SM_STAT", &arg); err != nil {
		return err
	}
	state := d.proto.state.Load()
	if p := d.ids.at(call.Local.Addr()); p != nil {
		state = p.state.Load() // asked at an identity's address: its state
	}
	out := nsm.StatRes{Res: nsm.StatSucc, State: state}
	if err := nsm.ValidateMonName(arg.MonName); err != nil {
		d.refuse(call, "SM_STAT", reasonBadMonName, arg.MonName)
		out.Res = nsm.StatFail
	} else if _, err := netip.ParseAddr(arg.MonName); err != nil && !d.proto.resolves(ctx, arg.MonName) {
		out.Res = nsm.StatFail
	}
	if d.debug {
		d.log.Debug("SM_STAT", "caller", call.Remote.String(), "mon_name", nsm.Quote(arg.MonName), "res", out.Res.String(), "state", out.State)
	}
	return out.Encode(res)
}

// mon records a registration and answers only once it is on disk.
func (d *daemon) mon(ctx context.Context, call *oncrpc.Call, res *xdr.Encoder) error {
	var arg nsm.Mon
	if err := d.decode(call, "SM_MON", &arg); err != nil {
		return err
	}
	fail := nsm.StatRes{Res: nsm.StatFail, State: -1}
	if !fromLoopback(call) {
		d.refuse(call, "SM_MON", reasonRemote, arg.ID.MonName)
		return fail.Encode(res)
	}
	if err := nsm.ValidateMonName(arg.ID.MonName); err != nil {
		d.refuse(call, "SM_MON", reasonBadMonName, arg.ID.MonName)
		return fail.Encode(res)
	}
	if err := nsm.ValidateMyName(arg.ID.MyID.Name); err != nil {
		d.refuse(call, "SM_MON", reasonBadMyName, arg.ID.MyID.Name)
		return fail.Encode(res)
	}
	p, ok := d.protoFor(call, "SM_MON", arg.ID.MyID.Name)
	if !ok {
		return fail.Encode(res)
	}
	reg := nsm.Registration{MonName: arg.ID.MonName, MyID: arg.ID.MyID, Priv: arg.Priv, Registered: time.Now()}
	changed, err := p.mon(ctx, reg)
	if err != nil {
		if errors.Is(err, nsm.ErrProgramNotAllowed) {
			d.refuse(call, "SM_MON", reasonProgram, fmt.Sprintf("%s my_prog %d", reg.MonName, reg.MyID.Prog))
			return fail.Encode(res)
		}
		d.log.Error("SM_MON not recorded", "mon_name", nsm.Quote(reg.MonName), "my_name", nsm.Quote(reg.MyID.Name), "err", err)
		return fail.Encode(res)
	}
	if changed {
		d.ha.addClient(reg.MonName, reg.MyID.Name) // not again for a repeat (a retransmission, say)
	}
	out := nsm.StatRes{Res: nsm.StatSucc, State: p.state.Load()}
	if d.debug {
		d.log.Debug("SM_MON", "mon_name", nsm.Quote(reg.MonName), "my_name", nsm.Quote(reg.MyID.Name),
			"my_prog", reg.MyID.Prog, "my_vers", reg.MyID.Vers, "my_proc", reg.MyID.Proc, "state", out.State)
	}
	return out.Encode(res)
}

func (d *daemon) unmon(ctx context.Context, call *oncrpc.Call, res *xdr.Encoder) error {
	var arg nsm.MonID
	if err := d.decode(call, "SM_UNMON", &arg); err != nil {
		return err
	}
	if !fromLoopback(call) {
		d.refuse(call, "SM_UNMON", reasonRemote, arg.MonName)
		return oncrpc.AuthError(oncrpc.AuthTooWeak)
	}
	p, ok := d.protoFor(call, "SM_UNMON", arg.MyID.Name)
	if !ok {
		return oncrpc.ErrSystem
	}
	out := nsm.Stat{State: p.state.Load()}
	if nsm.ValidateMonName(arg.MonName) != nil {
		// Nothing by that name can have been registered.
		d.refuse(call, "SM_UNMON", reasonBadMonName, arg.MonName)
		return out.Encode(res)
	}
	found, err := p.unmon(ctx, arg.MonName, arg.MyID)
	if err != nil {
		d.log.Error("SM_UNMON not recorded", "mon_name", nsm.Quote(arg.MonName), "err", err)
		return oncrpc.ErrSystem
	}
	if found {
		d.ha.delClient(arg.MonName, arg.MyID.Name)
	}
	d.log.Debug("SM_UNMON", "mon_name", nsm.Quote(arg.MonName), "my_name", nsm.Quote(arg.MyID.Name), "found", found)
	return out.Encode(res)
}

func (d *daemon) unmonAll(ctx context.Context, call *oncrpc.Call, res *xdr.Encoder) error {
	var arg nsm.MyID
	if err := d.decode(call, "SM_UNMON_ALL", &arg); err != nil {
		return err
	}
	if !fromLoopback(call) {
		d.refuse(call, "SM_UNMON_ALL", reasonRemote, arg.Name)
		return oncrpc.AuthError(oncrpc.AuthTooWeak)
	}
	p, ok := d.protoFor(call, "SM_UNMON_ALL", arg.Name)
	if !ok {
		return oncrpc.ErrSystem
	}
	hosts, err := p.unmonAll(ctx, arg)
	if err != nil {
		d.log.Error("SM_UNMON_ALL not recorded", "my_name", nsm.Quote(arg.Name), "err", err)
		return oncrpc.ErrSystem
	}
	for _, h := range hosts {
		d.ha.delClient(h, arg.Name)
	}
	d.log.Debug("SM_UNMON_ALL", "my_name", nsm.Quote(arg.Name), "hosts", len(hosts))
	return (&nsm.Stat{State: p.state.Load()}).Encode(res)
}

// simuCrash moves the state on by two and owes every monitored host a
// notification, keeping the registrations (FreeBSD's reading: the local
// lock manager did not crash and will not register again): planned by the
// core, persisted, applied, and only then answered. A retransmission of
// the same call is answered from the server's reply cache, not run again.
func (d *daemon) simuCrash(ctx context.Context, call *oncrpc.Call, _ *xdr.Encoder) error {
	if !fromLoopback(call) || call.Remote.Port() >= 1024 {
		d.refuse(call, "SM_SIMU_CRASH", reasonUnprivPort, call.Remote.String())
		return oncrpc.AuthError(oncrpc.AuthTooWeak)
	}
	p := d.proto
	unlock := p.lockAll()
	p.mu.Lock()
	rd, state, err := p.core.SimuCrash(p.now())
	p.mu.Unlock()
	if err == nil {
		err = p.commit(ctx, rd.Persist)
	}
	unlock()
	if err != nil {
		d.log.Error("SM_SIMU_CRASH failed", "err", err)
		return oncrpc.ErrSystem
	}
	d.log.Warn("SM_SIMU_CRASH: simulating a crash", "caller", call.Remote.String(), "state", state, "owed", len(rd.Persist)-1)
	p.kick() // the new debts are due now
	return nil
}

// protoFor is the shell a registrant's call goes to: the identity my_name
// names, else the host's own. A call for an identity another statd serves
// now is refused (false) and logged.
func (d *daemon) protoFor(call *oncrpc.Call, proc, myName string) (*protocol, bool) {
	p, isIdentity := d.ids.route(myName)
	switch {
	case !isIdentity:
		return d.proto, true
	case p == nil:
		d.refuse(call, proc, reasonNotServed, myName)
		return nil, false
	}
	return p, true
}

// notify handles a peer's SM_NOTIFY: find who asked about that host and
// call each back on loopback, off the RPC path.
func (d *daemon) notify(_ context.Context, call *oncrpc.Call, _ *xdr.Encoder) error {
	var arg nsm.StatChange
	if err := d.decode(call, "SM_NOTIFY", &arg); err != nil {
		return err
	}
	if err := nsm.ValidateMonName(arg.MonName); err != nil {
		d.refuse(call, "SM_NOTIFY", reasonBadMonName, arg.MonName)
		return oncrpc.ErrGarbageArgs
	}
	sender := call.Remote.Addr()
	got := d.proto.notify(arg.MonName, arg.State, sender)
	for _, p := range d.ids.all() {
		// A peer's reboot concerns the registrations of every identity.
		g := p.notify(arg.MonName, arg.State, sender)
		got.Matched += g.Matched
		got.Limited = got.Limited || g.Limited
		got.Parked = got.Parked || g.Parked
	}
	if got.Limited || got.Matched == 0 && !d.limiter.Allow(sender, time.Now()) {
		// Too many: drop without a reply, so a flood costs us no more than
		// reading it. A matched one has still recorded its state (the
		// registrants hear the latest), at no cost but that.
		d.refuse(call, "SM_NOTIFY", reasonRateLimited, arg.MonName)
		return oncrpc.ErrDrop
	}
	d.ha.smNotify(arg.MonName, sender.String(), arg.State)
	if got.Matched == 0 {
		d.log.Debug("SM_NOTIFY for a host nobody monitors (yet: its name may be looked up)", "caller", call.Remote.String(),
			"mon_name", nsm.Quote(arg.MonName), "state", arg.State, "lookup", got.Parked)
		return nil
	}
	d.log.Info("SM_NOTIFY", "caller", call.Remote.String(), "mon_name", nsm.Quote(arg.MonName), "state", arg.State,
		"registrations", got.Matched)
	return nil
}
