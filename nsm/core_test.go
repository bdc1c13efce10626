package nsm

import (
	"errors"
	"net/netip"
	"slices"
	"strconv"
	"testing"
	"time"
)

var nlm = MyID{Name: "127.0.0.1", Prog: NLMProgram, Vers: 4, Proc: 16}

// fakeResolver stands in for DNS in the pure tests: the core only ever
// sees its answers through Resolved.
type fakeResolver map[string][]netip.Addr

func (f fakeResolver) answer(t *testing.T, c *Core, rd Ready, now time.Time) Ready {
	t.Helper()
	var out Ready
	for _, name := range rd.Resolve {
		out.add(c.Resolved(name, f[name], now))
	}
	return out
}

func addrs(s ...string) []netip.Addr {
	var out []netip.Addr
	for _, a := range s {
		out = append(out, netip.MustParseAddr(a))
	}
	return out
}

// mon runs an SM_MON through the core as the daemon does: plan, persist
// (here: keep the changes, as a store would), apply.
func mon(t *testing.T, c *Core, disk map[string][16]byte, name string, my MyID, priv byte) Ready {
	t.Helper()
	rd, err := c.Mon(Registration{MonName: name, MyID: my, Priv: [16]byte{priv}, Registered: t0})
	if err != nil {
		t.Fatalf("Mon %q: %v", name, err)
	}
	persist(c, disk, rd.Persist)
	return rd
}

func persist(c *Core, disk map[string][16]byte, chs []Change) {
	for _, ch := range chs {
		k := ch.Reg.MonName + "|" + ch.Reg.MyID.Name
		if ch.Remove {
			delete(disk, k)
		} else {
			disk[k] = ch.Reg.Priv
		}
	}
	c.Apply(chs)
}

func TestCoreCaseAndTrailingDotAreOneRegistration(t *testing.T) {
	c := NewCore(CoreConfig{})
	disk := map[string][16]byte{}
	mon(t, c, disk, "CASEY", nlm, 1)
	mon(t, c, disk, "casey.", nlm, 2)
	if len(disk) != 1 || disk["CASEY|127.0.0.1"] != [16]byte{2} || c.Len() != 1 {
		t.Fatalf("after SM_MON CASEY, casey.: disk %v, core %d", disk, c.Len())
	}
	rd, found := c.Unmon("casey", nlm, t0)
	if !found {
		t.Fatal("SM_UNMON casey did not find CASEY")
	}
	persist(c, disk, rd.Persist)
	if len(disk) != 0 || c.Len() != 0 {
		t.Fatalf("after SM_UNMON casey: disk %v, core %d", disk, c.Len())
	}
	rd, _ = c.Notify("casey", 3, netip.MustParseAddr("10.0.0.1"), t0)
	if len(rd.Callbacks) != 0 {
		t.Fatalf("callback after SM_UNMON: %+v", rd.Callbacks)
	}
}

// A store written before names were canonical may hold two spellings of
// one registration: both load, and SM_UNMON removes both.
func TestCoreLoadedSpellingsRemovedTogether(t *testing.T) {
	c := NewCore(CoreConfig{})
	c.Load([]Registration{{MonName: "CASEY", MyID: nlm}, {MonName: "casey", MyID: nlm}})
	rd, _ := c.Unmon("Casey", nlm, t0)
	if len(rd.Persist) != 2 {
		t.Fatalf("removals %+v, want both spellings", rd.Persist)
	}
	c.Apply(rd.Persist)
	if c.Len() != 0 {
		t.Fatal("registration left in memory")
	}
}

// Registrations lists what the store holds: every spelling kept on disk,
// ordered by mon_name then my_id, with its priv and time.
func TestCoreRegistrationsAsStored(t *testing.T) {
	c := NewCore(CoreConfig{})
	other := MyID{Name: "a", Prog: nlm.Prog, Vers: nlm.Vers, Proc: nlm.Proc}
	in := []Registration{{MonName: "casey", MyID: nlm, Registered: t0}, {MonName: "CASEY", MyID: nlm, Registered: t0},
		{MonName: "b", MyID: nlm, Priv: [PrivLen]byte{7}}, {MonName: "b", MyID: other}}
	c.Load(in)
	got := c.Registrations()
	want := []Registration{in[1], in[2], in[3], in[0]} // byte order, as keys sort
	if !slices.Equal(got, want) {
		t.Fatalf("Registrations()\n%v\nwant\n%v", got, want)
	}
}

