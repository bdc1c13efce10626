package wire

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"time"

	"github.com/hoststat/hoststat/telemetry/sample"
)

// Sender names where packets come from: the node number when the header
// has one, else the source address.
type Sender struct {
	Node uint32
	Addr netip.Addr // zero when Node is given
}

// SenderOf names the sender of a packet with header h that came from addr.
func SenderOf(h *Header, addr netip.Addr) Sender {
	if h.Node != NoNode {
		return Sender{Node: h.Node}
	}
	return Sender{Node: NoNode, Addr: addr.Unmap()}
}

// freshness is the newest (boot, epoch, seq) accepted from a sender.
//
// The rules, which make replays fail and let a sender restart:
//   - another boot id is accepted only when its boot time is later than
//     the current boot's: a new boot replaces the old, an old boot's
//     packets are replays (ErrReplay);
//   - on the same boot, a larger epoch is a restarted sender process and
//     is accepted with any sequence number; a smaller one is a replay;
//   - within one process, seq must grow: an equal seq is a duplicate,
//     a smaller one stale.
//
// A sender that reboots with its clock behind its previous boot time is
// refused until its clock is right again, or until the receiver forgets it.
type freshness struct {
	bootID   [16]byte
	bootTime int64
	epoch    uint64
	seq      uint32
}

func (f *freshness) check(h *Header) error {
	if h.BootID != f.bootID {
		if bt := unixNano(h.BootTime); bt <= f.bootTime {
			return fmt.Errorf("%w: boot %08x… of %v is not after current boot %08x… of %v",
				ErrReplay, binary.BigEndian.Uint32(h.BootID[:]), h.BootTime.UTC(),
				binary.BigEndian.Uint32(f.bootID[:]), fromUnixNano(f.bootTime).UTC())
		}
		return nil
	}
	switch {
	case h.Epoch < f.epoch:
		return fmt.Errorf("%w: epoch %d of an earlier process (now %d)", ErrReplay, h.Epoch, f.epoch)
	case h.Epoch > f.epoch:
		return nil
	case h.Seq == f.seq:
		return fmt.Errorf("%w: seq %d", ErrDuplicate, h.Seq)
	case h.Seq < f.seq:
		return fmt.Errorf("%w: seq %d, newest accepted %d", ErrStale, h.Seq, f.seq)
	}
	return nil
}

func (f *freshness) accept(h *Header) {
	*f = freshness{bootID: h.BootID, bootTime: unixNano(h.BootTime), epoch: h.Epoch, seq: h.Seq}
}

// newer tells whether h is after f by the rules above.
func (f *freshness) newer(h *Header) bool { return f.check(h) == nil }

// Guard drops single datagrams that are not newer than the last accepted
// from their sender: sendstats uses it on update requests. It is not safe
// for concurrent use.
type Guard struct {
	max     int
	senders map[Sender]freshness
}

// NewGuard returns a Guard that remembers up to maxSenders senders; when
// more appear it forgets an arbitrary one.
func NewGuard(maxSenders int) *Guard {
	return &Guard{max: max(maxSenders, 1), senders: make(map[Sender]freshness)}
}

// Admit returns nil and remembers h if it is newer than what from sent
// before, else an error wrapping ErrReplay, ErrDuplicate or ErrStale.
func (g *Guard) Admit(from Sender, h *Header) error {
	f, ok := g.senders[from]
	if ok {
		if err := f.check(h); err != nil {
			return err
		}
	} else if len(g.senders) >= g.max {
		for s := range g.senders {
			delete(g.senders, s)
			break
		}
	}
	f.accept(h)
	g.senders[from] = f
	return nil
}

// DefaultReassemblyTimeout is how long the parts of a sample wait for the
// rest when NewAssembler is given no timeout.
const DefaultReassemblyTimeout = 2 * time.Second

