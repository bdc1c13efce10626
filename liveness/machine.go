// Package liveness turns the telemetry node table into what rpc.statd
// needs to know about the hosts it monitors: whether each is up, silent or
// gone for good, and when one rebooted, whether or not its statd said so.
//
// Machine is the pure core: it is told which hosts are tracked and fed
// scans of the table, and answers with events and liveness. It does no I/O
// and reads no clock (every input carries its time), so tests run a day of
// silence in microseconds. Watcher is the thin shell that scans the real
// table (package shm) every period and delivers the events on a bounded
// channel. See docs/liveness.md.
package liveness

import (
	"bytes"
	"errors"
	"fmt"
	"iter"
	"net/netip"
	"strings"
	"time"
)

// Defaults of Config.
const (
	// DefaultGoneAfter is --gone-after: a host silent for a day is gone,
	// the time the BSD statd retries a notification before giving up.
	DefaultGoneAfter = 24 * time.Hour
	// DefaultDownAfter stands for the table's down-after until a scan
	// has told the real one (recvstats' default).
	DefaultDownAfter = 5 * time.Second
	// DefaultMaxHosts bounds the hosts tracked: rpc.statd tracks every
	// monitored host and every host owed a notification.
	DefaultMaxHosts = 1 << 16
)

// Limits of one host.
const (
	// MaxAddrs is the most addresses one host may be tracked at.
	MaxAddrs = 64
	// MaxNameLen is the longest host name (NSM's SM_MAXSTRLEN).
	MaxNameLen = 1024
	// maxTies is how many nodes of the table one host remembers being
	// seen as (normally one; a renumbered node or two senders behind one
	// address make more). The least recently heard is dropped first.
	maxTies = 4
	// knownBoots is how many boot ids one host remembers, so that no
	// boot id is reported twice even when two nodes alternate.
	knownBoots = 8
)

// Errors of Track.
var (
	ErrTooManyHosts = errors.New("liveness: too many hosts tracked")
	ErrBadHost      = errors.New("liveness: bad host")
)

// Host is a host as rpc.statd knows it: its NSM name and every address
// the name resolves to, and optionally its hostname as telemetry would
// report it.
type Host struct {
	Name     string
	Addrs    []netip.Addr
	Hostname string // optional; matched against Node.Hostname (see Observe)
}

// Node is one node of the telemetry table as a scan read it.
type Node struct {
	Node     int        // node number in the table
	Addr     netip.Addr // where its last status came from
	Hostname string     // as the node's kernel spells it; "" when not asked for
	BootID   [16]byte
	LastSeen time.Time // master clock; zero for a record with no status
}

// State is a host's liveness.
type State uint8

// States.
const (
	Unknown State = iota // no telemetry node tied to the host yet
	Up                   // heard from (telemetry or an answer) within the table's down-after
	Silent               // tied, but not heard from within down-after
	Gone                 // silent for GoneAfter of observed telemetry
)

var stateNames = [...]string{"unknown", "up", "silent", "gone"}

func (s State) String() string {
	if int(s) < len(stateNames) {
		return stateNames[s]
	}
	return fmt.Sprintf("State(%d)", s)
}

// MarshalText names the state in JSON ("up", "silent", …).
func (s State) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// Liveness is what the machine knows of one host.
type Liveness struct {
	State State
	// LastHeard is when the host was last heard from: the newest sample
	// of a tied node, or an answer to us. For Silent and Gone it is when
	// the silence began. Zero when never.
	LastHeard time.Time
	Node      int      // the node last heard as the host; -1 when none
	BootID    [16]byte // that node's boot id
}

// Event is what a scan reports: RebootSeen or Returned.
type Event interface {
	HostName() string
	event()
}

// RebootSeen says that a node tied to Host came up with a boot id it
// had not had: the host rebooted, whether or not it said so.
type RebootSeen struct {
	Host             string
	Node             int
	OldBoot, NewBoot [16]byte
	At               time.Time // when the new boot was heard (master clock)
}

// Returned says that Host, silent until the scan (not heard from for the
// table's down-after: Liveness said Silent or Gone), is up again.
type Returned struct {
	Host string
	Node int
	At   time.Time // when it was heard again
}

func (e RebootSeen) HostName() string { return e.Host }
func (e Returned) HostName() string   { return e.Host }
func (RebootSeen) event()             {}
func (Returned) event()               {}

