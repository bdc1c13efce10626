// Package e2e_test runs the real recvstats and sendstats binaries against
// each other: across network namespaces with real multicast (root, or
// CI=true), and over loopback without root.
package e2e_test

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hoststat/hoststat/internal/netlab"
	"github.com/hoststat/hoststat/shm"
)

// table reads the master's shared-memory table from the test process (the
// lab's hosts share our file system outside /run, /sys and /var/lib/nfs).
type table struct {
	t testing.TB
	r *shm.Reader
}

func openTable(t testing.TB, dir string) *table {
	t.Helper()
	var r *shm.Reader
	netlab.WaitFor(t, 5*time.Second, "the table in "+dir, func() error {
		var err error
		r, err = shm.OpenReader(dir)
		return err
	})
	t.Cleanup(func() { r.Close() })
	return &table{t, r}
}

func (tb *table) node(n int) (shm.Summary, bool) {
	tb.t.Helper()
	s, ok, err := tb.r.Summary(n)
	if err != nil {
		tb.t.Fatalf("reading node %d: %v", n, err)
	}
	return s, ok
}

// up reports whether node n is shown up, as beostat shows it.
func (tb *table) up(n int) bool {
	s, ok := tb.node(n)
	return ok && tb.r.Info().Up(s.LastSeen, time.Now())
}

// seenSince is nil once node n has reported from addr after t.
func (tb *table) seenSince(n int, addr netip.Addr, t time.Time) error {
	s, ok := tb.node(n)
	switch {
	case !ok:
		return fmt.Errorf("node %d not in the table", n)
	case addr.IsValid() && s.Addr.Addr() != addr:
		return fmt.Errorf("node %d is %v, want %v", n, s.Addr, addr)
	case !s.LastSeen.After(t):
		return fmt.Errorf("node %d last seen %v, before %v", n, s.LastSeen.Format(time.StampMicro), t.Format(time.StampMicro))
	case s.CPUs == 0 || s.Memory.Total == 0:
		return fmt.Errorf("node %d has no data: %+v", n, s)
	}
	return nil
}

func bins(t testing.TB) (recvstats, sendstats string) {
	dir := netlab.BuildCommands(t, "./cmd/recvstats", "./cmd/sendstats")
	return filepath.Join(dir, "recvstats"), filepath.Join(dir, "sendstats")
}

// A master and three nodes on one bridge, by real multicast: every node
// shows up; a killed node is shown down after --down-after while the
// others stay up; a master killed and started again has every live node
// back within 2 s although they only send every 30 s, which only its
// update request can explain.
func TestMulticastCluster(t *testing.T) {
	lab := netlab.New(t)
	master := lab.AddHost("master")
	nodes := []*netlab.Host{lab.AddHost("n1"), lab.AddHost("n2"), lab.AddHost("n3")}
	recvstats, sendstats := bins(t)
	dir := t.TempDir()
	// The nodes send their numbers unsigned: the node map pins them.
	var pins []string
	for i, h := range nodes {
		pins = append(pins, fmt.Sprintf("%d %s", i+1, h.Addr))
	}
	masterArgs := []string{"-d", "-i", netlab.Iface, "--shm-dir", dir, "--down-after", "1500ms", "--node-map", writeNodeMap(t, pins...)}
	m := master.Start(recvstats, masterArgs...)
	tb := openTable(t, dir)

	start := time.Now()
	procs := make([]*netlab.Proc, len(nodes))
	for i, h := range nodes {
		procs[i] = h.Start(sendstats, "-d", "-i", netlab.Iface, "--node", strconv.Itoa(i+1), "-r", "0.2")
	}
	for i, h := range nodes {
		netlab.WaitFor(t, 5*time.Second, h.Name+" in the table", func() error { return tb.seenSince(i+1, h.Addr, start) })
	}

	// A stopped node turns down; the others stay up.
	if err := procs[2].Kill(); err != nil {
		t.Fatal(err)
	}
	last, _ := tb.node(3)
	netlab.WaitFor(t, 4*time.Second, "n3 shown down", func() error {
		if tb.up(3) {
			return fmt.Errorf("node 3 still up")
		}
		return nil
	})
	if d := time.Since(last.LastSeen); d < 1500*time.Millisecond {
		t.Errorf("n3 shown down %v after its last packet, before --down-after (1.5s)", d)
	}
	for n := 1; n <= 2; n++ {
		if !tb.up(n) {
			t.Errorf("node %d shown down while it sends", n)
		}
	}

	// Nodes that only send every 30 s; restart the master.
	for i := range 2 {
		procs[i].Kill()
		since := time.Now()
		procs[i] = nodes[i].Start(sendstats, "-d", "-i", netlab.Iface, "--node", strconv.Itoa(i+1), "-r", "30")
		netlab.WaitFor(t, 5*time.Second, nodes[i].Name+" restarted", func() error { return tb.seenSince(i+1, nodes[i].Addr, since) })
	}
	m.Kill()
	restart := time.Now()
	m = master.Start(recvstats, masterArgs...)
	for i := range 2 {
		netlab.WaitFor(t, 2*time.Second-time.Since(restart), nodes[i].Name+" back after the master restarted",
			func() error { return tb.seenSince(i+1, nodes[i].Addr, restart) })
	}
	t.Logf("every live node back %v after the master restarted", time.Since(restart).Round(time.Millisecond))
	if err := tb.seenSince(3, netip.Addr{}, restart); err == nil {
		t.Error("the stopped node n3 reported after the restart")
	}
	if req := tb.r.Info().LastUpdateRequest; !req.After(restart) {
		t.Errorf("last update request %v, want after the restart %v", req, restart)
	}
	if err := m.Stop(); err != nil {
		t.Errorf("recvstats on SIGTERM: %v", err)
	}
}

