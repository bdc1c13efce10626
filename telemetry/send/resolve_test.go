package send_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/hoststat/hoststat/internal/netlab"
	"github.com/hoststat/hoststat/telemetry/sample"
	"github.com/hoststat/hoststat/telemetry/send"
)

// A master whose name does not resolve when the agent starts (the name
// service is not up yet) is looked up again until it resolves, and again
// later: the agent follows it to its new address. Real UDP sockets on
// 127.0.0.1 and 127.0.0.2; the name service is the one thing faked.
func TestMasterResolvedLaterAndFollowed(t *testing.T) {
	first, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	port := first.LocalAddr().(*net.UDPAddr).Port
	second, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 2), Port: port})
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()

	var mu sync.Mutex
	answer, lookups := netip.Addr{}, 0 // no answer: the name service is down
	lookup := func(ctx context.Context, network, host string) ([]netip.Addr, error) {
		mu.Lock()
		defer mu.Unlock()
		lookups++
		if host != "master.cluster" || !answer.IsValid() {
			return nil, errors.New("no such host")
		}
		return []netip.Addr{answer}, nil
	}
	_, names, err := send.ParseMasters([]string{"master.cluster:" + strconv.Itoa(port)}, 3040)
	if err != nil || len(names) != 1 {
		t.Fatalf("ParseMasters: %v %v", names, err)
	}
	s, err := send.New(send.Config{MasterNames: names, Lookup: lookup, ResolveEvery: 200 * time.Millisecond, Rate: 50 * time.Millisecond,
		Collect: func(s *sample.Sample) error {
			*s = sample.Sample{Time: time.Now(), BootID: [16]byte{1}, CPUs: make([]sample.CPU, 1)}
			return nil
		}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatalf("agent with an unresolvable master: %v", err)
	}
	netlab.Serve(t, s.Run, s.Close)

	netlab.WaitFor(t, 5*time.Second, "a second lookup", func() error {
		mu.Lock()
		defer mu.Unlock()
		if lookups < 2 {
			return errors.New("looked up once")
		}
		return nil
	})
	mu.Lock()
	answer = netip.MustParseAddr("127.0.0.1")
	mu.Unlock()
	expectPacket(t, first, 10*time.Second)

	mu.Lock()
	answer = netip.MustParseAddr("127.0.0.2")
	mu.Unlock()
	expectPacket(t, second, 5*time.Second)
}

func expectPacket(t *testing.T, c *net.UDPConn, d time.Duration) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(d))
	buf := make([]byte, 2048)
	if _, _, err := c.ReadFromUDP(buf); err != nil {
		t.Fatalf("no status packet at %v: %v", c.LocalAddr(), err)
	}
}