// Assembler turns status packets into complete samples: a one-part
// sample at once, a split one when its last part arrives. It drops
// stale, duplicate and replayed packets by the rules of freshness, per
// sender. It is not safe for concurrent use, and it never reads the wall
// clock: callers pass now.
//
// Memory is bounded: at most maxPending incomplete samples, at most
// perSender of them per sender, and at most maxPending×64 KiB of held
// parts (never below two of the largest samples); when full, the oldest
// incomplete sample makes room. The state kept per sender (some 100
// bytes) lasts until Forget, and at most MaxSenders senders are kept: past
// that, one without incomplete samples is forgotten for each new one.
type Assembler struct {
	// MaxSenders bounds the senders remembered; NewAssembler sets
	// DefaultMaxSenders.
	MaxSenders int
	// Identify names the sender of a datagram from the node number in
	// its header and its source address; nil is SenderOf. A receiver
	// that does not believe every node number in a header names the
	// sender by its address instead.
	Identify func(node uint32, addr netip.Addr) Sender

	maxPending int
	maxBytes   int
	timeout    time.Duration

	senders   map[Sender]*senderState
	pending   map[pendingKey]*pendingSample
	free      []*pendingSample
	held      int // payload bytes held by pending samples
	abandoned uint64
	nextSweep time.Time
}

type senderState struct {
	fresh    freshness
	accepted bool // fresh holds an accepted sample
	pending  int  // incomplete samples held
}

type pendingKey struct {
	sender Sender
	bootID [16]byte
	epoch  uint64
	seq    uint32
}

type pendingSample struct {
	key    pendingKey
	header Header // of the first part to arrive
	first  time.Time
	counts ranges     // cpuCount and netCount
	parts  []heldPart // empty while only the details have come
	got    int
	arena  []byte
	// details, when held, are arena[detailsOff:detailsEnd].
	hasDetails             bool
	detailsOff, detailsEnd int
}

type heldPart struct {
	have     bool
	off, end int
	ranges   ranges
}

// DefaultMaxSenders is the default Assembler.MaxSenders: room for the
// largest table recvstats keeps, twice.
const DefaultMaxSenders = 1 << 18

const (
	perSender = 4
	// keptArena is the most buffer a free pendingSample keeps for reuse.
	keptArena = 64 << 10
)

// NewAssembler returns an Assembler holding at most maxPending incomplete
// samples, each for at most timeout (DefaultReassemblyTimeout if 0).
func NewAssembler(maxPending int, timeout time.Duration) *Assembler {
	maxPending = max(maxPending, 1)
	if timeout <= 0 {
		timeout = DefaultReassemblyTimeout
	}
	return &Assembler{
		MaxSenders: DefaultMaxSenders,
		maxPending: maxPending,
		maxBytes:   max(maxPending*keptArena, 2*MaxParts*MaxDatagram),
		timeout:    timeout,
		senders:    make(map[Sender]*senderState),
		pending:    make(map[pendingKey]*pendingSample),
	}
}

// Add takes a status packet from Parse. When it completes a sample, Add
// stores the sample in into, reusing into's slices and strings, and
// returns true; into is unchanged otherwise, except after an error
// wrapping ErrMalformed, which may leave it half-written. Errors wrap
// ErrReplay, ErrDuplicate, ErrStale or ErrMalformed.
func (a *Assembler) Add(from Sender, p *Packet, now time.Time, into *sample.Sample) (complete bool, err error) {
	h := &p.Header
	if h.Kind == KindDetails && h.Parts == 1 && h.Part == 0 {
		return false, a.addDetails(from, p, now)
	}
	if h.Kind != KindStatus || h.Parts == 0 || h.Part >= h.Parts {
		return false, fmt.Errorf("%w: %v part %d of %d is not a status part", ErrMalformed, h.Kind, h.Part, h.Parts)
	}
	if !now.Before(a.nextSweep) {
		a.Expire(now)
	}
	st, err := a.fresh(from, h)
	if err != nil {
		return false, err
	}
	key := pendingKey{sender: from, bootID: h.BootID, epoch: h.Epoch, seq: h.Seq}
	if h.Parts == 1 {
		resize(into, p.ranges.cpuCount, p.ranges.netCount)
		if err := decodePart(p.payload, h, &p.ranges, into); err != nil {
			return false, err
		}
		a.takeDetails(st, key, h, into)
		a.accept(from, st, h, into)
		return true, nil
	}

	ps := a.pending[key]
	if ps == nil {
		if st == nil {
			st = a.newSender(from)
		}
		ps = a.startPending(key, st, h, &p.ranges, now)
	} else if len(ps.parts) == 0 {
		if err := ps.startStatus(h, &p.ranges); err != nil {
			return false, err
		}
	} else if h.Parts != ps.header.Parts || !h.Time.Equal(ps.header.Time) || !h.BootTime.Equal(ps.header.BootTime) ||
		p.ranges.cpuCount != ps.counts.cpuCount || p.ranges.netCount != ps.counts.netCount {
		return false, fmt.Errorf("%w: part %d disagrees with the other parts of seq %d", ErrMalformed, h.Part, h.Seq)
	}
	hp := &ps.parts[h.Part]
	if hp.have {
		return false, fmt.Errorf("%w: part %d of seq %d", ErrDuplicate, h.Part, h.Seq)
	}
	a.makeRoom(len(p.payload), ps)
	hp.have, hp.off, hp.ranges = true, len(ps.arena), p.ranges
	ps.arena = append(ps.arena, p.payload...)
	hp.end = len(ps.arena)
	a.held += len(p.payload)
	ps.got++
	if ps.got < len(ps.parts) {
		return false, nil
	}

	a.drop(ps, false)
	if err := ps.checkCoverage(); err != nil {
		a.release(ps)
		return false, err
	}
	resize(into, ps.counts.cpuCount, ps.counts.netCount)
	for i := range ps.parts {
		hp := &ps.parts[i]
		ph := ps.header
		ph.Part = uint16(i)
		if err := decodePart(ps.arena[hp.off:hp.end], &ph, &hp.ranges, into); err != nil {
			a.release(ps)
			return false, err
		}
	}
	if err := ps.decodeDetails(into); err != nil {
		a.release(ps)
		return false, err
	}
	hdr := ps.header
	a.release(ps)
	a.accept(from, a.senders[from], &hdr, into)
	return true, nil
}

