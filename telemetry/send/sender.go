// Package send is sendstats, the node agent, as a library: a schedule
// state machine (Agent) and the thin shell around it (Sender) that samples
// /proc, encodes, sends to the group and to masters, and answers update
// requests.
package send

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/hoststat/hoststat/internal/rawio"
	"github.com/hoststat/hoststat/telemetry/sample"
	"github.com/hoststat/hoststat/telemetry/wire"
)

// DefaultRate is the default sampling period.
const DefaultRate = time.Second

// AnswerGap is the least time between two answers to update requests.
const AnswerGap = 100 * time.Millisecond

// DefaultDetailsEvery is how many samples apart the details datagram
// goes by default: the hostname and the filesystems are re-read every
// 10 s (sample.DefaultFilesystemInterval), so at the default period the
// details go when they may have changed, and a master shows disk rates
// over 10 s. A master keeps the last details in between.
const DefaultDetailsEvery = 10

// NoNode: the master derives the node number from our address.
const NoNode = -1

// Config describes an agent.
type Config struct {
	Rate      time.Duration // default DefaultRate
	Interface string        // multicast on this interface; empty: none
	Group     netip.Addr    // default wire.DefaultGroup
	Port      int           // the group's port; default wire.DefaultPort
	Masters   []netip.AddrPort
	// MasterNames are resolved while running: until they resolve (every
	// few seconds), and again every ResolveEvery, so the agent follows a
	// master that moves.
	MasterNames  []Master
	ResolveEvery time.Duration // default DefaultResolveEvery
	Lookup       LookupFunc    // default net.DefaultResolver.LookupNetIP
	Node         int           // NoNode (or any negative): assigned by the master
	Key          []byte

	// NoDetails leaves out the details datagram (hostname, disks,
	// filesystems): a master older than it counts each one as a
	// malformed drop.
	NoDetails bool
	// DetailsEvery sends the details datagram before one sample in this
	// many (default DefaultDetailsEvery; 1: every sample), and also
	// before the first, before an answer to an update request and as
	// soon as the hostname or the filesystems changed. The disks are
	// read only for those samples.
	DetailsEvery int
	// NetworkFilesystems reports NFS and other network mounts too (the
	// collector leaves them out by default).
	NetworkFilesystems bool

	ProcRoot string                     // default /proc
	Collect  func(*sample.Sample) error // replaces the /proc collector (tests)
	Logger   *slog.Logger
	// Transport replaces the UDP sockets (tests).
	Transport Transport
	Now       func() time.Time
}

// Sender is a running agent.
type Sender struct {
	cfg     Config
	log     *slog.Logger
	tr      Transport
	agent   *Agent
	collect func(*sample.Sample) error
	coll    *sample.Collector // nil when Config.Collect replaces it
	closeFn func() error
	enc     *wire.Encoder
	parser  *wire.Parser
	guard   *wire.Guard
	dests   []netip.AddrPort // the group, Masters, then resolved MasterNames
	fixed   int              // dests[:fixed] never change
	node    uint32

	smp     sample.Sample
	bufs    [][]byte
	details []byte
	out     [][]byte // details, then bufs
	sent    int      // datagrams of the last sample, details included
	cut     bool     // said once that details were left out
	// sinceDetails counts the samples since the details last went (0:
	// never); sentHost and sentFS are what those details said.
	sinceDetails int
	sentHost     string
	sentFS       []sample.Filesystem
	seq          uint32

	answered atomic.Uint64 // samples sent in answer to a request
	rejected atomic.Uint64 // requests refused (bad MAC, replay, not for us)
	failing  map[netip.AddrPort]bool
}

