package nsm

import (
	"cmp"
	"container/heap"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// NLMProgram is the lock manager's program number, the only callback
// target allowed unless the admin adds others.
const NLMProgram = 100021

// rpcbindProgram is the portmapper/rpcbind program, never a callback target.
const rpcbindProgram = 100000

// CanonicalName is the form in which mon_names compare: lower case, without
// a trailing dot. "CASEY", "casey" and "casey." name one host.
func CanonicalName(s string) string {
	return strings.ToLower(strings.TrimSuffix(s, "."))
}

// CoreConfig tunes a Core. Zero fields take the defaults in brackets.
type CoreConfig struct {
	// AllowedPrograms are the programs a registration may name as its
	// callback target [NLMProgram]. SM_PROG and rpcbind are refused
	// whatever this says: a callback to them launders a local call.
	AllowedPrograms []uint32
	// CallbackRetry are the delays after each failed callback
	// [1s 2s 4s 8s 16s 30s 60s]; after the last the callback is dropped.
	CallbackRetry []time.Duration
	// CallbackSpacing is the least time between two callbacks to one
	// registration [1s]: a peer really rebooting twice within it is told
	// once with the later state, a flood of notifications a few times.
	CallbackSpacing time.Duration
	// MaxCallbacksInFlight bounds concurrent callbacks [64].
	MaxCallbacksInFlight int
	// NotifyRate and NotifyBurst bound the matched SM_NOTIFYs answered per
	// second per sender and per monitored host [1/s, burst 10].
	NotifyRate  float64
	NotifyBurst int
	// MaxLimiterKeys bounds each rate limiter's table [4096].
	MaxLimiterKeys int
	// MaxParked bounds the SM_NOTIFY/SM_UNMON calls waiting for a name to
	// resolve [4096]; MaxResolving bounds lookups asked for at once [64].
	MaxParked    int
	MaxResolving int
	// MaxCached bounds the resolution cache [16384]; entries live CacheTTL
	// [5m] (failed lookups NegativeTTL [30s]).
	MaxCached   int
	CacheTTL    time.Duration
	NegativeTTL time.Duration
	// SameRebootWindow is how far apart a reboot seen by telemetry and a
	// real SM_NOTIFY from the host may be to count as one reboot [5m]
	// (see Core.Rebooted).
	SameRebootWindow time.Duration
	// Notify is the retry schedule of our own SM_NOTIFYs [DefaultSchedule];
	// MaxNotifyInFlight bounds those being sent at once [256].
	Notify            Schedule
	MaxNotifyInFlight int
	// NotifyOnRequest is rpc.statd -L: a notification owed at our start
	// (state number of the last start, not yet tried) waits for NotifyAll
	// (rpc.statd -n); those already tried, and those SimuCrash owes, go as
	// usual.
	NotifyOnRequest bool
}

func (c CoreConfig) withDefaults() CoreConfig {
	if len(c.AllowedPrograms) == 0 {
		c.AllowedPrograms = []uint32{NLMProgram}
	}
	if len(c.CallbackRetry) == 0 {
		c.CallbackRetry = []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second,
			16 * time.Second, 30 * time.Second, 60 * time.Second}
	}
	setInt := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	setDur := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	setInt(&c.MaxCallbacksInFlight, 64)
	setInt(&c.NotifyBurst, 10)
	setInt(&c.MaxLimiterKeys, 4096)
	setInt(&c.MaxParked, 4096)
	setInt(&c.MaxResolving, 64)
	setInt(&c.MaxCached, 16384)
	setInt(&c.MaxNotifyInFlight, 256)
	c.Notify = c.Notify.withDefaults()
	setDur(&c.CallbackSpacing, time.Second)
	setDur(&c.CacheTTL, 5*time.Minute)
	setDur(&c.NegativeTTL, 30*time.Second)
	setDur(&c.SameRebootWindow, 5*time.Minute)
	if c.NotifyRate <= 0 {
		c.NotifyRate = 1
	}
	return c
}

// CheckCallbackPrograms refuses a configuration naming SM_PROG or rpcbind
// as a callback target.
func CheckCallbackPrograms(progs []uint32) error {
	for _, p := range progs {
		if p == Program || p == rpcbindProgram {
			return fmt.Errorf("callback program %d is not allowed: statd and rpcbind are never called back", p)
		}
	}
	return nil
}