// Unicast only (-a, no multicast anywhere), with a key: a numbered and an
// unnumbered node show up, the latter under the first free number, and
// after a master restart both are back within 2 s by direct update
// requests to the addresses the table remembered (they authenticated, so
// they are worth asking).
func TestUnicastCluster(t *testing.T) {
	lab := netlab.New(t)
	master := lab.AddHost("master")
	a, b := lab.AddHost("a"), lab.AddHost("b")
	recvstats, sendstats := bins(t)
	dir := t.TempDir()
	key := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(key, []byte("correct horse battery staple\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	m := master.Start(recvstats, "-d", "--shm-dir", dir, "--key-file", key)
	tb := openTable(t, dir)
	start := time.Now()
	to := master.Addr.String()
	a.Start(sendstats, "-d", "-a", to, "--node", "5", "-r", "30", "--key-file", key)
	b.Start(sendstats, "-d", "-a", to+":3040", "-r", "30", "--key-file", key) // unnumbered: gets 0
	netlab.WaitFor(t, 5*time.Second, "a as node 5", func() error { return tb.seenSince(5, a.Addr, start) })
	netlab.WaitFor(t, 5*time.Second, "b as node 0", func() error { return tb.seenSince(0, b.Addr, start) })

	m.Kill()
	restart := time.Now()
	m = master.Start(recvstats, "-d", "--shm-dir", dir, "--key-file", key)
	netlab.WaitFor(t, 2*time.Second, "a back", func() error { return tb.seenSince(5, a.Addr, restart) })
	netlab.WaitFor(t, 2*time.Second-time.Since(restart), "b back as node 0", func() error { return tb.seenSince(0, b.Addr, restart) })
	if n := tb.r.Info().NodeLimit; n != 6 {
		t.Errorf("node limit %d, want 6 (nodes 0 and 5)", n)
	}
	m.Stop()
}

// With --key-file, only nodes with the same key show up: a node with
// another key, and one with none, never do, and the master counts their
// packets as authentication drops.
func TestWrongKeyRejected(t *testing.T) {
	lab := netlab.New(t)
	master := lab.AddHost("master")
	good, wrong, none := lab.AddHost("good"), lab.AddHost("wrong"), lab.AddHost("none")
	recvstats, sendstats := bins(t)
	dir := t.TempDir()
	keys := t.TempDir()
	key := func(name, k string) string {
		p := filepath.Join(keys, name)
		if err := os.WriteFile(p, []byte(k+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	k1 := key("k1", "correct horse battery staple")
	k2 := key("k2", "incorrect horse battery staple")
	m := master.Start(recvstats, "-d", "-i", netlab.Iface, "--shm-dir", dir, "--key-file", k1)
	tb := openTable(t, dir)
	start := time.Now()
	wrong.Start(sendstats, "-d", "-i", netlab.Iface, "--node", "2", "-r", "0.1", "--key-file", k2)
	none.Start(sendstats, "-d", "-a", master.Addr.String(), "--node", "3", "-r", "0.1")
	good.Start(sendstats, "-d", "-i", netlab.Iface, "--node", "1", "-r", "0.1", "--key-file", k1)
	netlab.WaitFor(t, 5*time.Second, "the node with the key", func() error { return tb.seenSince(1, good.Addr, start) })
	// The master has had packets of both others in hand (with -d it
	// names each interval's sources of drops), so their absence below is
	// a decision.
	for _, h := range []*netlab.Host{wrong, none} {
		netlab.WaitFor(t, 5*time.Second, "packets of "+h.Name+" dropped", func() error {
			if !strings.Contains(m.Output(), "auth@"+h.Addr.String()+"=") {
				return errors.New("none yet")
			}
			return nil
		})
	}
	for _, n := range []int{2, 3} {
		if _, ok := tb.node(n); ok {
			t.Errorf("node %d, without the key, is in the table", n)
		}
	}
	// The periodic summary is a minute away: stop the master, which
	// summarises on the way out.
	if err := m.Stop(); err != nil {
		t.Fatal(err)
	}
	out := m.Output()
	for _, want := range []string{"auth=", "msg=\"receive summary\""} {
		if !strings.Contains(out, want) {
			t.Errorf("master log lacks %q", want)
		}
	}
}