// New opens the /proc collector and the sockets. When it returns without
// error the agent can run.
func New(cfg Config) (*Sender, error) {
	if cfg.Rate <= 0 {
		cfg.Rate = DefaultRate
	}
	if cfg.DetailsEvery <= 0 {
		cfg.DetailsEvery = DefaultDetailsEvery
	}
	if !cfg.Group.IsValid() {
		cfg.Group = wire.DefaultGroup
	}
	if cfg.Port == 0 {
		cfg.Port = wire.DefaultPort
	}
	if cfg.ProcRoot == "" {
		cfg.ProcRoot = "/proc"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.ResolveEvery <= 0 {
		cfg.ResolveEvery = DefaultResolveEvery
	}
	if cfg.Lookup == nil {
		cfg.Lookup = net.DefaultResolver.LookupNetIP
	}
	if cfg.Interface == "" && len(cfg.Masters) == 0 && len(cfg.MasterNames) == 0 && cfg.Transport == nil {
		return nil, errors.New("nowhere to send: give an interface for multicast or master addresses")
	}
	s := &Sender{cfg: cfg, log: cfg.Logger, collect: cfg.Collect, failing: map[netip.AddrPort]bool{}}
	s.node = wire.NoNode
	if cfg.Node >= 0 {
		s.node = uint32(cfg.Node)
	}
	if s.collect == nil {
		c, err := sample.NewCollector(cfg.ProcRoot, cfg.Logger)
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", cfg.ProcRoot, err)
		}
		c.NetworkFilesystems = cfg.NetworkFilesystems
		s.collect, s.closeFn, s.coll = c.Collect, c.Close, c
	}
	if cfg.Interface != "" {
		s.dests = append(s.dests, netip.AddrPortFrom(cfg.Group, uint16(cfg.Port)))
	}
	s.dests = append(s.dests, cfg.Masters...)
	s.fixed = len(s.dests)
	s.tr = cfg.Transport
	if s.tr == nil {
		v6 := len(cfg.MasterNames) > 0 // a name may resolve to IPv6 only
		for _, m := range cfg.Masters {
			v6 = v6 || (m.Addr().Is6() && !m.Addr().Is4In6())
		}
		u, err := ListenUDP(UDPConfig{Interface: cfg.Interface, Group: cfg.Group, Port: cfg.Port, IPv6: v6})
		if err != nil {
			if s.closeFn != nil {
				s.closeFn()
			}
			return nil, err
		}
		s.tr = u
	}
	s.enc = wire.NewEncoder(cfg.Key)
	s.parser = wire.NewParser(cfg.Key)
	s.guard = wire.NewGuard(64)
	s.agent = NewAgent(cfg.Rate, AnswerGap)
	return s, nil
}

// Answered counts the samples sent in answer to update requests.
func (s *Sender) Answered() uint64 { return s.answered.Load() }

// Rejected counts update requests refused.
func (s *Sender) Rejected() uint64 { return s.rejected.Load() }

// Run samples and sends until ctx is done.
func (s *Sender) Run(ctx context.Context) error {
	reqs := make(chan datagram, 16)
	go func() {
		buf := make([]byte, wire.MaxDatagram+64)
		for {
			n, from, err := s.tr.ReadFrom(buf)
			if err != nil {
				close(reqs)
				return
			}
			select {
			case reqs <- datagram{append([]byte(nil), buf[:n]...), from}:
			default:
			}
		}
	}()
	// The period is kept by a timerfd rather than a runtime timer: see
	// package rawio for what that saves an idle agent per sample.
	alarm, err := rawio.NewAlarm()
	if err != nil {
		return err
	}
	defer alarm.Close()
	resolved := make(chan []netip.AddrPort, 1)
	if len(s.cfg.MasterNames) > 0 {
		rctx, cancel := context.WithCancel(ctx)
		defer cancel()
		go s.resolve(rctx, resolved)
	}
	now := s.cfg.Now()
	s.agent.Start(now)
	alarm.Reset(0)
	for {
		select {
		case <-ctx.Done():
			return nil
		case addrs := <-resolved:
			s.dests = append(s.dests[:s.fixed], addrs...)
			continue // the alarm is set
		case <-alarm.C:
			now = s.cfg.Now()
			if s.agent.Due(now) { // not early, nor a setting since replaced
				s.sendSample(false)
			}
		case d, ok := <-reqs:
			if !ok {
				if ctx.Err() != nil {
					return nil
				}
				return errors.New("sockets closed")
			}
			now = s.cfg.Now()
			if s.admit(d) && s.agent.Request(now) {
				s.sendSample(true)
			}
		}
		if err := alarm.Reset(s.agent.Next().Sub(s.cfg.Now())); err != nil {
			return err
		}
	}
}

// admit checks an update request: authentic (with a key), newer than the
// last one from its master (no replays), and meant for this node.
func (s *Sender) admit(d datagram) bool {
	pk, err := s.parser.Parse(d.b)
	if err == nil && pk.Kind != wire.KindUpdateRequest {
		return false // another node's status
	}
	if err == nil && pk.Node != wire.NoNode && s.node != wire.NoNode && pk.Node != s.node {
		err = fmt.Errorf("request for node %d", pk.Node)
	}
	if err == nil {
		err = s.guard.Admit(wire.SenderOf(&pk.Header, d.from.Addr()), &pk.Header)
	}
	if err != nil {
		s.rejected.Add(1)
		s.log.Debug("refused update request", "from", d.from.String(), "err", err)
		return false
	}
	s.log.Debug("update request", "from", d.from.String(), "seq", pk.Seq)
	return true
}

