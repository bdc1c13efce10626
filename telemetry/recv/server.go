// Package recv is recvstats, the master daemon, as a library: a node table
// state machine (Table) and the thin I/O shell around it (Server) that
// receives status packets, keeps the shared-memory table and sends update
// requests.
package recv

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hoststat/hoststat/shm"
	"github.com/hoststat/hoststat/telemetry/rates"
	"github.com/hoststat/hoststat/telemetry/sample"
	"github.com/hoststat/hoststat/telemetry/wire"
)

// DefaultDownAfter is how long a node may be silent before readers show
// it down: five of sendstats' default one-second periods, so a node is
// not shown down for a lost packet or two, and an update request (sent
// after 2 s of silence) has had time to be answered.
const DefaultDownAfter = 5 * time.Second

// Config describes a master.
type Config struct {
	// Network, used when Transport is nil.
	Listen    netip.Addr // zero: 0.0.0.0
	Port      int        // 0 picks a free port (tests); recvstats passes 3040
	Interface string     // join Group here; empty: unicast only
	Group     netip.Addr // zero: wire.DefaultGroup
	// ReadBuffer is the socket receive buffer to ask for; default
	// ReadBufferFor(Table.MaxNodes).
	ReadBuffer int

	ShmDir       string // zero: shm.DefaultDir
	InitialNodes int
	DownAfter    time.Duration // zero: DefaultDownAfter
	NodeMap      NodeMap
	Key          []byte // when set, only authenticated packets count
	// History sizes the history file beside the table (zero fields take
	// shm's defaults; Initial InitialNodes; Nodes at most the table's
	// MaxNodes); NoHistory keeps none.
	History   shm.HistoryOptions
	NoHistory bool
	// EventsKept sizes the ring of recent events beside the table
	// (default shm.DefaultEventsKept).
	EventsKept int

	// Hook, when its Program is set, runs a program for every node
	// event (--on-event).
	Hook HookConfig

	Logger *slog.Logger
	// StatsEvery is how often drop counters are summarised at info level.
	StatsEvery time.Duration // default 1m
	// Transport replaces the UDP socket (tests).
	Transport Transport
	// Now replaces the clock (tests).
	Now func() time.Time
	// Table tuning; Multicast, NodeMap and Restored are filled in.
	Table TableConfig
}

// Server is a running master. Counters may be read concurrently with
// Serve.
type Server struct {
	cfg    Config
	log    *slog.Logger
	tr     Transport
	group  netip.AddrPort // invalid when unicast only
	writer *shm.Writer
	hist   *shm.HistoryWriter // nil: no history kept
	// histFull is set once the history refused a node for lack of slots.
	histFull bool
	window   *Window
	hook     *Hook // nil: no --on-event
	evw      *shm.EventWriter
	events   atomic.Uint64
	table    *Table
	parser   *wire.Parser
	asm      *wire.Assembler
	enc      *wire.Encoder
	now      func() time.Time

	readBuffer  int    // SO_RCVBUF of the socket, 0 when not a UDP socket
	kernelDrops uint64 // as last published in the table header
	debug       bool   // -d: note what each debug interval should tell
	lastDrop    dropNote
	sources     [maxDropSources]dropSource // of the interval's drops, for -d
	nsources    int
	debugStats  counts // as of the last debug summary

	bootID   [16]byte
	bootTime time.Time
	reqSeq   uint32
	reqBuf   []byte
	smp      sample.Sample
	last     sample.Sample // the node's stored counters, to derive figures against
	figures  rates.Rates   // of smp, computed once here and stored as given
	// marks say, per node number, whose details the table holds: one
	// entry per number up to the highest stored (≤ --max-nodes).
	marks []detailsMark
	msgs  []Message

	stored       atomic.Uint64
	received     atomic.Uint64
	requests     atomic.Uint64
	nodes        atomic.Int64 // in the table, as of the last tick
	senders      atomic.Int64 // remembered by the assembler, as of the last tick
	forgotten    atomic.Uint64
	nextForget   time.Time
	drops        [numReasons]atomic.Uint64
	lastStats    counts // as of the last summary
	lastOverflow uint64 // hook overflow as of the last summary
	nodeLog      nodeLog

	closeOnce sync.Once
	closeErr  error
	stop      chan struct{}
	serving   sync.Mutex // held by Serve, so Close can wait for it
}