// addDetails holds the details datagram of a sample until its status
// parts complete it. A status that completes without them (lost, or from
// a sender that does not send them) is a sample without details.
func (a *Assembler) addDetails(from Sender, p *Packet, now time.Time) error {
	h := &p.Header
	if !now.Before(a.nextSweep) {
		a.Expire(now)
	}
	st, err := a.fresh(from, h)
	if err != nil {
		return err
	}
	key := pendingKey{sender: from, bootID: h.BootID, epoch: h.Epoch, seq: h.Seq}
	ps := a.pending[key]
	if ps == nil {
		if st == nil {
			st = a.newSender(from)
		}
		ps = a.startPending(key, st, h, nil, now)
	} else if !h.Time.Equal(ps.header.Time) || !h.BootTime.Equal(ps.header.BootTime) {
		return fmt.Errorf("%w: details disagree with the status parts of seq %d", ErrMalformed, h.Seq)
	}
	if ps.hasDetails {
		return fmt.Errorf("%w: details of seq %d", ErrDuplicate, h.Seq)
	}
	a.makeRoom(len(p.payload), ps)
	ps.hasDetails, ps.detailsOff = true, len(ps.arena)
	ps.arena = append(ps.arena, p.payload...)
	ps.detailsEnd = len(ps.arena)
	a.held += len(p.payload)
	return nil
}

// takeDetails fills into's details from those held for a one-datagram
// sample, or empties them when none are held.
func (a *Assembler) takeDetails(st *senderState, key pendingKey, h *Header, into *sample.Sample) {
	if st == nil || st.pending == 0 {
		clearDetails(into)
		return
	}
	ps := a.pending[key]
	if ps == nil || len(ps.parts) != 0 || !h.Time.Equal(ps.header.Time) || !h.BootTime.Equal(ps.header.BootTime) {
		clearDetails(into)
		return
	}
	a.drop(ps, false)
	if ps.decodeDetails(into) != nil { // checked by Parse: cannot fail
		clearDetails(into)
	}
	a.release(ps)
}

// startStatus sets the status fields of a sample whose details came first.
func (ps *pendingSample) startStatus(h *Header, g *ranges) error {
	if !h.Time.Equal(ps.header.Time) || !h.BootTime.Equal(ps.header.BootTime) {
		return fmt.Errorf("%w: part %d disagrees with the details of seq %d", ErrMalformed, h.Part, h.Seq)
	}
	ps.header = *h
	ps.counts = ranges{cpuCount: g.cpuCount, netCount: g.netCount}
	ps.sizeParts(h.Parts)
	return nil
}

func (ps *pendingSample) sizeParts(n uint16) {
	if cap(ps.parts) < int(n) {
		ps.parts = make([]heldPart, n)
	}
	ps.parts = ps.parts[:n]
	clear(ps.parts)
}

// decodeDetails stores the held details in s, or empties s's details.
func (ps *pendingSample) decodeDetails(s *sample.Sample) error {
	if !ps.hasDetails {
		clearDetails(s)
		return nil
	}
	r := reader{b: ps.arena[ps.detailsOff:ps.detailsEnd]}
	walkDetails(&r, s)
	return r.err
}