// Config tunes a Machine. Zero values take the defaults.
type Config struct {
	GoneAfter time.Duration // default DefaultGoneAfter
	MaxHosts  int           // default DefaultMaxHosts
}

// tie is one node of the table seen as a host.
type tie struct {
	node     int
	boot     [16]byte
	lastSeen time.Time
}

type hostState struct {
	Host
	ties     [maxTies]tie
	nties    int
	boots    [knownBoots][16]byte // ring of boot ids seen as this host
	nboots   int
	lastSeen time.Time // newest LastSeen of a tied node
	answered time.Time // newest answer to us
	last     int       // index in ties of the node last heard

	// Per scan: the host's last-heard time before the scan, to tell a
	// return.
	scan      uint64
	heardPrev time.Time
}

// Machine is the liveness core. It holds state only for the hosts it
// tracks (at most MaxHosts, each with at most MaxAddrs addresses,
// maxTies nodes and knownBoots boot ids): nothing grows with the table.
// It is not safe for concurrent use.
type Machine struct {
	cfg    Config
	hosts  map[string]*hostState
	byAddr map[netip.Addr][]*hostState
	// byHostname holds each host under its hostname (lower case, no
	// trailing dot) and, when that is qualified, under its first label too.
	byHostname map[string][]*hostState

	downAfter time.Duration
	seenUntil time.Time // the last scan: telemetry was observed up to here
	scans     uint64
	touched   []*hostState
}

// New returns a machine that tracks no host.
func New(cfg Config) *Machine {
	if cfg.GoneAfter <= 0 {
		cfg.GoneAfter = DefaultGoneAfter
	}
	if cfg.MaxHosts <= 0 {
		cfg.MaxHosts = DefaultMaxHosts
	}
	return &Machine{cfg: cfg, hosts: map[string]*hostState{}, byAddr: map[netip.Addr][]*hostState{},
		byHostname: map[string][]*hostState{}, downAfter: DefaultDownAfter}
}

// Len is the number of hosts tracked.
func (m *Machine) Len() int { return len(m.hosts) }

// tracksHostname reports whether a node's hostname b may tie it to a
// tracked host, without allocating: the table's scan asks it of every node.
func (m *Machine) tracksHostname(b []byte) bool {
	if len(b) == 0 || len(b) > MaxNameLen || len(m.byHostname) == 0 {
		return false
	}
	var buf [MaxNameLen]byte
	full, short := hostnameKeys(buf[:0], b)
	if _, ok := m.byHostname[string(full)]; ok {
		return true
	}
	_, ok := m.byHostname[string(short)]
	return ok
}

// hostnameKeys appends b to buf in lower case without a trailing dot, and
// returns it with its first label (the same slice when b is not qualified).
func hostnameKeys(buf, b []byte) (full, short []byte) {
	b = bytes.TrimSuffix(b, []byte("."))
	for _, c := range b {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		buf = append(buf, c)
	}
	if i := bytes.IndexByte(buf, '.'); i > 0 {
		return buf, buf[:i]
	}
	return buf, buf
}

// Track starts tracking h, or updates the addresses and hostname of a
// host tracked under the same name (what is known of it is kept). It
// fails, naming what is wrong, for an empty or over-long name, more than
// MaxAddrs addresses, an invalid address, or a new host beyond MaxHosts.
func (m *Machine) Track(h Host) error {
	if h.Name == "" || len(h.Name) > MaxNameLen {
		return fmt.Errorf("%w: name of %d bytes (1 to %d)", ErrBadHost, len(h.Name), MaxNameLen)
	}
	if len(h.Addrs) > MaxAddrs {
		return fmt.Errorf("%w: %q has %d addresses, at most %d are tracked", ErrBadHost, h.Name, len(h.Addrs), MaxAddrs)
	}
	addrs := make([]netip.Addr, 0, len(h.Addrs))
	for _, a := range h.Addrs {
		if !a.IsValid() {
			return fmt.Errorf("%w: %q has an invalid address", ErrBadHost, h.Name)
		}
		a = a.Unmap().WithZone("")
		if !contains(addrs, a) {
			addrs = append(addrs, a)
		}
	}
	s := m.hosts[h.Name]
	if s == nil {
		if len(m.hosts) >= m.cfg.MaxHosts {
			return fmt.Errorf("%w: %d hosts, cannot track %q", ErrTooManyHosts, len(m.hosts), h.Name)
		}
		s = &hostState{last: -1}
		m.hosts[h.Name] = s
	} else {
		m.unindex(s)
	}
	full, _ := hostnameKeys(nil, []byte(h.Hostname))
	s.Host = Host{Name: h.Name, Addrs: addrs, Hostname: string(full)}
	for _, a := range addrs {
		m.byAddr[a] = append(m.byAddr[a], s)
	}
	for _, k := range s.hostnameKeys() {
		m.byHostname[k] = append(m.byHostname[k], s)
	}
	return nil
}