// The socket's receive buffer holds a burst of answers from every node at
// once (an update request makes them all resend together): readBufferPerNode
// bytes a node, asked of the kernel, which doubles the figure for its
// bookkeeping (a status datagram of a few hundred bytes takes 1-2 KiB of
// it), between minReadBuffer and maxReadBuffer.
const (
	readBufferPerNode = 1 << 10
	minReadBuffer     = 8 << 20
	maxReadBuffer     = 128 << 20
	// DefaultReadBuffer is the receive buffer at the default --max-nodes.
	DefaultReadBuffer = min(max(DefaultMaxNodes*readBufferPerNode, minReadBuffer), maxReadBuffer)
)

// ReadBufferFor is the receive buffer recvstats asks for to hold a burst
// of answers from maxNodes nodes.
func ReadBufferFor(maxNodes int) int {
	n := min(max(maxNodes, 0), MaxNodes)
	return min(max(n*readBufferPerNode, minReadBuffer), maxReadBuffer)
}

// debugEvery is how often -d summarises what was received: never a line
// per packet, which would cost more than the packet.
const debugEvery = time.Second

// batchSize is how many datagrams one recvmmsg(2) may return.
const batchSize = 64

// tickEvery is how often the table is asked whether to send a request.
const tickEvery = 100 * time.Millisecond

