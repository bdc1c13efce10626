package statd

import (
	"net/netip"
	"sort"
	"strings"
	"sync"

	"github.com/hoststat/hoststat/nsm"
)

// regKey names one registration: the host watched and who watches it.
type regKey struct {
	monName string
	my      nsm.MyID
}

// regEntry is the in-memory copy of a registration plus what we last told
// its registrant, so the FQDN-then-short-name pair of notifications (and any
// replay) calls it back once per state change, as nfs-utils does.
type regEntry struct {
	priv      [nsm.PrivLen]byte
	lastState int32
	told      bool
}

// index mirrors the store's registrations for SM_NOTIFY matching and the
// admin view. Mutations go through the store first; stripe locks keep a
// host's store write and index update in one order, so the mirror never
// disagrees with the file, while different hosts still share a group commit.
type index struct {
	all sync.RWMutex // write-held by SM_UNMON_ALL, read-held by others

	hostMu sync.Mutex
	hosts  map[string]*hostLock // one lock per host with a mutation under way

	mu     sync.Mutex
	byName map[string]map[nsm.MyID]*regEntry // lower-cased mon_name
	names  map[string]string                 // lower-cased → as registered
	addrs  map[string][]netip.Addr           // lower-cased mon_name → resolved addresses
	byAddr map[netip.Addr]map[string]bool    // the reverse of addrs
	byHead map[string]map[string]bool        // first label → lower-cased mon_names
}

// head is a name's first label, lower-cased: names nsm.SameHost may match
// share it, so it narrows the candidates without a scan.
func head(name string) string {
	h, _, _ := strings.Cut(name, ".")
	return strings.ToLower(h)
}

func newIndex() *index {
	return &index{
		hosts:  map[string]*hostLock{},
		byName: map[string]map[nsm.MyID]*regEntry{},
		names:  map[string]string{},
		addrs:  map[string][]netip.Addr{},
		byAddr: map[netip.Addr]map[string]bool{},
		byHead: map[string]map[string]bool{},
	}
}

type hostLock struct {
	mu   sync.Mutex
	refs int
}

// lockHost serializes mutations of one host's registrations. The lock is
// held across the store's commit, so it is per host name, never shared by
// two hosts: a shared lock would cap how many SM_MONs one fsync can carry.
func (x *index) lockHost(monName string) func() {
	x.all.RLock()
	k := strings.ToLower(monName)
	x.hostMu.Lock()
	l := x.hosts[k]
	if l == nil {
		l = &hostLock{}
		x.hosts[k] = l
	}
	l.refs++
	x.hostMu.Unlock()
	l.mu.Lock()
	return func() {
		l.mu.Unlock()
		x.hostMu.Lock()
		if l.refs--; l.refs == 0 {
			delete(x.hosts, k)
		}
		x.hostMu.Unlock()
		x.all.RUnlock()
	}
}

// lockAll serializes against every host (SM_UNMON_ALL, SM_SIMU_CRASH).
func (x *index) lockAll() func() {
	x.all.Lock()
	return x.all.Unlock
}

func (x *index) put(r nsm.Registration) {
	k := strings.ToLower(r.MonName)
	x.mu.Lock()
	defer x.mu.Unlock()
	m := x.byName[k]
	if m == nil {
		m = map[nsm.MyID]*regEntry{}
		x.byName[k] = m
		x.names[k] = r.MonName
		if x.byHead[head(k)] == nil {
			x.byHead[head(k)] = map[string]bool{}
		}
		x.byHead[head(k)][k] = true
		if a, err := netip.ParseAddr(r.MonName); err == nil {
			x.setAddrsLocked(k, []netip.Addr{a.Unmap()})
		}
	}
	if e := m[r.MyID]; e != nil {
		e.priv = r.Priv
		return
	}
	m[r.MyID] = &regEntry{priv: r.Priv}
}