// hostnameKeys are the keys s is indexed under in byHostname.
func (s *hostState) hostnameKeys() []string {
	if s.Hostname == "" {
		return nil
	}
	if i := strings.IndexByte(s.Hostname, '.'); i > 0 {
		return []string{s.Hostname, s.Hostname[:i]}
	}
	return []string{s.Hostname}
}

// Untrack forgets the host named name and everything known of it.
func (m *Machine) Untrack(name string) {
	s := m.hosts[name]
	if s == nil {
		return
	}
	m.unindex(s)
	delete(m.hosts, name)
}

func (m *Machine) unindex(s *hostState) {
	for _, a := range s.Addrs {
		if l := remove(m.byAddr[a], s); len(l) > 0 {
			m.byAddr[a] = l
		} else {
			delete(m.byAddr, a)
		}
	}
	for _, k := range s.hostnameKeys() {
		if l := remove(m.byHostname[k], s); len(l) > 0 {
			m.byHostname[k] = l
		} else {
			delete(m.byHostname, k)
		}
	}
}

func remove(l []*hostState, s *hostState) []*hostState {
	for i, x := range l {
		if x == s {
			l[i] = l[len(l)-1]
			l[len(l)-1] = nil
			return l[:len(l)-1]
		}
	}
	return l
}

func contains[T comparable](l []T, x T) bool {
	for _, y := range l {
		if y == x {
			return true
		}
	}
	return false
}

// Answered records that the host named name answered us at now (an RPC
// reply from it): it counts as up for the table's down-after. An answer
// alone never makes a Returned event: the caller already knows.
func (m *Machine) Answered(name string, now time.Time) {
	if s := m.hosts[name]; s != nil && now.After(s.answered) {
		s.answered = now
	}
}

// Observe takes one scan of the table made at now, whose down-after is
// downAfter: nodes yields every node the scan could read, in any order.
// A partial scan (the reader failed half-way) is harmless: a node not
// yielded is only not heard from this time. Observe returns the events
// of the scan, RebootSeen before Returned for one host.
//
// A node is tied to a host when one of the host's addresses is the
// node's, or when their hostnames are the same host by the rule of the
// NSM matching (docs/statd-core.md): case and a trailing dot aside, equal,
// or one short and the other qualified beginning with it and a dot
// ("c1" and "c1.example"; not "c1.a" and "c1.b"). A tied node's boot id
// changing is a reboot, reported once per boot id: never for the first
// sighting of a host, never for a boot id the host was seen with before,
// and not for a sender that merely restarted (same boot id). A node newly
// tied to a host that already had a boot is a reboot too when it is the
// newest news of the host and no other tied node is up (the host came
// back under a new node number); while another is up it is a second
// sender at the host's address, and an older record is a stale one.
func (m *Machine) Observe(now time.Time, downAfter time.Duration, nodes iter.Seq[Node]) []Event {
	if downAfter > 0 {
		m.downAfter = downAfter
	}
	m.scans++
	m.touched = m.touched[:0]
	var events []Event
	for n := range nodes {
		if n.LastSeen.IsZero() {
			continue // a record with no status yet (repaired by a restarted writer)
		}
		for _, s := range m.byAddr[n.Addr.Unmap().WithZone("")] {
			events = m.see(s, &n, now, events)
		}
		if n.Hostname != "" {
			full, short := hostnameKeys(nil, []byte(n.Hostname))
			for _, s := range m.byHostname[string(full)] {
				events = m.see(s, &n, now, events)
			}
			if len(short) < len(full) {
				// A qualified node: hosts tracked under its short name alone.
				for _, s := range m.byHostname[string(short)] {
					if s.Hostname == string(short) {
						events = m.see(s, &n, now, events)
					}
				}
			}
		}
	}
	for _, s := range m.touched {
		// Silent just before this scan (what Liveness said of it then),
		// up now: a return.
		if m.stateAt(s.heardPrev, s.answered, now, m.seenUntil) >= Silent &&
			m.state(s, now) == Up {
			events = append(events, Returned{Host: s.Name, Node: s.ties[s.last].node, At: s.lastSeen})
		}
	}
	if now.After(m.seenUntil) {
		m.seenUntil = now
	}
	return events
}