// NewServer creates (or reopens) the table and binds the socket. When it
// returns, the master is serving as far as the outside world can tell:
// packets queue in the socket until Serve reads them.
func NewServer(cfg Config) (*Server, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if !cfg.Group.IsValid() {
		cfg.Group = wire.DefaultGroup
	}
	if cfg.DownAfter <= 0 {
		cfg.DownAfter = DefaultDownAfter
	}
	if cfg.StatsEvery <= 0 {
		cfg.StatsEvery = time.Minute
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	tc := cfg.Table
	if tc.MaxNodes <= 0 {
		tc.MaxNodes = DefaultMaxNodes
	}
	tc.MaxNodes = min(tc.MaxNodes, MaxNodes)
	if cfg.ReadBuffer <= 0 {
		cfg.ReadBuffer = ReadBufferFor(tc.MaxNodes)
	}
	s := &Server{cfg: cfg, log: cfg.Logger, now: cfg.Now, stop: make(chan struct{})}
	s.nodeLog.log = cfg.Logger

	tr := cfg.Transport
	if tr == nil {
		u, err := ListenUDP(UDPConfig{Listen: cfg.Listen, Port: cfg.Port, Interface: cfg.Interface, Group: cfg.Group, ReadBuffer: cfg.ReadBuffer})
		if err != nil {
			return nil, err
		}
		tr = u
		got, forced := u.ReadBuffer()
		s.readBuffer = got
		// The kernel reports twice what it granted.
		if got/2 < cfg.ReadBuffer {
			s.log.Warn("socket receive buffer smaller than asked: bursts of answers may be dropped (run as root, or raise net.core.rmem_max)",
				"asked", cfg.ReadBuffer, "granted", got/2, "forced", forced)
		} else {
			s.log.Info("socket receive buffer", "asked", cfg.ReadBuffer, "granted", got/2, "forced", forced)
		}
	}
	s.tr = tr
	if cfg.Interface != "" {
		s.group = netip.AddrPortFrom(cfg.Group, tr.LocalAddr().Port())
	}
	// Node numbers run below --max-nodes, so the table never needs more
	// records than that.
	w, err := shm.Create(cfg.ShmDir, shm.WriterOptions{InitialNodes: cfg.InitialNodes, MaxNodes: tc.MaxNodes, DownAfter: cfg.DownAfter, Logger: cfg.Logger})
	if err != nil {
		tr.Close()
		return nil, err
	}
	s.writer = w
	w.SetSocket(s.readBuffer, 0)
	if !cfg.NoHistory {
		if s.hist, err = w.OpenHistory(historyOptions(cfg.History, cfg.InitialNodes, tc.MaxNodes)); err != nil {
			w.Close()
			tr.Close()
			return nil, fmt.Errorf("history: %w", err)
		}
	}

	if s.evw, err = w.OpenEvents(cfg.EventsKept); err != nil {
		if s.hist != nil {
			s.hist.Close()
		}
		w.Close()
		tr.Close()
		return nil, fmt.Errorf("events: %w", err)
	}
	tc.DownAfter = cfg.DownAfter
	tc.Multicast = s.group.IsValid()
	tc.NodeMap = cfg.NodeMap
	tc.Restored = w.Nodes()
	win, err := OpenWindow(filepath.Dir(w.Path()), tc.MaxNodes)
	if err != nil {
		s.evw.Close()
		w.Close()
		tr.Close()
		return nil, err
	}
	s.window = win
	var bad int
	tc.Windows, bad = win.Load()
	if bad > 0 {
		s.log.Warn("damaged replay window slots: those nodes start without one", "slots", bad, "path", win.Path())
	}
	s.table = NewTable(tc)
	if n := len(tc.Restored); n > 0 {
		s.log.Info("restored node assignments from the table", "nodes", n, "path", w.Path())
	}

	s.parser = wire.NewParser(cfg.Key)
	// Room for every node of a large cluster to have one split sample
	// in flight (answers to a request all arrive together).
	s.asm = wire.NewAssembler(4096, 0)
	s.asm.MaxSenders = 2 * tc.MaxNodes
	s.asm.Identify = s.identify
	s.enc = wire.NewEncoder(cfg.Key)
	if id, err := sample.ReadBootID("/proc"); err == nil {
		s.bootID = id
	}
	s.bootTime = bootTime()
	if cfg.Hook.Program != "" {
		hc := cfg.Hook
		if hc.Logger == nil {
			hc.Logger = cfg.Logger
		}
		s.hook = StartHook(hc)
	}
	s.msgs = make([]Message, batchSize)
	for i := range s.msgs {
		// Larger than any valid datagram, so oversize ones are seen whole.
		s.msgs[i].Buf = make([]byte, wire.MaxDatagram+64)
	}
	return s, nil
}

// identify names the sender of a datagram for reassembly by the rule of
// the table: a node number is believed only when signed, or when the node
// map pins it to the address it came from.
func (s *Server) identify(node uint32, addr netip.Addr) wire.Sender {
	addr = addr.Unmap()
	if node != wire.NoNode && (len(s.cfg.Key) > 0 || s.table.Believes(node, addr)) {
		return wire.Sender{Node: node}
	}
	return wire.Sender{Node: wire.NoNode, Addr: addr}
}

// bootTime is when this machine booted, for the header of our requests.
func bootTime() time.Time {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return time.Time{}
	}
	return time.Now().Add(-time.Duration(ts.Nano())).Truncate(time.Second)
}

// Addr is the address the master receives on.
func (s *Server) Addr() netip.AddrPort { return s.tr.LocalAddr() }

// TablePath is the shared-memory table file.
func (s *Server) TablePath() string { return s.writer.Path() }

// Stored counts the samples written to the table.
func (s *Server) Stored() uint64 { return s.stored.Load() }

// Requests counts the update requests sent (one per Tick that asked,
// however many datagrams it took).
func (s *Server) Requests() uint64 { return s.requests.Load() }

// Nodes is the number of nodes in the table, as of the last tick (every
// 100 ms).
func (s *Server) Nodes() int { return int(s.nodes.Load()) }

// Senders is the number of senders whose reassembly state is kept, as of
// the last tick.
func (s *Server) Senders() int { return int(s.senders.Load()) }

// Forgotten counts the nodes forgotten after --forget-after of silence.
func (s *Server) Forgotten() uint64 { return s.forgotten.Load() }

// Drops returns the drop counters.
func (s *Server) Drops() Drops {
	var d Drops
	for i := range d {
		d[i] = s.drops[i].Load()
	}
	return d
}