func TestCoreNotifyByAliasAndOtherAddress(t *testing.T) {
	dns := fakeResolver{
		"peer":       addrs("10.0.0.5", "10.0.1.5"),
		"peer-alias": addrs("10.0.1.5"),
	}
	c := NewCore(CoreConfig{})
	disk := map[string][16]byte{}
	mon(t, c, disk, "peer", nlm, 1)
	dns.answer(t, c, c.Tick(t0), t0) // the monitored name resolves in the background
	// Multi-homed: the peer notifies from its other address under a name
	// we do not know.
	rd, res := c.Notify("unknown-name", 3, netip.MustParseAddr("10.0.1.5"), t0)
	if res.Matched != 1 || len(rd.Callbacks) != 1 || rd.Callbacks[0].State != 3 || rd.Callbacks[0].MonName != "peer" {
		t.Fatalf("by sender address: %+v %+v", res, rd)
	}
	c.CallbackDone(rd.Callbacks[0], true, t0)
	// Alias, from an address that is not the peer's: matched once the alias
	// resolves.
	t1 := t0.Add(time.Second) // callbacks to one registration are a second apart
	rd, res = c.Notify("PEER-ALIAS.", 5, netip.MustParseAddr("192.0.2.1"), t1)
	if res.Matched != 0 || !res.Parked || !slices.Equal(rd.Resolve, []string{"peer-alias"}) {
		t.Fatalf("alias before lookup: %+v %+v", res, rd)
	}
	rd = dns.answer(t, c, rd, t1)
	if len(rd.Callbacks) != 1 || rd.Callbacks[0].State != 5 || rd.Callbacks[0].Priv != [16]byte{1} {
		t.Fatalf("alias after lookup: %+v", rd)
	}
	// Cached now: the next one matches at once.
	c.CallbackDone(rd.Callbacks[0], true, t1)
	rd, res = c.Notify("peer-alias", 7, netip.MustParseAddr("192.0.2.1"), t1.Add(time.Second))
	if res.Matched != 1 || len(rd.Callbacks) != 1 || len(rd.Resolve) != 0 {
		t.Fatalf("alias cached: %+v %+v", res, rd)
	}
}

func TestCoreLiteralRegistrationRemovedByName(t *testing.T) {
	dns := fakeResolver{"peer": addrs("10.0.0.5")}
	c := NewCore(CoreConfig{})
	disk := map[string][16]byte{}
	mon(t, c, disk, "10.0.0.5", nlm, 1)
	rd, found := c.Unmon("peer", nlm, t0)
	if found || len(rd.Persist) != 0 || !slices.Equal(rd.Resolve, []string{"peer"}) {
		t.Fatalf("before lookup: %v %+v", found, rd)
	}
	rd = dns.answer(t, c, rd, t0)
	persist(c, disk, rd.Persist)
	if len(disk) != 0 || c.Len() != 0 {
		t.Fatalf("literal registration kept: %v", disk)
	}
}

func TestCoreCallbackProgramsAllowed(t *testing.T) {
	c := NewCore(CoreConfig{AllowedPrograms: []uint32{NLMProgram, 200100, Program, 100000}})
	for _, prog := range []uint32{Program, 100000, 100003} {
		_, err := c.Mon(Registration{MonName: "peer", MyID: MyID{Name: "x", Prog: prog, Vers: 1, Proc: 5}})
		if !errors.Is(err, ErrProgramNotAllowed) {
			t.Errorf("my_prog %d: %v, want refused", prog, err)
		}
	}
	for _, prog := range []uint32{NLMProgram, 200100} {
		if _, err := c.Mon(Registration{MonName: "peer", MyID: MyID{Name: "x", Prog: prog, Vers: 1, Proc: 5}}); err != nil {
			t.Errorf("my_prog %d: %v", prog, err)
		}
	}
	if CheckCallbackPrograms([]uint32{Program}) == nil || CheckCallbackPrograms([]uint32{100000}) == nil || CheckCallbackPrograms([]uint32{200100}) != nil {
		t.Error("CheckCallbackPrograms")
	}
}

// A flood of SM_NOTIFY for a monitored host: one callback in flight, the
// newest state replacing the older ones, repeats free.
func TestCoreCallbacksCoalesce(t *testing.T) {
	c := NewCore(CoreConfig{})
	disk := map[string][16]byte{}
	mon(t, c, disk, "10.0.0.5", nlm, 1)
	sender := netip.MustParseAddr("10.0.0.5")
	var started []Callback
	limited := 0
	for i := range 20000 {
		rd, res := c.Notify("10.0.0.5", int32(2*i+1), sender, t0.Add(time.Duration(i)*time.Microsecond))
		started = append(started, rd.Callbacks...)
		if res.Limited {
			limited++
		}
	}
	if len(started) != 1 || started[0].State != 1 {
		t.Fatalf("callbacks started during the flood: %+v", started)
	}
	if limited < 19000 {
		t.Fatalf("only %d of 20000 matched notifications over the rate limit", limited)
	}
	done := t0.Add(time.Second)
	if rd := c.CallbackDone(started[0], true, done); len(rd.Callbacks) != 0 {
		t.Fatalf("called back again at once: %+v", rd.Callbacks)
	}
	if w, ok := c.NextWake(); !ok || !w.Equal(done.Add(time.Second)) {
		t.Fatalf("next callback at %v %v, want a second after the first ended", w, ok)
	}
	rd := c.Tick(done.Add(time.Second))
	if len(rd.Callbacks) != 1 || rd.Callbacks[0].State != 39999 {
		t.Fatalf("after the first callback: %+v, want one with the latest state", rd.Callbacks)
	}
	rd = c.CallbackDone(rd.Callbacks[0], true, done.Add(time.Second))
	if len(rd.Callbacks) != 0 {
		t.Fatalf("more callbacks: %+v", rd.Callbacks)
	}
	if rd, _ := c.Notify("10.0.0.5", 39999, sender, t0.Add(time.Hour)); len(rd.Callbacks) != 0 {
		t.Fatalf("a repeated state called back again: %+v", rd.Callbacks)
	}
}

