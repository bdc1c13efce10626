package send_test

import (
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hoststat/hoststat/internal/netlab"
	"github.com/hoststat/hoststat/telemetry/e2e/memnet"
	"github.com/hoststat/hoststat/telemetry/sample"
	"github.com/hoststat/hoststat/telemetry/send"
	"github.com/hoststat/hoststat/telemetry/wire"
)

var (
	masterAddr = netip.MustParseAddrPort("10.0.0.1:3040")
	nodeAddr   = netip.MustParseAddrPort("10.0.0.2:3040")
	key        = []byte("0123456789abcdef")
)

type rig struct {
	s      *send.Sender
	master *memnet.Endpoint
}

func newRig(t *testing.T, cfg send.Config) *rig {
	n := memnet.New()
	master, _ := n.Listen(masterAddr)
	ep, _ := n.Listen(nodeAddr)
	cfg.Transport = memnet.SendTransport{Endpoint: ep}
	cfg.Masters = []netip.AddrPort{masterAddr}
	if cfg.Collect == nil {
		cfg.Collect = func(s *sample.Sample) error {
			*s = sample.Sample{Time: time.Now(), BootTime: time.Now().Add(-time.Hour), BootID: [16]byte{7}, CPUs: make([]sample.CPU, 2)}
			return nil
		}
	}
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	s, err := send.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	netlab.Serve(t, s.Run, s.Close)
	return &rig{s: s, master: master}
}

// next reads the master's next status packet, or fails after d.
func (r *rig) next(t *testing.T, d time.Duration) (wire.Packet, bool) {
	t.Helper()
	r.master.SetReadDeadline(time.Now().Add(d))
	dg, err := r.master.Read()
	if err != nil {
		return wire.Packet{}, false
	}
	pk, err := wire.NewParser(key).Parse(dg.Data)
	if err != nil {
		t.Fatalf("sender sent a packet the master rejects: %v", err)
	}
	return pk, true
}

func request(enc *wire.Encoder, seq uint32, node uint32) []byte {
	return enc.AppendUpdateRequest(nil, wire.Header{Node: node, BootID: [16]byte{1}, BootTime: time.Unix(1000, 0), Seq: seq, Time: time.Now()})
}

// Update requests are answered at once, but only authentic, fresh ones
// meant for this node, and at most one per 100 ms.
func TestUpdateRequests(t *testing.T) {
	r := newRig(t, send.Config{Rate: 30 * time.Second, Node: 4, Key: key})
	pk, ok := r.next(t, 2*time.Second)
	if !ok || pk.Node != 4 || pk.Kind != wire.KindStatus {
		t.Fatalf("first sample: %v %+v", ok, pk.Header)
	}
	first := pk.Seq
	enc := wire.NewEncoder(key)
	req := request(enc, 1, wire.NoNode)
	r.master.WriteTo(req, nodeAddr)
	pk, ok = r.next(t, time.Second)
	if !ok || pk.Seq != first+1 {
		t.Fatalf("no answer to an update request (got %v seq %d)", ok, pk.Seq)
	}
	time.Sleep(120 * time.Millisecond)
	for name, b := range map[string][]byte{
		"replayed":      req,
		"wrong key":     request(wire.NewEncoder([]byte("another key 01234")), 2, wire.NoNode),
		"unsigned":      request(wire.NewEncoder(nil), 3, wire.NoNode),
		"for node 5":    request(enc, 4, 5),
		"garbage":       []byte("HSTS\x01\x02 not a request at all"),
		"status packet": func() []byte { b, _ := enc.AppendStatus(nil, 9, 1, &sample.Sample{}); return b[0] }(),
	} {
		r.master.WriteTo(b, nodeAddr)
		if pk, ok := r.next(t, 200*time.Millisecond); ok {
			t.Errorf("%s request answered (seq %d)", name, pk.Seq)
		}
	}
	if r.s.Rejected() < 4 {
		t.Errorf("rejected %d requests, want at least 4", r.s.Rejected())
	}
	// Two fresh requests at once: one answer.
	r.master.WriteTo(request(enc, 10, 4), nodeAddr)
	r.master.WriteTo(request(enc, 11, wire.NoNode), nodeAddr)
	if _, ok := r.next(t, time.Second); !ok {
		t.Fatal("no answer to a fresh request for node 4")
	}
	if pk, ok := r.next(t, 300*time.Millisecond); ok {
		t.Errorf("second answer within 100ms (seq %d)", pk.Seq)
	}
	if got := r.s.Answered(); got != 2 {
		t.Errorf("answered %d, want 2", got)
	}
}