// reasonOf maps a decoder error to a drop reason.
func reasonOf(err error) Reason {
	switch {
	case errors.Is(err, wire.ErrVersion):
		return DropVersion
	case errors.Is(err, wire.ErrTruncated):
		return DropTruncated
	case errors.Is(err, wire.ErrOversize):
		return DropOversize
	case errors.Is(err, wire.ErrMalformed):
		return DropMalformed
	case errors.Is(err, wire.ErrAuth):
		return DropAuth
	case errors.Is(err, wire.ErrReplay):
		return DropReplay
	case errors.Is(err, wire.ErrDuplicate):
		return DropDuplicate
	case errors.Is(err, wire.ErrStale):
		return DropStale
	}
	return DropOther
}

// Serve receives until ctx is done or the server is closed. It returns nil
// on a clean stop.
func (s *Server) Serve(ctx context.Context) error {
	s.serving.Lock()
	defer s.serving.Unlock()
	defer s.summarise()
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-ctx.Done():
		case <-s.stop:
		case <-done:
			return
		}
		_ = s.tr.SetReadDeadline(time.Unix(1, 0)) // wake the read now
	}()
	nextTick := s.now()
	nextStats := nextTick.Add(s.cfg.StatsEvery)
	nextDebug := nextTick.Add(debugEvery)
	for {
		if ctx.Err() != nil {
			return nil
		}
		select {
		case <-s.stop:
			return nil
		default:
		}
		now := s.now()
		if !now.Before(nextTick) {
			s.tick(now)
			nextTick = now.Add(tickEvery)
			// The schedule runs on the injected clock; the socket's
			// deadline can only be real time.
			_ = s.tr.SetReadDeadline(time.Now().Add(tickEvery))
			if !now.Before(nextStats) {
				s.summarise()
				nextStats = now.Add(s.cfg.StatsEvery)
			}
			s.debug = s.log.Enabled(ctx, slog.LevelDebug)
			if s.debug && !now.Before(nextDebug) {
				s.debugSummary()
				nextDebug = now.Add(debugEvery)
			}
		}
		n, err := s.tr.ReadBatch(s.msgs)
		if n > 0 {
			s.received.Add(uint64(n))
			now = s.now()
			stored := 0
			for i := range s.msgs[:n] {
				if s.handle(&s.msgs[i], now) {
					stored++
				}
			}
			s.stored.Add(uint64(stored)) // once a batch: readers poll it
			s.dispatch()
		}
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				continue
			}
			if ctx.Err() != nil || s.closed() {
				return nil
			}
			return fmt.Errorf("receive: %w", err)
		}
	}
}

func (s *Server) closed() bool {
	select {
	case <-s.stop:
		return true
	default:
		return false
	}
}

// dropNote is a packet dropped in the current debug interval, kept so
// that -d names one example an interval instead of a line a packet.
type dropNote struct {
	reason Reason
	from   netip.AddrPort
	bytes  int
	node   int
	err    error // the decoder's, when it gave one
}

// dropSource counts one debug interval's drops of one reason from one
// address; an interval keeps the first maxDropSources of them.
type dropSource struct {
	reason Reason
	addr   netip.Addr
	n      int
}

const maxDropSources = 8

func (s *Server) drop(r Reason, m *Message, node int, err error) {
	s.drops[r].Add(1)
	if !s.debug {
		return
	}
	s.lastDrop = dropNote{reason: r, from: m.From, bytes: m.N, node: node, err: err}
	a := m.From.Addr()
	for i := range s.sources[:s.nsources] {
		if d := &s.sources[i]; d.reason == r && d.addr == a {
			d.n++
			return
		}
	}
	if s.nsources < maxDropSources {
		s.sources[s.nsources] = dropSource{reason: r, addr: a, n: 1}
		s.nsources++
	}
}