// Receive is Parse and then Add for datagram b from addr, for a receiver
// that does nothing between the two: it makes every check of both, but
// checks and decodes a sample held whole in one datagram in a single walk
// of its payload, where Parse and Add walk it twice. It returns the
// datagram's header, and whether into now holds a complete sample; an
// update request returns false and no error. Errors are those of Parse and
// of Add, in that order of precedence. Unlike Add, Receive may change into
// when it drops a datagram: into holds a sample only after true.
func (a *Assembler) Receive(p *Parser, b []byte, addr netip.Addr, now time.Time, into *sample.Sample) (Header, bool, error) {
	pk, err := p.parseHeader(b)
	h := &pk.Header
	if err == nil && h.Kind == KindDetails {
		return *h, false, a.addDetails(a.senderOf(h, addr), &pk, now)
	}
	if err != nil || h.Kind != KindStatus {
		return *h, false, err
	}
	if h.Parts > 1 {
		r := reader{b: pk.payload, off: pk.ranges.body}
		walkStatus(&r, h, &pk.ranges, nil)
		if r.err != nil {
			return *h, false, r.err
		}
		complete, err := a.Add(a.senderOf(h, addr), &pk, now, into)
		return *h, complete, err
	}
	if !pk.ranges.fits(len(pk.payload)) {
		// Too short for the CPUs and devices it claims: find the error
		// Parse gives, without sizing into by untrusted counts first.
		r := reader{b: pk.payload, off: pk.ranges.body}
		walkStatus(&r, h, &pk.ranges, nil)
		return *h, false, r.err
	}
	resize(into, pk.ranges.cpuCount, pk.ranges.netCount)
	if err := decodePart(pk.payload, h, &pk.ranges, into); err != nil {
		return *h, false, err
	}
	if !now.Before(a.nextSweep) {
		a.Expire(now)
	}
	from := a.senderOf(h, addr)
	st, err := a.fresh(from, h)
	if err != nil {
		return *h, false, err
	}
	a.takeDetails(st, pendingKey{sender: from, bootID: h.BootID, epoch: h.Epoch, seq: h.Seq}, h, into)
	a.accept(from, st, h, into)
	return *h, true, nil
}

// newSender remembers a new sender, first forgetting one without
// incomplete samples when MaxSenders are known already.
func (a *Assembler) newSender(from Sender) *senderState {
	if len(a.senders) >= max(a.MaxSenders, 1) {
		for s, st := range a.senders {
			if st.pending == 0 {
				delete(a.senders, s)
				break
			}
		}
	}
	st := &senderState{}
	a.senders[from] = st
	return st
}

// Senders is the number of senders remembered.
func (a *Assembler) Senders() int { return len(a.senders) }

func (a *Assembler) senderOf(h *Header, addr netip.Addr) Sender {
	if a.Identify != nil {
		return a.Identify(h.Node, addr)
	}
	return SenderOf(h, addr)
}

// fresh returns the state of sender from, and an error if h is not newer
// than the last sample accepted from it.
func (a *Assembler) fresh(from Sender, h *Header) (*senderState, error) {
	st := a.senders[from]
	if st != nil && st.accepted {
		if err := st.fresh.check(h); err != nil {
			return st, err
		}
	}
	return st, nil
}

// decodePart stores one part into s, sized by resize, checking it as it
// goes: a part from Parse passes.
func decodePart(payload []byte, h *Header, g *ranges, s *sample.Sample) error {
	r := reader{b: payload, off: g.body} // the ranges are read already
	walkStatus(&r, h, g, s)
	return r.err
}

// checkCoverage makes sure the parts, in order, hold every CPU and device
// exactly once.
func (ps *pendingSample) checkCoverage() error {
	cpu, net := 0, 0
	for i := range ps.parts {
		g := &ps.parts[i].ranges
		if g.cpuFirst != cpu || g.netFirst != net {
			return fmt.Errorf("%w: part %d of seq %d does not continue where part %d stopped", ErrMalformed, i, ps.key.seq, i-1)
		}
		cpu += g.cpuN
		net += g.netN
	}
	if cpu != ps.counts.cpuCount || net != ps.counts.netCount {
		return fmt.Errorf("%w: parts of seq %d hold %d of %d CPUs and %d of %d devices",
			ErrMalformed, ps.key.seq, cpu, ps.counts.cpuCount, net, ps.counts.netCount)
	}
	return nil
}