func (s *Sender) sendSample(answer bool) {
	details := !s.cfg.NoDetails && (answer || s.sinceDetails == 0 || s.sinceDetails >= s.cfg.DetailsEvery)
	if s.coll != nil {
		s.coll.SkipDisks = !details
	}
	if err := s.collect(&s.smp); err != nil {
		s.log.Warn("cannot read a sample", "err", err)
		return
	}
	if !details && !s.cfg.NoDetails && s.detailsChanged() {
		details = true
		if s.coll != nil {
			if err := s.coll.CollectDisks(&s.smp); err != nil {
				s.log.Warn("cannot read a sample", "err", err)
				return
			}
		}
	}
	s.seq++
	var err error
	s.bufs, err = s.enc.AppendStatus(s.bufs[:0], s.node, s.seq, &s.smp)
	if err != nil {
		s.log.Warn("cannot encode a sample", "err", err)
		return
	}
	send := s.bufs
	if details {
		s.sinceDetails = 0
		s.sentHost = s.smp.Hostname
		s.sentFS = append(s.sentFS[:0], s.smp.Filesystems...)
	}
	s.sinceDetails++
	if details && wire.HasDetails(&s.smp) {
		// The details go first: a master holds them until the status
		// completes the sample.
		var cut int
		s.details, cut = s.enc.AppendDetails(s.details[:0], s.node, s.seq, &s.smp)
		if cut > 0 && !s.cut {
			s.cut = true
			s.log.Warn("disks and filesystems beyond one datagram are not sent", "left out", cut)
		}
		s.out = append(append(s.out[:0], s.details), s.bufs...)
		send = s.out
	}
	s.sent = len(send)
	// Counted before the writes, so whoever sees the answer arrive also
	// sees it counted.
	if answer {
		s.answered.Add(1)
	}
	for _, to := range s.dests {
		var werr error
		for _, b := range send {
			if werr = s.tr.WriteTo(b, to); werr != nil {
				break
			}
		}
		// Say so once when a destination starts and stops failing.
		switch {
		case werr != nil && !s.failing[to]:
			s.failing[to] = true
			s.log.Warn("cannot send", "to", to.String(), "err", werr)
		case werr == nil && s.failing[to]:
			delete(s.failing, to)
			s.log.Info("sending again", "to", to.String())
		}
	}
	s.log.Debug("sent sample", "seq", s.seq, "datagrams", len(send), "answer", answer)
}

// detailsChanged tells whether the hostname or the filesystems (which
// ones, and whether they answer) differ from the details last sent.
func (s *Sender) detailsChanged() bool {
	if s.smp.Hostname != s.sentHost || len(s.smp.Filesystems) != len(s.sentFS) {
		return true
	}
	for i := range s.sentFS {
		a, b := &s.smp.Filesystems[i], &s.sentFS[i]
		if a.Mount != b.Mount || a.Type != b.Type || a.NotAnswering != b.NotAnswering {
			return true
		}
	}
	return false
}

// Close releases the sockets and /proc files.
func (s *Sender) Close() error {
	err := s.tr.Close()
	if s.closeFn != nil {
		err = errors.Join(err, s.closeFn())
	}
	return err
}

// Master is a master given by name, HOST:PORT, resolved while running.
type Master struct {
	Host string
	Port uint16
}

func (m Master) String() string { return net.JoinHostPort(m.Host, strconv.Itoa(int(m.Port))) }

// ParseMasters splits HOST[:PORT] arguments into addresses, port
// defaulting to port, and names, which the agent resolves while it runs
// (a node may boot before the name service is up, and a master may
// move). It looks nothing up.
func ParseMasters(args []string, port int) ([]netip.AddrPort, []Master, error) {
	var addrs []netip.AddrPort
	var names []Master
	for _, a := range args {
		host, p := a, port
		if h, ps, err := net.SplitHostPort(a); err == nil {
			n, err := strconv.ParseUint(ps, 10, 16)
			if err != nil || n == 0 {
				return nil, nil, fmt.Errorf("master %q: bad port %q", a, ps)
			}
			host, p = h, int(n)
		}
		if host == "" {
			return nil, nil, fmt.Errorf("master %q: no host", a)
		}
		if ip, err := netip.ParseAddr(host); err == nil {
			addrs = append(addrs, netip.AddrPortFrom(ip.Unmap(), uint16(p)))
			continue
		}
		names = append(names, Master{Host: host, Port: uint16(p)})
	}
	return addrs, names, nil
}

// resolveMaster looks m up, preferring IPv4 like the cluster fabric.
func resolveMaster(ctx context.Context, lookup LookupFunc, m Master) (netip.AddrPort, error) {
	ips, err := lookup(ctx, "ip", m.Host)
	if err != nil || len(ips) == 0 {
		return netip.AddrPort{}, fmt.Errorf("master %q: cannot resolve %s: %v", m.String(), m.Host, err)
	}
	ip := ips[0]
	for _, c := range ips {
		if c.Unmap().Is4() {
			ip = c
			break
		}
	}
	return netip.AddrPortFrom(ip.Unmap(), m.Port), nil
}