// handle processes one datagram, and tells whether it stored a sample:
// O(1) apart from reassembly of split samples, which is linear in their
// parts. It logs only events (a reboot, a move, a failure to store), never
// the packet itself: -d summarises once an interval.
func (s *Server) handle(m *Message, now time.Time) bool {
	if m.Truncated {
		s.drop(DropOversize, m, NoNode, nil)
		return false
	}
	// Parse and reassemble in one step: a whole sample in one datagram,
	// the common case, is checked and decoded in a single walk.
	pk, complete, err := s.asm.Receive(s.parser, m.Buf[:m.N], m.From.Addr(), now, &s.smp)
	if err != nil {
		s.drop(reasonOf(err), m, NoNode, err)
		return false
	}
	if !complete {
		return false // a part of a split sample, or an update request (ours looped back, or another master's)
	}
	node := NoNode
	if pk.Node != wire.NoNode {
		node = int(min(pk.Node, MaxNodes)) // MaxNodes and beyond: out of range
	}
	u, r := s.table.Receive(now, Status{From: m.From, Unicast: !m.Multicast, Authenticated: len(s.cfg.Key) > 0,
		Node: node, Epoch: pk.Epoch, Seq: pk.Seq, Sample: &s.smp})
	if r == DropAdmission || r == DropNodeRange {
		// Not let in: keep no reassembly state for it either.
		s.asm.Forget(s.identify(pk.Node, m.From.Addr()))
	}
	if r != DropNone {
		s.drop(r, m, node, nil)
		return false
	}
	// Persist, then act: the window moves before the sample shows.
	s.window.Store(u.Node, u.Fresh)
	// Figures span the previous sample only when the table says it is of
	// the same boot. (Stored device names are cut to 16 bytes, as Linux
	// names are: a longer one gets no rate.)
	var prev *sample.Sample
	if u.Continues && s.writer.Last(u.Node, &s.last) {
		prev = &s.last
	}
	s.figures.Between(prev, u.Sample)
	if s.details(u, prev) {
		err = s.writer.PutRatesKeepingDetails(u.Node, u.Addr, u.Seen, u.Sample, &s.figures)
	} else {
		err = s.writer.PutRates(u.Node, u.Addr, u.Seen, u.Sample, &s.figures)
	}
	if err != nil {
		s.drop(DropOther, m, u.Node, err)
		s.log.Warn("cannot store sample", "node", u.Node, "err", err)
		return false
	}
	s.appendHistory(u)
	if u.Reboot {
		s.nodeLog.note(u.Seen, noteRebooted, "node", u.Node, "addr", u.Addr.String())
	}
	if u.Moved {
		s.nodeLog.note(u.Seen, noteMoved, "node", u.Node, "addr", u.Addr.String())
	}
	return true
}

// detailsMark is when a node's stored details (hostname, disks,
// filesystems) came, and from which sender process.
type detailsMark struct {
	boot  [16]byte
	epoch uint64
	at    time.Time // the sample time of the details; zero: none kept
}

// details decides about u's hostname, disks and filesystems, and tells
// whether the table should keep those it holds instead. sendstats sends
// them with one sample in send.DefaultDetailsEvery (and whenever they
// change): a sample without them from the same sender process (boot and
// epoch) that sent the stored ones keeps those, with their disk rates; a
// sample with them gets disk rates since the stored ones came. Anything
// else (another process, a reboot, a sender that sends none) stores the
// sample as it came.
func (s *Server) details(u Update, prev *sample.Sample) bool {
	if u.Node >= len(s.marks) {
		s.marks = append(s.marks, make([]detailsMark, u.Node+1-len(s.marks))...)
	}
	mk := &s.marks[u.Node]
	same := prev != nil && !mk.at.IsZero() && mk.boot == u.Fresh.BootID && mk.epoch == u.Fresh.Epoch
	if !wire.HasDetails(u.Sample) {
		if !same {
			*mk = detailsMark{}
		}
		return same
	}
	// Disk counters are the kernel's: they span sender restarts within a
	// boot. Stored disks of an unknown time (a master restarted since)
	// give no rates rather than a guess.
	var since time.Time
	if prev != nil && mk.boot == u.Fresh.BootID {
		since = mk.at
	}
	s.figures.DisksSince(prev, since, u.Sample)
	*mk = detailsMark{boot: u.Fresh.BootID, epoch: u.Fresh.Epoch, at: u.Sample.Time}
	return false
}