// Samples go out every rate, sequence numbers growing, node number as
// given (or NoNode when unassigned).
func TestPeriodicSamples(t *testing.T) {
	r := newRig(t, send.Config{Rate: 50 * time.Millisecond, Node: send.NoNode, Key: key})
	var last uint32
	start := time.Now()
	for i := range 6 {
		pk, ok := r.next(t, time.Second)
		if !ok {
			t.Fatalf("sample %d missing", i)
		}
		if pk.Node != wire.NoNode {
			t.Errorf("unassigned node sent node %d", pk.Node)
		}
		if i > 0 && pk.Seq != last+1 {
			t.Errorf("seq %d after %d", pk.Seq, last)
		}
		last = pk.Seq
	}
	if d := time.Since(start); d < 200*time.Millisecond || d > 2*time.Second {
		t.Errorf("6 samples at 50ms took %v", d)
	}
}

func TestParseMasters(t *testing.T) {
	addrs, names, err := send.ParseMasters([]string{"10.0.0.1", "10.0.0.2:4000", "[fd00::1]:5000", "fd00::2", "localhost:7", "master"}, 3040)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"10.0.0.1:3040", "10.0.0.2:4000", "[fd00::1]:5000", "[fd00::2]:3040"}
	for i, w := range want {
		if addrs[i].String() != w {
			t.Errorf("%d: %v, want %v", i, addrs[i], w)
		}
	}
	if len(names) != 2 || names[0] != (send.Master{Host: "localhost", Port: 7}) || names[1] != (send.Master{Host: "master", Port: 3040}) {
		t.Errorf("names %v, want localhost:7 and master:3040", names)
	}
	for _, bad := range []string{"10.0.0.1:0", "10.0.0.1:x", ":3040"} {
		if _, _, err := send.ParseMasters([]string{bad}, 3040); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// The details datagram goes with the first sample, then with one in
// DetailsEvery, and at once when the hostname or the filesystems change.
func TestDetailsEveryFewSamples(t *testing.T) {
	var n atomic.Int32
	collect := func(s *sample.Sample) error {
		host := "node-1"
		if n.Add(1) >= 5 {
			host = "node-1-renamed" // from the 5th sample on
		}
		*s = sample.Sample{Time: time.Now(), BootTime: time.Now().Add(-time.Hour), BootID: [16]byte{7}, CPUs: make([]sample.CPU, 2),
			Hostname: host, Filesystems: []sample.Filesystem{{Mount: "/", Type: "ext4"}}}
		return nil
	}
	r := newRig(t, send.Config{Rate: 20 * time.Millisecond, Node: 4, Key: key, DetailsEvery: 3, Collect: collect})
	var details []uint32
	for statuses := 0; statuses < 12; {
		pk, ok := r.next(t, 2*time.Second)
		if !ok {
			t.Fatalf("after %d samples: nothing more sent", statuses)
		}
		switch pk.Kind {
		case wire.KindDetails:
			details = append(details, pk.Seq)
		case wire.KindStatus:
			statuses++
		}
	}
	// 1 (first), 4 (every 3rd), 5 (renamed), 8, 11.
	if want := []uint32{1, 4, 5, 8, 11}; !slices.Equal(details, want) {
		t.Errorf("details with samples %v, want %v", details, want)
	}
}

// An answer to an update request carries the details whenever they are
// due next: a master that asks has just started, or lost track.
func TestAnswerCarriesDetails(t *testing.T) {
	collect := func(s *sample.Sample) error {
		*s = sample.Sample{Time: time.Now(), BootTime: time.Now().Add(-time.Hour), BootID: [16]byte{7}, CPUs: make([]sample.CPU, 2),
			Hostname: "node-1"}
		return nil
	}
	r := newRig(t, send.Config{Rate: 30 * time.Second, Node: 4, Key: key, Collect: collect})
	kinds := func() []wire.Kind {
		var ks []wire.Kind
		for {
			pk, ok := r.next(t, 300*time.Millisecond)
			if !ok {
				return ks
			}
			ks = append(ks, pk.Kind)
		}
	}
	if ks := kinds(); !slices.Equal(ks, []wire.Kind{wire.KindDetails, wire.KindStatus}) {
		t.Fatalf("first sample sent %v, want details then status", ks)
	}
	r.master.WriteTo(request(wire.NewEncoder(key), 1, wire.NoNode), nodeAddr)
	if ks := kinds(); !slices.Equal(ks, []wire.Kind{wire.KindDetails, wire.KindStatus}) {
		t.Errorf("answer sent %v, want details then status", ks)
	}
}