// ErrProgramNotAllowed is wrapped by the error Core.Mon gives for a my_id
// naming a program that is not an allowed callback target.
var ErrProgramNotAllowed = errors.New("callback program not allowed")

// ChangeKind says which record a Change writes.
type ChangeKind uint8

const (
	// ChangeReg writes or removes the registration Reg.
	ChangeReg ChangeKind = iota
	// ChangeOwed writes the owed notification Owed, or removes it
	// (Remove) while the record owes no newer state than Owed.State,
	// recording the host as given up on at At when GaveUp.
	ChangeOwed
	// ChangeState sets our state number to State and, when BootID is not
	// empty, records BootID as the boot of the last start.
	ChangeState
	// ChangeDropRegs removes every registration: the reboot step (the
	// registrants died with the host), in one step on disk.
	ChangeDropRegs
)

// Change is one record written or removed: a registration, an owed
// notification or the state number. The same value is applied to the
// store (Store.Apply) and then to the Core (Core.Apply), so disk and
// memory hold the same keys. Reg.MonName and Owed.Host are the spellings
// kept on disk.
type Change struct {
	Kind   ChangeKind
	Remove bool
	Reg    Registration

	Owed   Owed
	GaveUp bool
	At     time.Time
	// Settles says the owed record is the outcome of the attempt under way
	// on Owed.Host (the Core ends the attempt; the store ignores it).
	Settles bool

	State  int32
	BootID string
}

// Callback is one call to a registrant: status{MonName, State, Priv} to
// MyID's program.
type Callback struct {
	MonName string
	MyID    MyID
	Priv    [PrivLen]byte
	State   int32
}

// Ready is what a Core asks of its shell after an input: persist first,
// then apply (Core.Apply), then start the callbacks and lookups.
type Ready struct {
	Persist   []Change
	Callbacks []Callback
	// Resolve lists names to look up; the shell answers with Resolved.
	Resolve []string
	// GaveUp lists callbacks dropped after their last retry (for logging).
	GaveUp []Callback
	// Notify lists our SM_NOTIFYs to send now; the shell answers each with
	// NotifyDone.
	Notify []Owed
}

func (r *Ready) add(o Ready) {
	r.Persist = append(r.Persist, o.Persist...)
	r.Callbacks = append(r.Callbacks, o.Callbacks...)
	r.Resolve = append(r.Resolve, o.Resolve...)
	r.GaveUp = append(r.GaveUp, o.GaveUp...)
	r.Notify = append(r.Notify, o.Notify...)
}

// Empty reports whether there is nothing to do.
func (r Ready) Empty() bool {
	return len(r.Persist) == 0 && len(r.Callbacks) == 0 && len(r.Resolve) == 0 && len(r.GaveUp) == 0 && len(r.Notify) == 0
}

// NotifyResult says what became of one SM_NOTIFY.
type NotifyResult struct {
	Matched int  // registrations matched now
	Parked  bool // waiting for its name to resolve
	Limited bool // matched, but over the per-sender or per-host rate: do not answer
}

// Core is the NSM protocol state machine of rpc.statd: the registrations,
// the one matching rule, what each registrant has been told, the callback
// schedule, our state number and the schedule of the SM_NOTIFYs we owe
// (core_owed.go). It does no I/O and reads no clock; inputs return a
// Ready. It is not safe for concurrent use, and the shell must not run two
// inputs touching one host between an input and its Apply (it serializes
// per canonical name; SM_UNMON_ALL and resolutions serialize against all).
type Core struct {
	cfg     CoreConfig
	allowed map[uint32]bool

	hosts    map[string]*coreHost           // canonical name → host
	byAddr   map[netip.Addr]map[string]bool // address → canonical names
	byHead   map[string]map[string]bool     // first label → canonical names
	cache    map[string]*resolution         // canonical name → lookup result
	parked   map[string]*parkedCalls        // canonical name → calls awaiting its lookup
	nPark    int                            // parked calls in all
	asked    int                            // lookups asked for and not answered
	queue    callbackQueue                  // registrations with a callback waiting
	flying   int                            // callbacks in flight
	bySender *buckets[netip.Addr]
	byHost   *buckets[string]

	// fresh are monitored names added since the last Tick, to look up;
	// every sweepEvery a Tick also looks for expired ones among all hosts.
	fresh     []string
	lastSweep time.Time

	ours ourState
}