// appendHistory adds the figures just stored to the node's history. A
// full history (more nodes than --history-nodes) is said once, not per
// packet: those nodes keep their table record, without history.
func (s *Server) appendHistory(u Update) {
	if s.hist == nil {
		return
	}
	m := &u.Sample.Memory
	err := s.hist.Append(u.Node, u.Seen, shm.Figures{
		Up: true, CPUPercent: float64(s.figures.TotalPercent), Load1: u.Sample.Load.One,
		MemUsed: m.Used(), SwapUsed: m.SwapUsed(),
		RxBytesPerSec: s.figures.RxBytesPerSec, TxBytesPerSec: s.figures.TxBytesPerSec,
	})
	switch {
	case err == nil:
	case errors.Is(err, shm.ErrHistoryGrowing):
		// A new node while its slot is being reserved: its next point
		// is kept.
	case errors.Is(err, shm.ErrHistoryFull):
		if !s.histFull {
			s.histFull = true
			s.log.Warn("history full: nodes beyond it keep no history (raise --history-nodes)", "node", u.Node, "err", err)
		}
	default:
		s.log.Warn("cannot append to history", "node", u.Node, "err", err)
	}
}

// dispatch hands the table's events to the log and to --on-event's
// program, never waiting for it.
func (s *Server) dispatch() {
	events := s.table.Events()
	if len(events) == 0 {
		return
	}
	now := s.now()
	for _, e := range events {
		s.events.Add(1)
		switch e.Kind {
		case EventUp:
			s.nodeLog.note(now, noteUp, "node", e.Node, "addr", e.Addr.String())
		case EventDown:
			s.nodeLog.note(now, noteDown, "node", e.Node, "addr", e.Addr.String())
		}
		if err := s.evw.Append(e); err != nil {
			s.log.Warn("cannot publish event", "node", e.Node, "event", e.Kind.String(), "err", err)
		}
		if s.hook != nil {
			s.hook.Post(e)
		}
	}
}

// Events counts the node events the table decided.
func (s *Server) Events() uint64 { return s.events.Load() }

// EventOverflow counts the events --on-event's queue had no room for.
func (s *Server) EventOverflow() uint64 {
	if s.hook == nil {
		return 0
	}
	return s.hook.Overflow()
}

// EventRuns counts the runs of --on-event's program.
func (s *Server) EventRuns() uint64 {
	if s.hook == nil {
		return 0
	}
	return s.hook.Ran()
}

// tick sends the update request the table asks for, if any.
func (s *Server) tick(now time.Time) {
	s.asm.Expire(now)
	s.drops[DropIncomplete].Store(s.asm.Abandoned())
	if !now.Before(s.nextForget) {
		s.nextForget = now.Add(time.Second)
		for _, n := range s.table.Expire(now) {
			s.writer.Remove(n)
			if s.hist != nil {
				s.hist.Release(n)
			}
			s.window.Clear(n)
			if n < len(s.marks) {
				s.marks[n] = detailsMark{}
			}
			s.forgotten.Add(1)
			s.nodeLog.note(now, noteForgotten, "node", n)
		}
	}
	s.dispatch()
	s.nodeLog.refill(now)
	s.nodes.Store(int64(s.table.Nodes()))
	s.senders.Store(int64(s.asm.Senders()))
	if k, ok := s.tr.(interface{ KernelDrops() uint64 }); ok {
		if d := k.KernelDrops(); d != s.kernelDrops {
			s.kernelDrops = d
			s.drops[DropKernel].Store(d)
			s.writer.SetSocket(s.readBuffer, d)
		}
	}
	s.publishCounters()
	req, ok := s.table.Tick(now)
	if !ok {
		return
	}
	s.reqSeq++
	s.reqBuf = s.enc.AppendUpdateRequest(s.reqBuf[:0], wire.Header{
		Node: wire.NoNode, BootID: s.bootID, BootTime: s.bootTime, Seq: s.reqSeq, Time: now,
	})
	if req.Multicast && s.group.IsValid() {
		if err := s.tr.WriteTo(s.reqBuf, s.group); err != nil {
			s.log.Warn("cannot multicast update request", "group", s.group.String(), "err", err)
		}
	}
	failed, firstErr := 0, error(nil)
	for _, a := range req.Unicast {
		if err := s.tr.WriteTo(s.reqBuf, a); err != nil {
			if failed++; firstErr == nil {
				firstErr = fmt.Errorf("to %s: %w", a, err)
			}
		}
	}
	if failed > 0 {
		s.log.Debug("cannot send some update requests", "failed", failed, "of", len(req.Unicast), "err", firstErr)
	}
	s.writer.SetUpdateRequest(now)
	s.requests.Add(1)
	s.log.Debug("sent update request", "seq", s.reqSeq, "multicast", req.Multicast && s.group.IsValid(), "unicast", len(req.Unicast))
}