// see applies one sighting of node n to host s.
func (m *Machine) see(s *hostState, n *Node, now time.Time, events []Event) []Event {
	if s.scan != m.scans {
		s.scan = m.scans
		s.heardPrev = s.lastSeen
		m.touched = append(m.touched, s)
	}
	i := s.tie(n.Node)
	if i >= 0 && !n.LastSeen.After(s.ties[i].lastSeen) {
		return events // no news: the same status as before, or older
	}
	zero := n.BootID == [16]byte{}
	switch {
	case zero || s.knows(n.BootID):
	case i >= 0:
		events = append(events, RebootSeen{Host: s.Name, Node: n.Node, OldBoot: s.ties[i].boot, NewBoot: n.BootID, At: n.LastSeen})
	case s.nboots > 0 && n.LastSeen.After(s.lastSeen) && !m.otherUp(s, now):
		events = append(events, RebootSeen{Host: s.Name, Node: n.Node, OldBoot: s.ties[s.last].boot, NewBoot: n.BootID, At: n.LastSeen})
	}
	if !zero && !s.knows(n.BootID) {
		s.boots[s.nboots%knownBoots] = n.BootID
		s.nboots++
	}
	if i < 0 {
		i = s.newTie(n.Node)
	}
	t := &s.ties[i]
	t.lastSeen = n.LastSeen
	if !zero {
		t.boot = n.BootID
	}
	if n.LastSeen.After(s.lastSeen) {
		s.lastSeen = n.LastSeen
		s.last = i
	}
	return events
}

func (s *hostState) tie(node int) int {
	for i := range s.nties {
		if s.ties[i].node == node {
			return i
		}
	}
	return -1
}

// newTie makes room for node, dropping the tie least recently heard.
func (s *hostState) newTie(node int) int {
	i := s.nties
	if i == maxTies {
		i = 0
		for j := range s.nties {
			if j != s.last && (i == s.last || s.ties[j].lastSeen.Before(s.ties[i].lastSeen)) {
				i = j
			}
		}
	} else {
		s.nties++
	}
	s.ties[i] = tie{node: node}
	return i
}

func (s *hostState) knows(boot [16]byte) bool {
	return contains(s.boots[:min(s.nboots, knownBoots)], boot)
}

// otherUp tells whether a node tied to s is up at now.
func (m *Machine) otherUp(s *hostState, now time.Time) bool {
	for i := range s.nties {
		if now.Sub(s.ties[i].lastSeen) < m.downAfter {
			return true
		}
	}
	return false
}

// Liveness tells what is known of the host named name at now. A host not
// tracked, or never tied to a node of the table, is Unknown unless it
// answered us within down-after.
func (m *Machine) Liveness(name string, now time.Time) Liveness {
	s := m.hosts[name]
	if s == nil {
		return Liveness{State: Unknown, Node: -1}
	}
	l := Liveness{State: m.state(s, now), LastHeard: later(s.lastSeen, s.answered), Node: -1}
	if s.last >= 0 {
		l.Node, l.BootID = s.ties[s.last].node, s.ties[s.last].boot
	}
	return l
}

func (m *Machine) state(s *hostState, now time.Time) State {
	observed := m.seenUntil
	if now.Before(observed) {
		observed = now
	}
	return m.stateAt(s.lastSeen, s.answered, now, observed)
}

// stateAt is the state of a host last seen by telemetry at seen and
// answering at answered, judged at now. Silence counts towards Gone only
// up to observed, the last scan of the table: while the table is not
// being scanned (no table, or its writer is not running) nobody becomes
// gone.
func (m *Machine) stateAt(seen, answered, now, observed time.Time) State {
	heard := later(seen, answered)
	switch {
	case !heard.IsZero() && now.Sub(heard) < m.downAfter:
		return Up
	case seen.IsZero():
		return Unknown // no telemetry for it: silence means nothing
	case observed.Sub(heard) >= m.cfg.GoneAfter:
		return Gone
	}
	return Silent
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