// coreHost is one monitored host: its registrations and its addresses (the
// literal itself, or what its name resolved to).
type coreHost struct {
	canon string
	regs  map[MyID]*coreReg
	addrs []netip.Addr

	// seen is the reboot telemetry saw last (Core.Rebooted); notified the
	// last real SM_NOTIFY that matched the host. Memory only, as the
	// callback state is.
	seen     *seenReboot
	notified struct {
		state int32
		at    time.Time
		ok    bool
	}
}

// coreReg is one registration and its callback state.
type coreReg struct {
	host       *coreHost
	my         MyID
	spellings  []string // mon_name as kept on disk; more than one only in a store written before names were canonical
	priv       [PrivLen]byte
	registered time.Time

	told, want, flight         int32
	hasTold, hasWant, inFlight bool
	attempts                   int
	nextTry                    time.Time
	toldAt                     time.Time // when the last callback succeeded
	index                      int       // in Core.queue, or -1
}

func (r *coreReg) callback(state int32) Callback {
	return Callback{MonName: r.spellings[0], MyID: r.my, Priv: r.priv, State: state}
}

type resolution struct {
	addrs   []netip.Addr
	expires time.Time
	asked   bool // a lookup is under way
}

// parkedCalls are what waits for one name to resolve: the latest SM_NOTIFY
// state with up to maxParkedSenders senders, and SM_UNMONs by registrant.
type parkedCalls struct {
	notify   bool
	state    int32
	senders  []netip.Addr
	unmon    []MyID
	notified time.Time
}

const maxParkedSenders = 4

// NewCore returns an empty Core.
func NewCore(cfg CoreConfig) *Core {
	cfg = cfg.withDefaults()
	c := &Core{
		cfg:      cfg,
		allowed:  map[uint32]bool{},
		hosts:    map[string]*coreHost{},
		byAddr:   map[netip.Addr]map[string]bool{},
		byHead:   map[string]map[string]bool{},
		cache:    map[string]*resolution{},
		parked:   map[string]*parkedCalls{},
		bySender: newBuckets[netip.Addr](cfg.NotifyRate, cfg.NotifyBurst, cfg.MaxLimiterKeys),
		byHost:   newBuckets[string](cfg.NotifyRate, cfg.NotifyBurst, cfg.MaxLimiterKeys),
		ours:     ourState{owed: map[string]*owedEntry{}},
	}
	for _, p := range cfg.AllowedPrograms {
		if p != Program && p != rpcbindProgram {
			c.allowed[p] = true
		}
	}
	return c
}

func head(canon string) string {
	h, _, _ := strings.Cut(canon, ".")
	return h
}

// literalAddrs is a monitored literal's address set: itself and what its
// lookup found (the shell looks a literal up by its reverse name, forward
// confirmed; see statd's resolver).
func literalAddrs(a netip.Addr, found []netip.Addr) []netip.Addr {
	as := append([]netip.Addr{a}, found...)
	slices.SortFunc(as, func(x, y netip.Addr) int { return x.Compare(y) })
	return slices.Compact(as)
}

func literal(name string) (netip.Addr, bool) {
	a, err := netip.ParseAddr(name)
	if err != nil {
		return netip.Addr{}, false
	}
	return a.Unmap(), true
}

// Load fills the Core from the store's registrations at start.
func (c *Core) Load(regs []Registration) {
	changes := make([]Change, len(regs))
	for i, r := range regs {
		changes[i] = Change{Reg: r}
	}
	c.Apply(changes)
}