// publishCounters puts our counters in the table's header for readers.
func (s *Server) publishCounters() {
	c := shm.Counters{Received: s.received.Load(), Stored: s.stored.Load(),
		NodesUp: s.table.Nodes() - s.table.Down(), NodesDown: s.table.Down(), EventOverflow: s.EventOverflow()}
	i := 0
	for r := DropNone + 1; r < numReasons; r++ {
		if r != DropKernel {
			c.Drops[i] = s.drops[r].Load()
			i++
		}
	}
	s.writer.SetCounters(c)
}

// Received counts the datagrams read from the socket.
func (s *Server) Received() uint64 { return s.received.Load() }

// counts are the counters a summary reports the change of.
type counts struct {
	drops  Drops
	stored uint64
}

func (s *Server) counts() counts { return counts{drops: s.Drops(), stored: s.stored.Load()} }

// since is what changed from c to now.
func (c counts) since(now counts) (stored uint64, drops Drops) {
	for i := range drops {
		drops[i] = now.drops[i] - c.drops[i]
	}
	return now.stored - c.stored, drops
}

// summarise logs the drop counters at info level when they changed, and
// warns when the kernel dropped datagrams: the receive buffer overflowed.
func (s *Server) summarise() {
	if o := s.EventOverflow(); o != s.lastOverflow {
		s.log.Warn("event queue full: events for the program dropped", "dropped", o-s.lastOverflow,
			"dropped_total", o, "program", s.cfg.Hook.Program)
		s.lastOverflow = o
	}
	now := s.counts()
	if now == s.lastStats {
		return
	}
	stored, delta := s.lastStats.since(now)
	s.log.Info("receive summary", "stored", stored, "dropped", delta.Total(), "drops", delta.String(),
		"dropped_total", now.drops.Total(), "kernel_drops_total", now.drops[DropKernel])
	if delta[DropKernel] > 0 {
		s.log.Warn("the kernel dropped datagrams: the socket's receive buffer was full",
			"dropped", delta[DropKernel], "read_buffer", s.readBuffer)
	}
	s.lastStats = now
}

// debugSummary is -d's account of the last interval, one line however
// many packets it held, naming the last dropped packet as an example.
func (s *Server) debugSummary() {
	now := s.counts()
	if now == s.debugStats {
		return
	}
	stored, delta := s.debugStats.since(now)
	attrs := []any{"stored", stored, "dropped", delta.Total(), "drops", delta.String(),
		"nodes", s.Nodes(), "senders", s.Senders()}
	if s.nsources > 0 {
		var b strings.Builder
		for i, d := range s.sources[:s.nsources] {
			if i > 0 {
				b.WriteByte(' ')
			}
			fmt.Fprintf(&b, "%s@%s=%d", d.reason, d.addr, d.n)
		}
		attrs = append(attrs, "drop_sources", b.String())
	}
	if d := s.lastDrop; delta.Total() > 0 && d.reason != DropNone {
		attrs = append(attrs, "last_drop", d.reason.String(), "last_drop_from", d.from.String(), "last_drop_bytes", d.bytes)
		if d.node != NoNode {
			attrs = append(attrs, "last_drop_node", d.node)
		}
		if d.err != nil {
			attrs = append(attrs, "last_drop_err", d.err)
		}
	}
	s.log.Debug("receive interval", attrs...)
	s.debugStats, s.lastDrop, s.nsources = now, dropNote{}, 0
}

// Close stops Serve, closes the socket and releases the table, which
// stays for readers and for the next recvstats.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		close(s.stop)
		_ = s.tr.SetReadDeadline(time.Unix(1, 0))
		s.serving.Lock() // Serve has returned
		defer s.serving.Unlock()
		if s.hook != nil {
			s.hook.Close()
		}
		var herr error
		if s.hist != nil {
			herr = s.hist.Close()
		}
		s.closeErr = errors.Join(s.tr.Close(), s.window.Close(), herr, s.evw.Close(), s.writer.Close())
	})
	return s.closeErr
}
