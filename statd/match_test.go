package statd

import (
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/hoststat/hoststat/internal/netlab"
	"github.com/hoststat/hoststat/nsm"
	"github.com/hoststat/hoststat/oncrpc/xdr"
)

// SM_MON CASEY then SM_UNMON casey unmonitors: no callback follows, and
// nothing is left on disk. (On the old code SM_UNMON compared spellings
// exactly, answered success and kept calling the registrant back.)
func TestUnmonInOtherCase(t *testing.T) {
	td := newTestDaemon(t, nil)
	ctx := ctxT(t, 20*time.Second)
	reg := newRegistrant(t, td.rpcb, 200100)
	c := td.dial("udp")
	if r, err := callMon(ctx, c, nsm.Mon{ID: nsm.MonID{MonName: "CASEY", MyID: reg.myID()}, Priv: priv(1)}); err != nil || r.Res != nsm.StatSucc {
		t.Fatalf("SM_MON CASEY: %+v %v", r, err)
	}
	if _, err := callUnmon(ctx, c, nsm.MonID{MonName: "casey", MyID: reg.myID()}); err != nil {
		t.Fatal(err)
	}
	if st := td.status(); len(st.Monitored) != 0 {
		t.Fatalf("after SM_UNMON casey still monitored: %+v", st.Monitored)
	}
	callNotify(ctx, c, "casey", 3)
	callNotify(ctx, c, "CASEY", 5)
	reg.none(t, 500*time.Millisecond)
}

// SM_MON CASEY, SM_MON casey, SM_UNMON casey, restart: nothing comes back.
// (On the old code memory said unmonitored while disk kept CASEY, which the
// restart brought back with its old priv.)
func TestCaseSpellingsAfterRestart(t *testing.T) {
	td := newTestDaemon(t, nil)
	ctx := ctxT(t, 30*time.Second)
	reg := newRegistrant(t, td.rpcb, 200100)
	c := td.dial("udp")
	for i, name := range []string{"CASEY", "casey."} {
		if r, err := callMon(ctx, c, nsm.Mon{ID: nsm.MonID{MonName: name, MyID: reg.myID()}, Priv: priv(byte(i + 1))}); err != nil || r.Res != nsm.StatSucc {
			t.Fatalf("SM_MON %s: %+v %v", name, r, err)
		}
	}
	if st := td.status(); len(st.Monitored) != 1 || len(st.Monitored[0].Registrants) != 1 || st.Monitored[0].Registrants[0].Priv != fmt.Sprintf("%x", priv(2)) {
		t.Fatalf("two spellings of one host: %+v", st.Monitored)
	}
	if _, err := callUnmon(ctx, c, nsm.MonID{MonName: "casey", MyID: reg.myID()}); err != nil {
		t.Fatal(err)
	}
	td.restart()
	if st := td.status(); len(st.Monitored) != 0 {
		t.Fatalf("after restart: %+v", st.Monitored)
	}
	c = td.dial("udp")
	callNotify(ctx, c, "CASEY", 7)
	reg.none(t, 500*time.Millisecond)
}

// The matching rule against real lookups (a DNS server on loopback): an
// SM_NOTIFY under an alias of the registered name, one from another
// address of a multi-homed peer under a name we never heard, and an
// SM_UNMON by a name resolving to an address literal registered.
func TestMatchingByAddress(t *testing.T) {
	dns, resolver := newLoopbackDNS(t, map[string][]string{
		"peer.test":      {"127.0.0.20", "127.0.0.21"},
		"alias.test":     {"127.0.0.21"},
		"thirty.test":    {"127.0.0.30"},
		"elsewhere.test": {"127.0.0.99"},
	})
	td := newTestDaemon(t, func(c *Config) { c.Resolver = resolver })
	ctx := ctxT(t, 30*time.Second)
	reg := newRegistrant(t, td.rpcb, 200100)
	c := td.dial("udp")
	for i, name := range []string{"peer.test", "127.0.0.30"} {
		if r, err := callMon(ctx, c, nsm.Mon{ID: nsm.MonID{MonName: name, MyID: reg.myID()}, Priv: priv(byte(i + 1))}); err != nil || r.Res != nsm.StatSucc {
			t.Fatalf("SM_MON %s: %+v %v", name, r, err)
		}
	}
	netlab.WaitFor(t, 5*time.Second, "the monitored name looked up", func() error {
		if dns.timesAsked("peer.test") == 0 {
			return errors.New("not yet")
		}
		return nil
	})

	// Alias: the name resolves to one of the peer's addresses. The DNS
	// server was asked for peer.test, but its answer may not be in the
	// core yet: an SM_NOTIFY matched before it is not (and is not
	// recorded), so it is sent again until the callback comes.
	netlab.WaitFor(t, 10*time.Second, "a callback for the notification under an alias", func() error {
		if err := callNotify(ctx, c, "ALIAS.test.", 5); err != nil {
			t.Fatal(err)
		}
		select {
		case g := <-reg.got:
			if g.st.MonName != "peer.test" || g.st.State != 5 || g.st.Priv != priv(1) {
				t.Fatalf("callback for the alias: %+v", g.st)
			}
			return nil
		case <-time.After(500 * time.Millisecond):
			return errors.New("none yet")
		}
	})
	// Multi-homed: from the peer's other address, under an unknown name.
	netlab.WaitFor(t, 10*time.Second, "a callback for the notification from the peer's second address", func() error {
		rawCall(t, "127.0.0.20:0", td.udp, nsm.ProcNotify, func(e *xdr.Encoder) {
			(&nsm.StatChange{MonName: "never-heard-of", State: 7}).Encode(e)
		})
		select {
		case g := <-reg.got:
			if g.st.MonName != "peer.test" || g.st.State != 7 {
				t.Fatalf("callback %+v", g.st)
			}
			return nil
		case <-time.After(200 * time.Millisecond):
			return errors.New("none yet")
		}
	})
	// A name resolving elsewhere matches nothing.
	callNotify(ctx, c, "elsewhere.test", 9)
	reg.none(t, 500*time.Millisecond)

	// SM_UNMON by a name whose address is the literal registered.
	if _, err := callUnmon(ctx, c, nsm.MonID{MonName: "thirty.test", MyID: reg.myID()}); err != nil {
		t.Fatal(err)
	}
	netlab.WaitFor(t, 5*time.Second, "the literal registration gone", func() error {
		st := td.status()
		if len(st.Monitored) != 1 || st.Monitored[0].MonName != "peer.test" {
			return fmt.Errorf("monitored %+v", st.Monitored)
		}
		return nil
	})
	callNotify(ctx, c, "127.0.0.30", 11)
	reg.none(t, 500*time.Millisecond)
}

// loopbackSender is a UDP socket on a chosen loopback address that sends
// calls without waiting for replies (a flood).
func loopbackSender(t *testing.T, from string) *net.UDPConn {
	t.Helper()
	la, err := net.ResolveUDPAddr("udp4", from)
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.ListenUDP("udp4", la)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}