func (x *index) remove(monName string, my nsm.MyID) {
	k := strings.ToLower(monName)
	x.mu.Lock()
	defer x.mu.Unlock()
	if m := x.byName[k]; m != nil {
		delete(m, my)
		if len(m) == 0 {
			x.dropLocked(k)
		}
	}
}

func (x *index) dropLocked(k string) {
	x.setAddrsLocked(k, nil)
	delete(x.byHead[head(k)], k)
	if len(x.byHead[head(k)]) == 0 {
		delete(x.byHead, head(k))
	}
	delete(x.byName, k)
	delete(x.names, k)
}

func (x *index) setAddrsLocked(k string, as []netip.Addr) {
	for _, a := range x.addrs[k] {
		delete(x.byAddr[a], k)
		if len(x.byAddr[a]) == 0 {
			delete(x.byAddr, a)
		}
	}
	if len(as) == 0 {
		delete(x.addrs, k)
		return
	}
	x.addrs[k] = as
	for _, a := range as {
		if x.byAddr[a] == nil {
			x.byAddr[a] = map[string]bool{}
		}
		x.byAddr[a][k] = true
	}
}

// removeAll drops every registration of my and returns the hosts affected.
func (x *index) removeAll(my nsm.MyID) []string {
	x.mu.Lock()
	defer x.mu.Unlock()
	var hosts []string
	for k, m := range x.byName {
		if _, ok := m[my]; ok {
			hosts = append(hosts, x.names[k])
			delete(m, my)
			if len(m) == 0 {
				x.dropLocked(k)
			}
		}
	}
	sort.Strings(hosts)
	return hosts
}

// setAddrs records what a monitored name resolved to, for matching an
// SM_NOTIFY by its sender's address.
func (x *index) setAddrs(monName string, as []netip.Addr) {
	k := strings.ToLower(monName)
	x.mu.Lock()
	defer x.mu.Unlock()
	if _, ok := x.byName[k]; ok {
		for i := range as {
			as[i] = as[i].Unmap()
		}
		x.setAddrsLocked(k, as)
	}
}

// callback is one registrant to call back.
type callback struct {
	monName string // as the registrant registered it
	my      nsm.MyID
	priv    [nsm.PrivLen]byte
	state   int32
}

// match finds the registrations an SM_NOTIFY{monName, state} from sender
// concerns: the same host by name (nsm.SameHost: case-insensitive, short
// name against qualified name) or the sender's address among the monitored
// name's addresses (looked up in indexes, not by a scan). It returns the
// callbacks due, skipping registrants already told of this state, and how many matched.
func (x *index) match(monName string, state int32, sender netip.Addr) (due []callback, matched int) {
	sender = sender.Unmap()
	want := strings.ToLower(monName)
	x.mu.Lock()
	defer x.mu.Unlock()
	visit := func(k string) {
		for my, e := range x.byName[k] {
			matched++
			if e.told && e.lastState == state {
				continue
			}
			e.told, e.lastState = true, state
			due = append(due, callback{monName: x.names[k], my: my, priv: e.priv, state: state})
		}
	}
	seen := map[string]bool{}
	for k := range x.byHead[head(want)] {
		if nsm.SameHost(x.names[k], monName) {
			seen[k] = true
			visit(k)
		}
	}
	if _, ok := x.byName[want]; ok && !seen[want] {
		seen[want] = true
		visit(want)
	}
	for k := range x.byAddr[sender] {
		if !seen[k] {
			seen[k] = true
			visit(k)
		}
	}
	return due, matched
}

// unresolved lists monitored names that are not address literals and have
// no addresses yet.
func (x *index) unresolved() []string {
	x.mu.Lock()
	defer x.mu.Unlock()
	var out []string
	for k := range x.byName {
		if len(x.addrs[k]) == 0 {
			out = append(out, x.names[k])
		}
	}
	return out
}

func (x *index) count() int {
	x.mu.Lock()
	defer x.mu.Unlock()
	n := 0
	for _, m := range x.byName {
		n += len(m)
	}
	return n
}