// The callback retry schedule runs on the caller's clock.
func TestCoreCallbackRetriesThenGivesUp(t *testing.T) {
	c := NewCore(CoreConfig{CallbackRetry: []time.Duration{time.Second, time.Hour}})
	disk := map[string][16]byte{}
	mon(t, c, disk, "peer", nlm, 1)
	rd, _ := c.Notify("peer", 3, netip.Addr{}, t0)
	if len(rd.Callbacks) != 1 {
		t.Fatalf("%+v", rd)
	}
	now := t0
	rd = c.CallbackDone(rd.Callbacks[0], false, now)
	if w, ok := c.NextWake(); !ok || !w.Equal(now.Add(time.Second)) {
		t.Fatalf("next wake %v %v", w, ok)
	}
	if rd := c.Tick(now.Add(999 * time.Millisecond)); len(rd.Callbacks) != 0 {
		t.Fatal("retried early")
	}
	rd = c.Tick(now.Add(time.Second))
	if len(rd.Callbacks) != 1 {
		t.Fatal("no retry after 1s")
	}
	rd = c.CallbackDone(rd.Callbacks[0], false, now.Add(time.Second))
	rd = c.Tick(now.Add(time.Hour + time.Second))
	if len(rd.Callbacks) != 1 {
		t.Fatal("no retry after 1h")
	}
	rd = c.CallbackDone(rd.Callbacks[0], false, now.Add(time.Hour+time.Second))
	if len(rd.GaveUp) != 1 || rd.GaveUp[0].State != 3 {
		t.Fatalf("gave up %+v", rd.GaveUp)
	}
	if _, ok := c.NextWake(); ok {
		t.Fatal("still scheduled after giving up")
	}
}

// Lookups asked for and calls parked are bounded whatever a sender sends.
func TestCoreLookupsBounded(t *testing.T) {
	c := NewCore(CoreConfig{MaxResolving: 8, MaxParked: 16, MaxCached: 32})
	disk := map[string][16]byte{}
	mon(t, c, disk, "10.0.0.5", nlm, 1)
	asked := 0
	for i := range 10000 {
		rd, _ := c.Notify("name-"+string(rune('a'+i%26))+"-"+strconv.Itoa(i), 3, netip.MustParseAddr("192.0.2.1"), t0)
		asked += len(rd.Resolve)
	}
	if asked != 8 || c.nPark > 16 || len(c.cache) > 32 {
		t.Fatalf("asked %d lookups, parked %d, cached %d", asked, c.nPark, len(c.cache))
	}
}

// A host monitored by an address literal (as Linux lockd registers its
// peers) is matched through the other addresses of the host the literal
// names: an SM_NOTIFY from the peer's other address, under a name that
// does not resolve, or naming its other address, calls back. (Before, a
// literal's only address was itself; nfs-utils matched through the
// literal's canonical name, which the differential run showed.)
func TestCoreLiteralMatchesItsHostsOtherAddresses(t *testing.T) {
	c := NewCore(CoreConfig{})
	disk := map[string][16]byte{}
	mon(t, c, disk, "fd00::3", nlm, 1)
	dns := fakeResolver{"fd00::3": addrs("10.0.0.3", "10.0.0.200", "fd00::3")}
	rd := c.Tick(t0)
	if !slices.Contains(rd.Resolve, "fd00::3") {
		t.Fatalf("the literal is not looked up: %+v", rd.Resolve)
	}
	dns.answer(t, c, rd, t0)
	for i, n := range []struct {
		name, sender string
	}{{"unknown.invalid", "10.0.0.200"}, {"10.0.0.3", "10.0.0.99"}} {
		now := t0.Add(time.Duration(i) * time.Minute)
		rd, _ := c.Notify(n.name, int32(5+2*i), netip.MustParseAddr(n.sender), now)
		if len(rd.Callbacks) != 1 || rd.Callbacks[0].MonName != "fd00::3" {
			t.Fatalf("SM_NOTIFY %s from %s: callbacks %+v", n.name, n.sender, rd.Callbacks)
		}
		c.CallbackDone(rd.Callbacks[0], true, now)
	}
	// Another host's address still matches nothing.
	if rd, _ := c.Notify("10.0.0.4", 11, netip.MustParseAddr("10.0.0.4"), t0.Add(time.Hour)); len(rd.Callbacks) != 0 {
		t.Fatalf("another host matched: %+v", rd.Callbacks)
	}
}