// Registrations lists the registrations the core holds, one per spelling
// kept on disk, ordered by mon_name then my_id: what its store holds (the
// daemon's view while the store does not answer).
func (c *Core) Registrations() []Registration {
	var out []Registration
	for _, h := range c.hosts {
		for _, r := range h.regs {
			for _, sp := range r.spellings {
				out = append(out, Registration{MonName: sp, MyID: r.my, Priv: r.priv, Registered: r.registered})
			}
		}
	}
	slices.SortFunc(out, func(a, b Registration) int {
		return cmp.Or(strings.Compare(a.MonName, b.MonName), strings.Compare(a.MyID.Name, b.MyID.Name),
			cmp.Compare(a.MyID.Prog, b.MyID.Prog), cmp.Compare(a.MyID.Vers, b.MyID.Vers), cmp.Compare(a.MyID.Proc, b.MyID.Proc))
	})
	return out
}

// Len is the number of registrations.
func (c *Core) Len() int {
	n := 0
	for _, h := range c.hosts {
		n += len(h.regs)
	}
	return n
}

// Mon plans an SM_MON. A my_id naming a program that is not allowed is
// refused with an error wrapping ErrProgramNotAllowed. Repeating a
// registration under another spelling of its name (case, trailing dot)
// updates the one already there.
func (c *Core) Mon(r Registration) (Ready, error) {
	id := MonID{MonName: r.MonName, MyID: r.MyID}
	if err := id.Validate(); err != nil {
		return Ready{}, err
	}
	if !c.allowed[r.MyID.Prog] {
		return Ready{}, fmt.Errorf("%w: my_prog %d (allowed: %v)", ErrProgramNotAllowed, r.MyID.Prog, c.cfg.AllowedPrograms)
	}
	var rd Ready
	canon := CanonicalName(r.MonName)
	if h := c.hosts[canon]; h != nil {
		if old := h.regs[r.MyID]; old != nil {
			if old.priv == r.Priv && len(old.spellings) == 1 {
				return rd, nil // already durable as asked
			}
			r.MonName = old.spellings[0]
			if old.priv == r.Priv {
				r.Registered = old.registered
			}
			for _, sp := range old.spellings[1:] {
				rd.Persist = append(rd.Persist, Change{Remove: true, Reg: Registration{MonName: sp, MyID: r.MyID}})
			}
		}
	}
	rd.Persist = append(rd.Persist, Change{Reg: r})
	return rd, nil
}

// Unmon plans an SM_UNMON: it removes my's registrations of every host
// that matches name (see match). When name has to be looked up first, the
// removal of hosts matching only by address follows in the Ready of
// Resolved. found says whether anything matched now.
func (c *Core) Unmon(name string, my MyID, now time.Time) (rd Ready, found bool) {
	canon := CanonicalName(name)
	for _, h := range c.matchHosts(canon, netip.Addr{}, now) {
		if r := h.regs[my]; r != nil {
			found = true
			rd.Persist = append(rd.Persist, removals(r)...)
		}
	}
	if c.needsLookup(canon, now) {
		p := c.park(canon)
		if p != nil && !slices.Contains(p.unmon, my) {
			p.unmon = append(p.unmon, my)
		}
		rd.Resolve = c.ask(canon, rd.Resolve)
	}
	return rd, found
}

// UnmonAll plans SM_UNMON_ALL: every registration of my goes.
func (c *Core) UnmonAll(my MyID) (rd Ready, hosts []string) {
	for _, h := range c.hosts {
		if r := h.regs[my]; r != nil {
			rd.Persist = append(rd.Persist, removals(r)...)
			hosts = append(hosts, r.spellings[0])
		}
	}
	slices.Sort(hosts)
	return rd, hosts
}

func removals(r *coreReg) []Change {
	out := make([]Change, 0, len(r.spellings))
	for _, sp := range r.spellings {
		out = append(out, Change{Remove: true, Reg: Registration{MonName: sp, MyID: r.my}})
	}
	return out
}

