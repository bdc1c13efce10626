package liveness

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/hoststat/hoststat/internal/netlab"
	"github.com/hoststat/hoststat/shm"
)

type received struct {
	e  Event
	at time.Time
}

// Real sendstats → recvstats on loopback with the default sample period
// (1 s) and scan period: a restarted sendstats (same boot) is no event;
// a node that goes silent and comes back with a new boot id is one
// RebootSeen, within two sample periods of the table showing the new
// boot, and one Returned; nothing more in the periods after.
func TestRebootSeenEndToEnd(t *testing.T) {
	bin := netlab.BuildCommands(t, "./cmd/recvstats", "./cmd/sendstats")
	recvstats, sendstats := filepath.Join(bin, "recvstats"), filepath.Join(bin, "sendstats")
	const period = DefaultPeriod
	shmDir := t.TempDir()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	port := strconv.Itoa(c.LocalAddr().(*net.UDPAddr).Port)
	c.Close()
	nodeMap := filepath.Join(t.TempDir(), "nodes")
	os.WriteFile(nodeMap, []byte("7 127.0.0.1\n"), 0o644)
	netlab.StartDaemon(t, recvstats, "-d", "--listen", "127.0.0.1", "-p", port, "--shm-dir", shmDir,
		"--node-map", nodeMap, "--down-after", "2500ms")

	proc := netlab.NewProcTree(t, "../telemetry/sample/testdata/proc/vm2")
	const bootA, bootB = "11111111-2222-4333-8444-555555555555", "66666666-7777-4888-8999-aaaaaaaaaaaa"
	proc.Boot(bootA, 1795312373)
	sendArgs := []string{"-d", "-a", "127.0.0.1:" + port, "--node", "7", "-r", "1", "--proc", proc.Dir}

	w := NewWatcher(WatcherConfig{Dir: shmDir, Logger: quiet})
	if err := w.Track(Host{Name: "client", Addrs: []netip.Addr{netip.MustParseAddr("127.0.0.1")}}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- w.Run(ctx) }()
	events := make(chan received, 16)
	go func() {
		for {
			select {
			case e := <-w.Events():
				events <- received{e, time.Now()}
			case <-ctx.Done():
				return
			}
		}
	}()
	defer func() {
		cancel()
		<-ran
	}()
	noEvents := func(what string, d time.Duration) {
		t.Helper()
		select {
		case r := <-events:
			t.Errorf("%s: event %+v", what, r.e)
		case <-time.After(d):
		}
	}
	waitState := func(want State) {
		t.Helper()
		netlab.WaitFor(t, 15*time.Second, "client "+want.String(), func() error {
			if l := w.Liveness("client"); l.State != want {
				return fmt.Errorf("client is %v", l.State)
			}
			return nil
		})
	}

	send := netlab.StartDaemon(t, sendstats, sendArgs...)
	waitState(Up)
	noEvents("first sighting", 2*period)

	// sendstats restarted, same boot: fresh samples, no event.
	send()
	restarted := time.Now()
	send = netlab.StartDaemon(t, sendstats, sendArgs...)
	r, err := shm.OpenReader(shmDir)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	netlab.WaitFor(t, 10*time.Second, "a sample of the restarted sendstats", func() error {
		if s, ok, err := r.Summary(7); err != nil || !ok || !s.LastSeen.After(restarted) {
			return fmt.Errorf("node 7: %v %v %v", s.LastSeen, ok, err)
		}
		return nil
	})
	noEvents("sendstats restarted", 3*period)

	// The node goes down, and comes back with a new boot.
	send()
	waitState(Silent)
	noEvents("silent", 0)
	proc.Boot(bootB, 1795312373+3600)
	netlab.StartDaemon(t, sendstats, sendArgs...)
	var firstB time.Time
	netlab.WaitFor(t, 10*time.Second, "the new boot in the table", func() error {
		s, ok, err := r.Summary(7)
		if err != nil || !ok || FormatBootID(s.BootID) != bootB {
			return fmt.Errorf("node 7: boot %s %v %v", FormatBootID(s.BootID), ok, err)
		}
		firstB = s.LastSeen
		return nil
	})
	var got []received
	deadline := time.After(5 * period)
collect:
	for {
		select {
		case e := <-events:
			got = append(got, e)
		case <-deadline:
			break collect
		}
	}
	var reboots, returns int
	for _, g := range got {
		switch e := g.e.(type) {
		case RebootSeen:
			reboots++
			if FormatBootID(e.OldBoot) != bootA || FormatBootID(e.NewBoot) != bootB || e.Node != 7 || e.Host != "client" {
				t.Errorf("reboot %+v, want client node 7 from %s to %s", e, bootA, bootB)
			}
			d := g.at.Sub(firstB)
			t.Logf("reboot seen %v after the table first showed the new boot", d)
			if d > 2*period {
				t.Errorf("reboot seen %v after the table showed it, more than two sample periods (%v)", d, 2*period)
			}
		case Returned:
			returns++
		}
	}
	if reboots != 1 || returns != 1 {
		t.Errorf("events after the reboot: %+v; want one RebootSeen and one Returned", got)
	}
	if l := w.Liveness("client"); l.State != Up || FormatBootID(l.BootID) != bootB {
		t.Errorf("client after the reboot: %+v", l)
	}
}