// accept records a complete sample and abandons the sender's incomplete
// ones that are now older than it.
func (a *Assembler) accept(from Sender, st *senderState, h *Header, into *sample.Sample) {
	into.Time, into.BootTime, into.BootID = h.Time, h.BootTime, h.BootID
	if st == nil {
		st = a.newSender(from)
	}
	st.fresh.accept(h)
	st.accepted = true
	if st.pending == 0 {
		return
	}
	for _, ps := range a.pending {
		if ps.key.sender == from && !st.fresh.newer(&ps.header) {
			a.drop(ps, true)
			a.release(ps)
		}
	}
}

func (a *Assembler) startPending(key pendingKey, st *senderState, h *Header, g *ranges, now time.Time) *pendingSample {
	if st.pending >= perSender {
		a.dropOldest(func(ps *pendingSample) bool { return ps.key.sender == key.sender })
	}
	if len(a.pending) >= a.maxPending {
		a.dropOldest(nil)
	}
	var ps *pendingSample
	if n := len(a.free); n > 0 {
		ps, a.free = a.free[n-1], a.free[:n-1]
	} else {
		ps = &pendingSample{}
	}
	ps.key, ps.header, ps.first, ps.got = key, *h, now, 0
	ps.hasDetails = false
	ps.arena = ps.arena[:0]
	if g == nil { // details first: the status parts will say how many
		ps.counts = ranges{}
		ps.parts = ps.parts[:0]
	} else {
		ps.counts = ranges{cpuCount: g.cpuCount, netCount: g.netCount}
		ps.sizeParts(h.Parts)
	}
	a.pending[key] = ps
	st.pending++
	return ps
}

// makeRoom drops the oldest incomplete samples other than keep until n
// more bytes fit.
func (a *Assembler) makeRoom(n int, keep *pendingSample) {
	for a.held+n > a.maxBytes {
		if !a.dropOldest(func(ps *pendingSample) bool { return ps != keep }) {
			return
		}
	}
}

// dropOldest abandons the oldest incomplete sample that match accepts
// (any, if match is nil), and tells whether there was one.
func (a *Assembler) dropOldest(match func(*pendingSample) bool) bool {
	var oldest *pendingSample
	for _, ps := range a.pending {
		if (match == nil || match(ps)) && (oldest == nil || ps.first.Before(oldest.first)) {
			oldest = ps
		}
	}
	if oldest == nil {
		return false
	}
	a.drop(oldest, true)
	a.release(oldest)
	return true
}

// drop removes ps from the pending samples; abandoned counts it as lost.
func (a *Assembler) drop(ps *pendingSample, abandoned bool) {
	delete(a.pending, ps.key)
	a.held -= len(ps.arena)
	if st := a.senders[ps.key.sender]; st != nil {
		st.pending--
	}
	if abandoned {
		a.abandoned++
	}
}

func (a *Assembler) release(ps *pendingSample) {
	if cap(ps.arena) > keptArena {
		ps.arena = nil
	}
	if len(a.free) < a.maxPending {
		a.free = append(a.free, ps)
	}
}

// Expire abandons the incomplete samples whose first part came more than
// the timeout before now. Add calls it from time to time; a daemon may
// call it when idle.
func (a *Assembler) Expire(now time.Time) {
	for _, ps := range a.pending {
		if now.Sub(ps.first) > a.timeout {
			a.drop(ps, true)
			a.release(ps)
		}
	}
	a.nextSweep = now.Add(a.timeout / 4)
}

// Forget drops all that is known about a sender, such as a node removed
// from the cluster, including its incomplete samples. Its next sample is
// accepted whatever its boot and sequence.
func (a *Assembler) Forget(from Sender) {
	st := a.senders[from]
	if st == nil {
		return
	}
	for _, ps := range a.pending {
		if st.pending == 0 {
			break
		}
		if ps.key.sender == from {
			a.drop(ps, true)
			a.release(ps)
		}
	}
	delete(a.senders, from)
}

// Pending is the number of incomplete samples held.
func (a *Assembler) Pending() int { return len(a.pending) }

// Abandoned counts the incomplete samples dropped so far: timed out,
// pushed out for room, made stale by a newer sample, or forgotten.
func (a *Assembler) Abandoned() uint64 { return a.abandoned }