// Apply makes memory hold what the store now holds, after Store.Apply of
// the same changes succeeded.
func (c *Core) Apply(changes []Change) {
	for _, ch := range changes {
		switch ch.Kind {
		case ChangeOwed:
			c.applyOwed(ch)
			continue
		case ChangeState:
			c.applyState(ch)
			continue
		case ChangeDropRegs:
			for _, h := range c.hosts {
				for _, r := range h.regs {
					if r.index >= 0 {
						heap.Remove(&c.queue, r.index)
					}
				}
				c.dropHost(h)
			}
			continue
		}
		canon := CanonicalName(ch.Reg.MonName)
		h := c.hosts[canon]
		if ch.Remove {
			if h == nil || h.regs[ch.Reg.MyID] == nil {
				continue
			}
			r := h.regs[ch.Reg.MyID]
			r.spellings = slices.DeleteFunc(r.spellings, func(s string) bool { return s == ch.Reg.MonName })
			if len(r.spellings) > 0 {
				continue
			}
			if r.index >= 0 {
				heap.Remove(&c.queue, r.index)
			}
			delete(h.regs, r.my)
			if len(h.regs) == 0 {
				c.dropHost(h)
			}
			continue
		}
		if h == nil {
			h = &coreHost{canon: canon, regs: map[MyID]*coreReg{}}
			c.hosts[canon] = h
			if c.byHead[head(canon)] == nil {
				c.byHead[head(canon)] = map[string]bool{}
			}
			c.byHead[head(canon)][canon] = true
			if a, ok := literal(canon); ok {
				// The literal, and (once looked up) the other addresses
				// of the host it names, as nfs-utils finds them through
				// the literal's canonical name.
				as := []netip.Addr{a}
				if res := c.cache[canon]; res != nil {
					as = literalAddrs(a, res.addrs)
				}
				c.setAddrs(h, as)
				c.fresh = append(c.fresh, canon)
			} else if res := c.cache[canon]; res != nil && len(res.addrs) > 0 {
				c.setAddrs(h, res.addrs)
			} else {
				c.fresh = append(c.fresh, canon)
			}
		}
		r := h.regs[ch.Reg.MyID]
		if r == nil {
			r = &coreReg{host: h, my: ch.Reg.MyID, index: -1}
			h.regs[r.my] = r
		}
		if !slices.Contains(r.spellings, ch.Reg.MonName) {
			r.spellings = append(r.spellings, ch.Reg.MonName)
		}
		r.priv, r.registered = ch.Reg.Priv, ch.Reg.Registered
	}
}

func (c *Core) dropHost(h *coreHost) {
	c.setAddrs(h, nil)
	if m := c.byHead[head(h.canon)]; m != nil {
		delete(m, h.canon)
		if len(m) == 0 {
			delete(c.byHead, head(h.canon))
		}
	}
	delete(c.hosts, h.canon)
}

func (c *Core) setAddrs(h *coreHost, as []netip.Addr) {
	for _, a := range h.addrs {
		if m := c.byAddr[a]; m != nil {
			delete(m, h.canon)
			if len(m) == 0 {
				delete(c.byAddr, a)
			}
		}
	}
	h.addrs = as
	for _, a := range as {
		if c.byAddr[a] == nil {
			c.byAddr[a] = map[string]bool{}
		}
		c.byAddr[a][h.canon] = true
	}
}

// matchHosts is the one matching rule: the hosts whose name is canon (or,
// between a short and a qualified name, SameHost), whose addresses include
// sender, or whose addresses include any address canon is known to have
// (itself when it is a literal, else its cached resolution).
func (c *Core) matchHosts(canon string, sender netip.Addr, now time.Time) []*coreHost {
	var out []*coreHost
	seen := map[string]bool{}
	add := func(k string) {
		if h := c.hosts[k]; h != nil && !seen[k] {
			seen[k] = true
			out = append(out, h)
		}
	}
	add(canon)
	for k := range c.byHead[head(canon)] {
		if SameHost(k, canon) {
			add(k)
		}
	}
	var addrs []netip.Addr
	if sender.IsValid() {
		addrs = append(addrs, sender.Unmap())
	}
	if a, ok := literal(canon); ok {
		addrs = append(addrs, a)
	} else if res := c.cache[canon]; res != nil && !res.asked {
		addrs = append(addrs, res.addrs...)
	}
	for _, a := range addrs {
		for k := range c.byAddr[a] {
			add(k)
		}
	}
	slices.SortFunc(out, func(a, b *coreHost) int { return strings.Compare(a.canon, b.canon) })
	return out
}

// needsLookup: canon is a name whose addresses are not known, or known
// too long ago. An incoming literal needs none: a monitored host's
// addresses include those of its literal's host (see literalAddrs).
func (c *Core) needsLookup(canon string, now time.Time) bool {
	if _, ok := literal(canon); ok {
		return false
	}
	return c.stale(canon, now)
}

// stale: what canon resolves to is not known, or known too long ago, and no
// lookup is under way. Monitored literals are looked up too.
func (c *Core) stale(canon string, now time.Time) bool {
	res := c.cache[canon]
	return res == nil || !res.asked && now.After(res.expires)
}

// ask adds canon to the names to resolve, within the bound on lookups.
func (c *Core) ask(canon string, to []string) []string {
	res := c.cache[canon]
	if res != nil && res.asked {
		return to
	}
	if c.asked >= c.cfg.MaxResolving {
		return to // dropped: the parked calls go at the next expiry sweep
	}
	if res == nil {
		if len(c.cache) >= c.cfg.MaxCached {
			c.evictCache()
		}
		res = &resolution{}
		c.cache[canon] = res
	}
	res.asked = true
	c.asked++
	return append(to, canon)
}

// evictCache drops the entries no registered host needs, oldest expiry
// first, until a quarter of the cache is free.
func (c *Core) evictCache() {
	type ent struct {
		k string
		t time.Time
	}
	var es []ent
	for k, r := range c.cache {
		if !r.asked && c.hosts[k] == nil {
			es = append(es, ent{k, r.expires})
		}
	}
	slices.SortFunc(es, func(a, b ent) int { return a.t.Compare(b.t) })
	for i := 0; i < len(es) && len(c.cache) > c.cfg.MaxCached*3/4; i++ {
		delete(c.cache, es[i].k)
	}
}

// park returns the parked calls of canon, making room for them within the
// bound; nil when the bound is reached.
func (c *Core) park(canon string) *parkedCalls {
	if p := c.parked[canon]; p != nil {
		return p
	}
	if c.nPark >= c.cfg.MaxParked {
		return nil
	}
	p := &parkedCalls{}
	c.parked[canon] = p
	c.nPark++
	return p
}

// Notify takes an SM_NOTIFY{name, state} from sender. Every matching
// registration is to hear of state: at most one callback is in flight per
// registration, a newer state replaces one not yet sent, and a state the
// registrant was told or is being told costs nothing. Over the rate per
// sender or per monitored host the call is still recorded (it costs one
// state per registration) but Limited says not to answer it or log it,
// and it starts no lookup.
// When name has to be looked up, the registrations it matches by address
// are told when the lookup completes.
func (c *Core) Notify(name string, state int32, sender netip.Addr, now time.Time) (rd Ready, res NotifyResult) {
	canon := CanonicalName(name)
	sender = sender.Unmap()
	hosts := c.matchHosts(canon, sender, now)
	senderOK := c.bySender.allow(sender, now)
	if len(hosts) > 0 {
		res.Limited = !senderOK
		for _, h := range hosts {
			if !c.byHost.allow(h.canon, now) {
				res.Limited = true
			}
			if c.sameReboot(h, state, now) {
				res.Matched += len(h.regs)
				continue
			}
			for _, r := range h.regs {
				res.Matched++
				c.tell(r, state, now)
			}
		}
	}
	// A lookup only for a sender within its rate: a remote flood of new
	// names must not become a flood of DNS queries.
	if senderOK && len(c.hosts) > 0 && c.needsLookup(canon, now) {
		if p := c.park(canon); p != nil {
			if !p.notify || p.state != state {
				p.senders = p.senders[:0]
			}
			p.notify, p.state, p.notified = true, state, now
			if len(p.senders) < maxParkedSenders && !slices.Contains(p.senders, sender) {
				p.senders = append(p.senders, sender)
			}
			res.Parked = true
			rd.Resolve = c.ask(canon, rd.Resolve)
		}
	}
	rd.add(c.dispatch(now))
	return rd, res
}

// tell records that r is to hear of state. While a state waits to be sent
// only a newer one replaces it (a reordered or replayed older one is
// dropped); otherwise any state other than the one told or being told is
// news, so a peer whose state file was reset is still heard.
func (c *Core) tell(r *coreReg, state int32, now time.Time) {
	switch {
	case r.hasWant && state <= r.want,
		!r.hasWant && r.inFlight && r.flight == state,
		!r.hasWant && !r.inFlight && r.hasTold && r.told == state:
		return
	}
	r.want, r.hasWant = state, true
	if r.inFlight || r.index >= 0 {
		return // sent when the call under way ends, or already queued
	}
	r.nextTry = now
	if r.hasTold {
		r.nextTry = later(now, r.toldAt.Add(c.cfg.CallbackSpacing))
	}
	heap.Push(&c.queue, r)
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// dispatch starts the callbacks due at now, within the in-flight bound.
func (c *Core) dispatch(now time.Time) (rd Ready) {
	for c.queue.Len() > 0 && c.flying < c.cfg.MaxCallbacksInFlight && !c.queue[0].nextTry.After(now) {
		r := heap.Pop(&c.queue).(*coreReg)
		r.inFlight, r.flight, r.hasWant = true, r.want, false
		c.flying++
		rd.Callbacks = append(rd.Callbacks, r.callback(r.flight))
	}
	return rd
}

// CallbackDone records how a callback from Ready.Callbacks ended.
func (c *Core) CallbackDone(cb Callback, ok bool, now time.Time) (rd Ready) {
	c.flying--
	h := c.hosts[CanonicalName(cb.MonName)]
	var r *coreReg
	if h != nil {
		r = h.regs[cb.MyID]
	}
	if r == nil || !r.inFlight || r.flight != cb.State {
		return c.dispatch(now) // unregistered meanwhile
	}
	r.inFlight = false
	if ok {
		r.told, r.hasTold, r.attempts, r.toldAt = cb.State, true, 0, now
		if r.hasWant && r.want != cb.State {
			r.nextTry = now.Add(c.cfg.CallbackSpacing)
			heap.Push(&c.queue, r)
		} else {
			r.hasWant = false
		}
		return c.dispatch(now)
	}
	if !r.hasWant {
		r.want, r.hasWant = cb.State, true
	}
	r.attempts++
	if r.attempts > len(c.cfg.CallbackRetry) {
		rd.GaveUp = append(rd.GaveUp, r.callback(r.want))
		r.hasWant, r.attempts = false, 0
		rd.add(c.dispatch(now))
		return rd
	}
	r.nextTry = now.Add(c.cfg.CallbackRetry[r.attempts-1])
	heap.Push(&c.queue, r)
	return c.dispatch(now)
}

// Resolved records the answer to a lookup asked for in Ready.Resolve
// (addrs empty when it failed) and completes what waited for it.
func (c *Core) Resolved(name string, addrs []netip.Addr, now time.Time) (rd Ready) {
	canon := CanonicalName(name)
	res := c.cache[canon]
	if res == nil || !res.asked {
		return rd
	}
	res.asked = false
	c.asked--
	as := make([]netip.Addr, 0, len(addrs))
	for _, a := range addrs {
		as = append(as, a.Unmap())
	}
	slices.SortFunc(as, func(a, b netip.Addr) int { return a.Compare(b) })
	res.addrs = slices.Compact(as)
	ttl := c.cfg.CacheTTL
	if len(res.addrs) == 0 {
		ttl = c.cfg.NegativeTTL
	}
	res.expires = now.Add(ttl)
	if h := c.hosts[canon]; h != nil {
		if a, ok := literal(canon); ok {
			c.setAddrs(h, literalAddrs(a, res.addrs))
		} else if len(res.addrs) > 0 {
			c.setAddrs(h, res.addrs)
		}
	}
	p := c.parked[canon]
	if p == nil {
		return rd
	}
	delete(c.parked, canon)
	c.nPark--
	hosts := c.matchHosts(canon, netip.Addr{}, now)
	if p.notify {
		for _, s := range p.senders {
			hosts = append(hosts, c.matchHosts(canon, s, now)...)
		}
		for _, h := range hosts {
			// The same rule as in Notify: nfs-utils announces a reboot by
			// name, so the host's SM_NOTIFY often ends here.
			if c.sameReboot(h, p.state, now) {
				continue
			}
			for _, r := range h.regs {
				c.tell(r, p.state, now)
			}
		}
	}
	for _, my := range p.unmon {
		for _, h := range hosts {
			if r := h.regs[my]; r != nil && !slices.ContainsFunc(rd.Persist, func(ch Change) bool {
				return ch.Reg.MyID == my && CanonicalName(ch.Reg.MonName) == h.canon
			}) {
				rd.Persist = append(rd.Persist, removals(r)...)
			}
		}
	}
	rd.add(c.dispatch(now))
	return rd
}

// Tick starts the callbacks and lookups due at now: retries whose delay
// ran out, lookups of names monitored since the last Tick and, every
// NegativeTTL, of monitored names whose addresses expired.
func (c *Core) Tick(now time.Time) (rd Ready) {
	rd = c.dispatch(now)
	rd.add(c.dispatchOwed(now))
	for len(c.fresh) > 0 && c.asked < c.cfg.MaxResolving {
		k := c.fresh[0]
		c.fresh = c.fresh[1:]
		if h := c.hosts[k]; h != nil && c.stale(k, now) {
			rd.Resolve = c.ask(k, rd.Resolve)
		}
	}
	if len(c.fresh) == 0 {
		c.fresh = nil // let the backing array go
	}
	if now.Sub(c.lastSweep) < c.cfg.NegativeTTL {
		return rd
	}
	c.lastSweep = now
	for k := range c.hosts {
		if c.asked >= c.cfg.MaxResolving {
			break
		}
		if c.stale(k, now) {
			rd.Resolve = c.ask(k, rd.Resolve)
		}
	}
	return rd
}

// Cached reports what the resolution cache knows of name at now: known
// when it holds a fresh answer, resolves when that answer had addresses.
func (c *Core) Cached(name string, now time.Time) (resolves, known bool) {
	res := c.cache[CanonicalName(name)]
	if res == nil || res.asked || now.After(res.expires) {
		return false, false
	}
	return len(res.addrs) > 0, true
}

// RemovalWaits reports whether a lookup of name, when it completes, may
// remove registrations (an SM_UNMON waits for it): the shell then
// serializes the completion against every other mutation.
func (c *Core) RemovalWaits(name string) bool {
	p := c.parked[CanonicalName(name)]
	return p != nil && len(p.unmon) > 0
}

// NextWake is when the earliest callback retry or owed notification falls
// due; false when none waits. (Refreshing monitored names' addresses needs
// a Tick now and then: the shell ticks at least every minute.)
func (c *Core) NextWake() (time.Time, bool) {
	t, ok := c.nextOwed()
	if c.queue.Len() > 0 && (!ok || c.queue[0].nextTry.Before(t)) {
		t, ok = c.queue[0].nextTry, true
	}
	return t, ok
}

// callbackQueue holds the registrations with a callback waiting, by next try.
type callbackQueue = indexedHeap[*coreReg]

func (r *coreReg) heapIndex() *int            { return &r.index }
func (r *coreReg) runsBefore(o *coreReg) bool { return r.nextTry.Before(o.nextTry) }

// buckets is a token bucket per key, at most max keys, for a caller that
// serializes access. When the table is full, the keys whose buckets have
// refilled go (forgetting them loses nothing), then arbitrary ones, so a
// flood of new keys costs old ones at most their saved-up burst.
type buckets[K comparable] struct {
	rate, burst float64
	max         int
	m           map[K]*tokens
}

func newBuckets[K comparable](rate float64, burst, max int) *buckets[K] {
	return &buckets[K]{rate: rate, burst: float64(burst), max: max, m: map[K]*tokens{}}
}

func (b *buckets[K]) allow(k K, now time.Time) bool {
	t, ok := b.m[k]
	if !ok {
		if len(b.m) >= b.max {
			b.evict(now)
		}
		t = &tokens{n: b.burst, last: now}
		b.m[k] = t
	}
	if now.After(t.last) {
		t.n = min(b.burst, t.n+now.Sub(t.last).Seconds()*b.rate)
		t.last = now
	}
	if t.n < 1 {
		return false
	}
	t.n--
	return true
}

func (b *buckets[K]) evict(now time.Time) {
	for key, t := range b.m {
		if t.n+now.Sub(t.last).Seconds()*b.rate >= b.burst {
			delete(b.m, key)
		}
	}
	for key := range b.m {
		if len(b.m) < b.max {
			return
		}
		delete(b.m, key)
	}
}
