package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hoststat/hoststat/telemetry/sample"
)

var (
	testKey   = []byte("0123456789abcdef0123456789abcdef")
	otherKey  = []byte("fedcba9876543210fedcba9876543210")
	t0        = time.Unix(1_750_000_000, 123456789)
	boot0     = time.Unix(1_749_000_000, 0)
	node7Addr = netip.MustParseAddr("10.0.0.7")
)

// randomSample makes a sample whose every value survives the wire exactly:
// loads with 2 decimals, MHz with 3, model and device names up to 255 bytes.
func randomSample(rng *rand.Rand, cpus, nets int) *sample.Sample {
	s := &sample.Sample{
		Time:     time.Unix(0, t0.UnixNano()+rng.Int64N(1e12)),
		BootTime: time.Unix(boot0.Unix()+rng.Int64N(1000), 0),
		Memory: sample.Memory{Total: rng.Uint64(), Free: rng.Uint64N(1 << 40), Available: rng.Uint64N(1 << 40),
			Buffers: rng.Uint64N(1 << 30), Cached: rng.Uint64N(1 << 36), Shared: 5, SwapTotal: 0, SwapFree: rng.Uint64()},
		Load: sample.Load{One: float64(rng.IntN(100000)) / 100, Five: 0.05, Fifteen: float64(rng.IntN(1000)) / 100,
			Running: rng.Uint32(), Total: rng.Uint32N(100000), LastPID: rng.Uint32()},
	}
	for i := range s.BootID {
		s.BootID[i] = byte(rng.Uint32())
	}
	s.Total = randomTicks(rng)
	models := []string{"Intel(R) Xeon(R) Platinum 8480+", "AMD EPYC 9654 96-Core Processor", "", strings.Repeat("m", 255)}
	for i := 0; i < cpus; i++ {
		s.CPUs = append(s.CPUs, sample.CPU{Ticks: randomTicks(rng), MHz: float64(rng.IntN(5_000_000)) / 1000,
			Model: models[(i/max(1, cpus/3))%len(models)]})
	}
	for i := 0; i < nets; i++ {
		s.Net = append(s.Net, sample.NetDev{Name: fmt.Sprintf("veth%08x%d", rng.Uint32(), i),
			RxBytes: rng.Uint64(), RxPackets: rng.Uint64N(1 << 40), RxErrors: rng.Uint64N(10), RxDrops: 1,
			TxBytes: rng.Uint64(), TxPackets: rng.Uint64N(1 << 40), TxErrors: 0, TxDrops: rng.Uint64N(1 << 20)})
	}
	return s
}

func randomTicks(rng *rand.Rand) sample.Ticks {
	return tk(rng.Uint64N(1<<40), rng.Uint64N(1<<20), rng.Uint64N(1<<40), rng.Uint64(),
		rng.Uint64N(1<<30), rng.Uint64N(100), 0, rng.Uint64N(1<<14))
}

func tk(user, nice, system, idle, iowait, irq, softirq, steal uint64) sample.Ticks {
	return sample.Ticks{User: user, Nice: nice, System: system, Idle: idle, IOWait: iowait, IRQ: irq, SoftIRQ: softirq, Steal: steal}
}

func smallSample() *sample.Sample {
	s := &sample.Sample{
		Time: t0, BootTime: boot0, BootID: [16]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16},
		Total: tk(4000, 100, 2000, 80000, 400, 40, 80, 8),
		Memory: sample.Memory{Total: 16 << 30, Free: 8 << 30, Available: 12 << 30, Buffers: 100 << 20,
			Cached: 2 << 30, Shared: 50 << 20, SwapTotal: 4 << 30, SwapFree: 4 << 30},
		Load: sample.Load{One: 1.25, Five: 0.5, Fifteen: 0.05, Running: 3, Total: 456, LastPID: 7890},
		Net: []sample.NetDev{{Name: "lo", RxBytes: 5000, RxPackets: 50, TxBytes: 5000, TxPackets: 50},
			{Name: "eth0", RxBytes: 1 << 40, RxPackets: 1 << 30, RxErrors: 3, RxDrops: 4, TxBytes: 9e9, TxPackets: 1e7, TxErrors: 5, TxDrops: 6},
			{Name: "ib0", RxBytes: 1 << 44, RxPackets: 1 << 34, TxBytes: 1 << 44, TxPackets: 1 << 34}},
	}
	for i := range 4 {
		s.CPUs = append(s.CPUs, sample.CPU{Ticks: tk(1000+uint64(i), 25, 500, 20000, 100, 10, 20, 2),
			MHz: 2100.125, Model: "Intel(R) Xeon(R) Processor @ 2.10GHz"})
	}
	return s
}

// equalSamples compares samples, times by instant.
func equalSamples(t testing.TB, got, want *sample.Sample) {
	t.Helper()
	if !got.Time.Equal(want.Time) || !got.BootTime.Equal(want.BootTime) {
		t.Fatalf("times %v %v, want %v %v", got.Time, got.BootTime, want.Time, want.BootTime)
	}
	g, w := *got, *want
	g.Time, g.BootTime, w.Time, w.BootTime = time.Time{}, time.Time{}, time.Time{}, time.Time{}
	if len(g.CPUs) == 0 && len(w.CPUs) == 0 {
		g.CPUs, w.CPUs = nil, nil
	}
	if len(g.Net) == 0 && len(w.Net) == 0 {
		g.Net, w.Net = nil, nil
	}
	if len(g.Disks) == 0 && len(w.Disks) == 0 {
		g.Disks, w.Disks = nil, nil
	}
	if len(g.Filesystems) == 0 && len(w.Filesystems) == 0 {
		g.Filesystems, w.Filesystems = nil, nil
	}
	if !reflect.DeepEqual(g, w) {
		t.Fatalf("sample differs after the wire:\n got %+v\nwant %+v", g, w)
	}
}

func encode(t testing.TB, e *Encoder, node, seq uint32, s *sample.Sample) [][]byte {
	t.Helper()
	parts, err := e.AppendStatus(nil, node, seq, s)
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range parts {
		if len(p) > MaxDatagram {
			t.Fatalf("part %d is %d bytes", i, len(p))
		}
	}
	return parts
}

// deliver parses and assembles datagrams in order and returns how many
// samples completed; it fails on any error not in allowed.
func deliver(t *testing.T, ps *Parser, a *Assembler, from netip.Addr, dgrams [][]byte, now time.Time, into *sample.Sample, allowed ...error) int {
	t.Helper()
	done := 0
	for _, d := range dgrams {
		p, err := ps.Parse(d)
		if err != nil {
			t.Fatalf("Parse: %v", err)
		}
		ok, err := a.Add(SenderOf(&p.Header, from), &p, now, into)
		if err != nil {
			if !isAny(err, allowed) {
				t.Fatalf("Add: %v", err)
			}
			continue
		}
		if ok {
			done++
		}
	}
	return done
}

func isAny(err error, targets []error) bool {
	for _, t := range targets {
		if errors.Is(err, t) {
			return true
		}
	}
	return false
}

func TestSmallSampleIsOneCompactDatagram(t *testing.T) {
	for _, key := range [][]byte{nil, testKey} {
		s := smallSample()
		parts := encode(t, NewEncoder(key), 7, 1, s)
		if len(parts) != 1 {
			t.Fatalf("4-CPU sample in %d datagrams", len(parts))
		}
		t.Logf("4 CPUs, 3 devices, key %v: %d bytes", key != nil, len(parts[0]))
		if len(parts[0]) > 400 {
			t.Errorf("4-CPU sample takes %d bytes, want at most 400", len(parts[0]))
		}
		if n := bytes.Count(parts[0], []byte(s.CPUs[0].Model)); n != 1 {
			t.Errorf("model string appears %d times, want once", n)
		}
		var got sample.Sample
		if n := deliver(t, NewParser(key), NewAssembler(4, 0), node7Addr, parts, t0, &got); n != 1 {
			t.Fatalf("%d samples completed", n)
		}
		equalSamples(t, &got, s)
	}
}

func TestLargeSampleSurvivesShuffledDuplicatedDelivery(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	s := randomSample(rng, 1024, 64)
	for _, key := range [][]byte{nil, testKey} {
		parts := encode(t, NewEncoder(key), NoNode, 42, s)
		t.Logf("1024 CPUs, 64 devices, key %v: %d datagrams", key != nil, len(parts))
		if len(parts) < 2 {
			t.Fatal("expected several parts")
		}
		// Every part says which CPUs and devices it carries.
		var cpus, nets int
		for _, d := range parts {
			p, err := NewParser(key).Parse(d)
			if err != nil {
				t.Fatal(err)
			}
			if p.ranges.cpuCount != 1024 || p.ranges.netCount != 64 {
				t.Fatalf("part %d counts %+v", p.Part, p.ranges)
			}
			cpus += p.ranges.cpuN
			nets += p.ranges.netN
		}
		if cpus != 1024 || nets != 64 {
			t.Fatalf("parts carry %d CPUs and %d devices", cpus, nets)
		}
		// Shuffle, and deliver some parts twice, the last one only at the end.
		order := append([][]byte(nil), parts...)
		rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
		last := order[len(order)-1]
		var mixed [][]byte
		for i, d := range order[:len(order)-1] {
			mixed = append(mixed, d)
			if i%3 == 0 {
				mixed = append(mixed, d)
			}
		}
		a := NewAssembler(8, time.Second)
		var got sample.Sample
		ps := NewParser(key)
		if n := deliver(t, ps, a, node7Addr, mixed, t0, &got, ErrDuplicate); n != 0 {
			t.Fatal("sample completed before its last part")
		}
		if got.CPUs != nil {
			t.Fatal("incomplete sample written to into")
		}
		if n := deliver(t, ps, a, node7Addr, [][]byte{last}, t0, &got); n != 1 {
			t.Fatal("sample did not complete with its last part")
		}
		equalSamples(t, &got, s)
		if a.Pending() != 0 {
			t.Errorf("%d samples still pending", a.Pending())
		}
		// Late duplicates of the accepted sample are duplicates.
		p, _ := ps.Parse(parts[0])
		if _, err := a.Add(SenderOf(&p.Header, node7Addr), &p, t0, &got); !errors.Is(err, ErrDuplicate) {
			t.Errorf("late duplicate: err = %v, want ErrDuplicate", err)
		}
	}
}

func TestRandomSamplesRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	e := NewEncoder(testKey)
	ps := NewParser(testKey)
	a := NewAssembler(4, time.Second)
	var got sample.Sample
	var bufs [][]byte
	for seq := uint32(1); seq <= 200; seq++ {
		s := randomSample(rng, rng.IntN(300), rng.IntN(100))
		s.BootID = [16]byte{9}
		var err error
		if bufs, err = e.AppendStatus(bufs[:0], 3, seq, s); err != nil {
			t.Fatal(err)
		}
		rng.Shuffle(len(bufs), func(i, j int) { bufs[i], bufs[j] = bufs[j], bufs[i] })
		if n := deliver(t, ps, a, node7Addr, bufs, t0, &got); n != 1 {
			t.Fatalf("seq %d: %d samples completed", seq, n)
		}
		equalSamples(t, &got, s)
	}
}

func TestLongStringsAreCut(t *testing.T) {
	s := smallSample()
	s.CPUs[1].Model = strings.Repeat("x", 300)
	s.Net[0].Name = strings.Repeat("n", 256)
	var got sample.Sample
	deliver(t, NewParser(nil), NewAssembler(1, 0), node7Addr, encode(t, NewEncoder(nil), 1, 1, s), t0, &got)
	if got.CPUs[1].Model != strings.Repeat("x", MaxStringLen) || got.Net[0].Name != strings.Repeat("n", MaxStringLen) {
		t.Errorf("got model of %d and name of %d bytes", len(got.CPUs[1].Model), len(got.Net[0].Name))
	}
	if got.CPUs[0].Model != s.CPUs[0].Model || got.CPUs[2].Model != s.CPUs[2].Model {
		t.Error("other models changed")
	}
}

func TestEncoderRejectsTooLargeSamples(t *testing.T) {
	s := &sample.Sample{CPUs: make([]sample.CPU, MaxCPUs+1)}
	if _, err := NewEncoder(nil).AppendStatus(nil, 1, 1, s); !errors.Is(err, ErrOversize) {
		t.Errorf("err = %v, want ErrOversize", err)
	}
}

func TestEncoderReusesBuffers(t *testing.T) {
	e := NewEncoder(testKey)
	s := randomSample(rand.New(rand.NewPCG(5, 6)), 64, 8)
	bufs, _ := e.AppendStatus(nil, 1, 1, s)
	allocs := testing.AllocsPerRun(100, func() {
		bufs, _ = e.AppendStatus(bufs[:0], 1, 2, s)
	})
	if allocs != 0 {
		t.Errorf("%v allocations per encode with reused buffers", allocs)
	}
}

// raw builds a datagram from a header and payload, as a broken or hostile
// sender might, sealing it with key when given.
func raw(h Header, payload []byte, key []byte) []byte {
	e := NewEncoder(key)
	b := e.startDatagram(nil, &h)
	b = append(b, payload...)
	return e.seal(b, 0)
}

func statusHeader(part, parts uint16) Header {
	return Header{Kind: KindStatus, Node: 1, BootID: [16]byte{1}, Epoch: 10, Seq: 5, Part: part, Parts: parts, Time: t0, BootTime: boot0}
}

func uvarints(vs ...uint64) []byte {
	var b []byte
	for _, v := range vs {
		b = binary.AppendUvarint(b, v)
	}
	return b
}

// wholeNode is a valid part-0 block: ticks, memory, loads, processes.
var wholeNode = uvarints(1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4, 5, 6, 7, 8, 100, 50, 25, 1, 2, 3)

func TestParseDropReasons(t *testing.T) {
	good := encode(t, NewEncoder(nil), 1, 1, smallSample())[0]
	signed := encode(t, NewEncoder(testKey), 1, 1, smallSample())[0]
	mutate := func(b []byte, f func([]byte) []byte) []byte { return f(append([]byte(nil), b...)) }
	cases := []struct {
		name string
		key  []byte
		b    []byte
		want error
	}{
		{"empty", nil, nil, ErrTruncated},
		{"four bytes", nil, good[:4], ErrTruncated},
		{"header cut", nil, good[:HeaderLen-1], ErrTruncated},
		{"payload cut", nil, good[:len(good)-1], ErrTruncated},
		{"bad magic", nil, mutate(good, func(b []byte) []byte { b[0] = 'X'; return b }), ErrMalformed},
		{"version 2", nil, mutate(good, func(b []byte) []byte { b[4] = 2; return b }), ErrVersion},
		{"version 0 short", nil, []byte("HSTS\x00"), ErrVersion},
		{"oversize", nil, append(append([]byte(nil), good...), make([]byte, MaxDatagram)...), ErrOversize},
		{"unknown kind", nil, mutate(good, func(b []byte) []byte { b[5] = 9; return b }), ErrMalformed},
		{"unknown flag", nil, mutate(good, func(b []byte) []byte { b[6] |= 0x80; return b }), ErrMalformed},
		{"trailing byte", nil, append(append([]byte(nil), good...), 0), ErrMalformed},
		{"part beyond parts", nil, raw(statusHeader(1, 1), nil, nil), ErrMalformed},
		{"zero parts", nil, raw(statusHeader(0, 0), nil, nil), ErrMalformed},
		{"too many parts", nil, raw(statusHeader(0, MaxParts+1), nil, nil), ErrMalformed},
		{"cpu count too large", nil, raw(statusHeader(0, 1), uvarints(MaxCPUs+1, 0, 0, 0, 0, 0), nil), ErrMalformed},
		{"cpu range beyond count", nil, raw(statusHeader(1, 2), uvarints(4, 3, 2, 0, 0, 0), nil), ErrMalformed},
		{"single part missing CPUs", nil, raw(statusHeader(0, 1), append(uvarints(4, 0, 0, 0, 0, 0), wholeNode...), nil), ErrMalformed},
		{"varint overflow", nil, raw(statusHeader(0, 1), bytes.Repeat([]byte{0xff}, 11), nil), ErrMalformed},
		{"no model table", nil, raw(statusHeader(1, 2), append(uvarints(1, 0, 1, 0, 0, 0), 0), nil), ErrMalformed},
		{"model index out of table", nil, raw(statusHeader(1, 2), append(uvarints(1, 0, 1, 0, 0, 0), 1, 1, 'm', 1, 0, 1, 2, 3, 4, 5, 6, 7, 8), nil), ErrMalformed},
		{"name longer than payload", nil, raw(statusHeader(1, 2), append(uvarints(0, 0, 0, 1, 0, 1), 200, 'e'), nil), ErrTruncated},
		{"update request with payload", nil, raw(Header{Kind: KindUpdateRequest, Parts: 1}, []byte{1}, nil), ErrMalformed},
		{"key but no MAC", testKey, good, ErrAuth},
		{"wrong key", otherKey, signed, ErrAuth},
		{"tampered", testKey, mutate(signed, func(b []byte) []byte { b[HeaderLen+3] ^= 1; return b }), ErrAuth},
		{"tampered MAC", testKey, mutate(signed, func(b []byte) []byte { b[len(b)-1] ^= 1; return b }), ErrAuth},
		{"MAC flag on a short datagram", testKey, raw(statusHeader(0, 1), nil, testKey)[:HeaderLen+MACLen-1], ErrTruncated},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := NewParser(c.key).Parse(c.b)
			if !errors.Is(err, c.want) {
				t.Fatalf("err = %v, want %v", err, c.want)
			}
		})
	}
}

func TestAuthentication(t *testing.T) {
	signed := encode(t, NewEncoder(testKey), 1, 1, smallSample())[0]
	if _, err := NewParser(testKey).Parse(signed); err != nil {
		t.Errorf("right key: %v", err)
	}
	// A master without a key takes signed datagrams without checking.
	p, err := NewParser(nil).Parse(signed)
	if err != nil || p.Flags&FlagAuthenticated == 0 {
		t.Errorf("no key: flags %#x, err %v", p.Flags, err)
	}
	if _, err := NewParser(otherKey).Parse(signed); !errors.Is(err, ErrAuth) {
		t.Errorf("wrong key: err = %v", err)
	}
}

// feed parses one datagram and adds it.
func feed(t *testing.T, a *Assembler, d []byte, now time.Time, into *sample.Sample) (bool, error) {
	t.Helper()
	p, err := NewParser(testKey).Parse(d)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return a.Add(SenderOf(&p.Header, node7Addr), &p, now, into)
}

func TestReplayAndRestartRules(t *testing.T) {
	s := smallSample()
	first := NewEncoder(testKey)
	first.Epoch = 1000
	a := NewAssembler(4, time.Second)
	var got sample.Sample
	send := func(e *Encoder, seq uint32, s *sample.Sample) error {
		_, err := feed(t, a, encode(t, e, 7, seq, s)[0], t0, &got)
		return err
	}
	for _, c := range []struct {
		name string
		e    *Encoder
		seq  uint32
		s    func() *sample.Sample
		want error
	}{
		{"first", first, 10, smallSample, nil},
		{"next", first, 11, smallSample, nil},
		{"same seq again", first, 11, smallSample, ErrDuplicate},
		{"older seq", first, 10, smallSample, ErrStale},
		{"gap is fine", first, 20, smallSample, nil},
		{"restarted sender on the same boot, seq from 1", &Encoder{Epoch: 2000, mac: first.mac}, 1, smallSample, nil},
		{"the earlier process replayed", first, 21, smallSample, ErrReplay},
		{"rebooted node", &Encoder{Epoch: 5, mac: first.mac}, 1, func() *sample.Sample {
			r := smallSample()
			r.BootID[0] = 0xee
			r.BootTime = boot0.Add(time.Hour)
			return r
		}, nil},
		{"the previous boot replayed", &Encoder{Epoch: 2000, mac: first.mac}, 99, smallSample, ErrReplay},
		{"a boot id claiming an older boot time", &Encoder{Epoch: 9, mac: first.mac}, 99, func() *sample.Sample {
			r := smallSample()
			r.BootID[0] = 0xdd
			r.BootTime = boot0.Add(30 * time.Minute)
			return r
		}, ErrReplay},
	} {
		if err := send(c.e, c.seq, c.s()); !errors.Is(err, c.want) || (err != nil) != (c.want != nil) {
			t.Errorf("%s: err = %v, want %v", c.name, err, c.want)
		}
	}
	_ = s
	// Forgetting a node lets anything in again.
	a.Forget(Sender{Node: 7})
	if err := send(first, 1, smallSample()); err != nil {
		t.Errorf("after Forget: %v", err)
	}
}

func TestNodeNumberFromAddress(t *testing.T) {
	e := NewEncoder(nil)
	a := NewAssembler(4, 0)
	var got sample.Sample
	d := encode(t, e, NoNode, 1, smallSample())[0]
	p, _ := NewParser(nil).Parse(d)
	v4 := netip.MustParseAddr("10.1.2.3")
	if s := SenderOf(&p.Header, netip.AddrFrom16(v4.As16())); s.Addr != v4 || s.Node != NoNode {
		t.Errorf("sender %v, want the unmapped IPv4 address", s)
	}
	if _, err := a.Add(SenderOf(&p.Header, v4), &p, t0, &got); err != nil {
		t.Fatal(err)
	}
	// The same sequence number from another address is another sender.
	if _, err := a.Add(SenderOf(&p.Header, netip.MustParseAddr("10.1.2.4")), &p, t0, &got); err != nil {
		t.Errorf("other address: %v", err)
	}
}

func TestIncompleteSamplesExpireAndAreBounded(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	big := randomSample(rng, 256, 8)
	e := NewEncoder(testKey)
	a := NewAssembler(2, time.Second)
	var got sample.Sample
	// Parts of three samples from three nodes: the first is pushed out.
	for node := uint32(1); node <= 3; node++ {
		parts := encode(t, e, node, 1, big)
		if ok, err := feed(t, a, parts[0], t0.Add(time.Duration(node)*time.Millisecond), &got); ok || err != nil {
			t.Fatalf("node %d: %v %v", node, ok, err)
		}
	}
	if a.Pending() != 2 || a.Abandoned() != 1 {
		t.Fatalf("pending %d abandoned %d, want 2 and 1", a.Pending(), a.Abandoned())
	}
	// Time passes: the rest expire, and their late parts start afresh.
	a.Expire(t0.Add(2 * time.Second))
	if a.Pending() != 0 || a.Abandoned() != 3 {
		t.Fatalf("pending %d abandoned %d, want 0 and 3", a.Pending(), a.Abandoned())
	}
	if got.CPUs != nil {
		t.Fatal("an incomplete sample reached into")
	}

	// One node cannot hold more than perSender incomplete samples.
	a = NewAssembler(100, time.Second)
	for seq := uint32(1); seq <= perSender+3; seq++ {
		feed(t, a, encode(t, e, 9, seq, big)[0], t0, &got)
	}
	if a.Pending() != perSender {
		t.Errorf("one node holds %d incomplete samples, want %d", a.Pending(), perSender)
	}
}

func TestNewerSampleMakesOlderPartsStale(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	big := randomSample(rng, 256, 8)
	e := NewEncoder(testKey)
	a := NewAssembler(8, time.Second)
	var got sample.Sample
	old := encode(t, e, 4, 1, big)
	feed(t, a, old[0], t0, &got)
	for _, d := range encode(t, e, 4, 2, big) {
		feed(t, a, d, t0, &got)
	}
	if a.Pending() != 0 || a.Abandoned() != 1 {
		t.Errorf("pending %d abandoned %d after a newer sample completed", a.Pending(), a.Abandoned())
	}
	if _, err := feed(t, a, old[1], t0, &got); !errors.Is(err, ErrStale) {
		t.Errorf("late part of an older sample: err = %v, want ErrStale", err)
	}
}

func TestInconsistentPartsAreMalformed(t *testing.T) {
	a := NewAssembler(8, time.Second)
	var got sample.Sample
	add := func(h Header, payload []byte) (bool, error) {
		p, err := NewParser(nil).Parse(raw(h, payload, nil))
		if err != nil {
			t.Fatalf("Parse: %v", err)
		}
		return a.Add(SenderOf(&p.Header, node7Addr), &p, t0, &got)
	}
	// Two parts that both claim the only device.
	dev := append([]byte{1, 'e'}, uvarints(1, 2, 3, 4, 5, 6, 7, 8)...)
	if _, err := add(statusHeader(0, 2), append(append(uvarints(0, 0, 0, 1, 0, 1), wholeNode...), dev...)); err != nil {
		t.Fatal(err)
	}
	if _, err := add(statusHeader(1, 2), append(uvarints(0, 0, 0, 1, 0, 1), dev...)); !errors.Is(err, ErrMalformed) {
		t.Errorf("overlapping parts: err = %v, want ErrMalformed", err)
	}
	// A part whose counts disagree with the first part's.
	h := statusHeader(0, 2)
	h.Seq = 6
	add(h, append(uvarints(0, 0, 0, 1, 0, 0), wholeNode...))
	h.Part = 1
	if _, err := add(h, uvarints(0, 0, 0, 2, 0, 0)); !errors.Is(err, ErrMalformed) {
		t.Errorf("disagreeing counts: err = %v, want ErrMalformed", err)
	}
	if got.Net != nil {
		t.Error("a malformed sample reached into")
	}
}

func TestUpdateRequests(t *testing.T) {
	master := NewEncoder(testKey)
	master.Epoch = 100
	mh := Header{Node: NoNode, BootID: [16]byte{0xaa}, BootTime: boot0, Seq: 1, Time: t0}
	d := master.AppendUpdateRequest(nil, mh)
	if len(d) != HeaderLen+MACLen {
		t.Errorf("update request is %d bytes", len(d))
	}
	g := NewGuard(8)
	from := Sender{Node: NoNode, Addr: netip.MustParseAddr("10.0.0.1")}
	admit := func(d []byte) error {
		p, err := NewParser(testKey).Parse(d)
		if err != nil {
			return err
		}
		if p.Kind != KindUpdateRequest || p.Node != NoNode || p.Seq != mh.Seq || !p.Time.Equal(t0) {
			t.Fatalf("header %+v", p.Header)
		}
		return g.Admit(from, &p.Header)
	}
	if err := admit(d); err != nil {
		t.Fatal(err)
	}
	if err := admit(d); !errors.Is(err, ErrDuplicate) {
		t.Errorf("replayed request: err = %v, want ErrDuplicate", err)
	}
	if err := admit(NewEncoder(otherKey).AppendUpdateRequest(nil, mh)); !errors.Is(err, ErrAuth) {
		t.Errorf("forged request: err = %v, want ErrAuth", err)
	}
	mh.Seq = 2
	if err := admit(master.AppendUpdateRequest(nil, mh)); err != nil {
		t.Errorf("next request: %v", err)
	}
	restarted := NewEncoder(testKey)
	restarted.Epoch = 200
	mh.Seq = 1
	if err := admit(restarted.AppendUpdateRequest(nil, mh)); err != nil {
		t.Errorf("restarted master: %v", err)
	}
	mh.Seq = 3
	if err := admit(master.AppendUpdateRequest(nil, mh)); !errors.Is(err, ErrReplay) {
		t.Errorf("request of the master's earlier process: err = %v, want ErrReplay", err)
	}
	// A status packet is not an update request, and vice versa.
	p, _ := NewParser(testKey).Parse(d)
	if _, err := NewAssembler(1, 0).Add(from, &p, t0, &sample.Sample{}); !errors.Is(err, ErrMalformed) {
		t.Errorf("update request to Assembler: err = %v", err)
	}
}

func TestSteadySenderCostsNoAllocation(t *testing.T) {
	for _, key := range [][]byte{nil, testKey} {
		e := NewEncoder(key)
		ps := NewParser(key)
		a := NewAssembler(4, time.Second)
		s := smallSample()
		var got sample.Sample
		seq := uint32(0)
		var bufs [][]byte
		step := func() {
			seq++
			bufs, _ = e.AppendStatus(bufs[:0], 7, seq, s)
			p, err := ps.Parse(bufs[0])
			if err != nil {
				t.Fatal(err)
			}
			if ok, err := a.Add(Sender{Node: 7}, &p, t0, &got); !ok || err != nil {
				t.Fatal(ok, err)
			}
		}
		step()
		if n := testing.AllocsPerRun(200, step); n != 0 {
			t.Errorf("key %v: %v allocations per sample", key != nil, n)
		}
		// The same through Receive, as recvstats does.
		receive := func() {
			seq++
			bufs, _ = e.AppendStatus(bufs[:0], 7, seq, s)
			if _, ok, err := a.Receive(ps, bufs[0], node7Addr, t0, &got); !ok || err != nil {
				t.Fatal(ok, err)
			}
		}
		receive()
		if n := testing.AllocsPerRun(200, receive); n != 0 {
			t.Errorf("key %v: %v allocations per sample through Receive", key != nil, n)
		}
	}
}

// twin feeds the same datagrams to two Assemblers, one through Parse and
// Add, the other through Receive, and fails when they disagree on what
// completes, on the reason of a drop, or on a sample.
type twin struct {
	t        testing.TB
	ps1, ps2 *Parser
	a1, a2   *Assembler
	s1, s2   sample.Sample
}

func newTwin(t testing.TB, key []byte, maxPending int, timeout time.Duration) *twin {
	return &twin{t: t, ps1: NewParser(key), ps2: NewParser(key),
		a1: NewAssembler(maxPending, timeout), a2: NewAssembler(maxPending, timeout)}
}

// reason is the drop reason err wraps, or nil.
func reason(err error) error {
	for _, r := range []error{ErrVersion, ErrTruncated, ErrOversize, ErrMalformed, ErrAuth, ErrReplay, ErrDuplicate, ErrStale} {
		if errors.Is(err, r) {
			return r
		}
	}
	return err
}

func (w *twin) feed(d []byte, from netip.Addr, now time.Time) (bool, error) {
	w.t.Helper()
	var ok1 bool
	p, err1 := w.ps1.Parse(d)
	if err1 == nil && (p.Kind == KindStatus || p.Kind == KindDetails) {
		ok1, err1 = w.a1.Add(SenderOf(&p.Header, from), &p, now, &w.s1)
	}
	h, ok2, err2 := w.a2.Receive(w.ps2, d, from, now, &w.s2)
	if ok1 != ok2 || reason(err1) != reason(err2) || (err1 == nil) != (err2 == nil) {
		w.t.Fatalf("Parse+Add: %v, %v; Receive: %v, %v", ok1, err1, ok2, err2)
	}
	if err1 == nil && h != p.Header {
		w.t.Fatalf("Receive header %+v, Parse %+v", h, p.Header)
	}
	if ok1 {
		equalSamples(w.t, &w.s2, &w.s1)
	}
	if w.a1.Pending() != w.a2.Pending() || w.a1.Abandoned() != w.a2.Abandoned() {
		w.t.Fatalf("pending %d and %d, abandoned %d and %d", w.a1.Pending(), w.a2.Pending(), w.a1.Abandoned(), w.a2.Abandoned())
	}
	return ok1, err1
}

// Receive makes the checks of Parse and Add and gives their results, on
// good, broken, replayed, split and shuffled datagrams.
func TestReceiveMatchesParseAndAdd(t *testing.T) {
	for _, key := range [][]byte{nil, testKey} {
		w := newTwin(t, key, 8, time.Second)
		e := NewEncoder(key)
		e.Epoch = 1000
		small := encode(t, e, 7, 10, smallSample())[0]
		mutate := func(b []byte, f func([]byte)) []byte { c := append([]byte(nil), b...); f(c); return c }
		for _, d := range [][]byte{
			nil, small[:4], small[:HeaderLen-1], small[:len(small)-1],
			mutate(small, func(b []byte) { b[0] = 'X' }),
			mutate(small, func(b []byte) { b[4] = 2 }),
			mutate(small, func(b []byte) { b[KindOffset] = 9 }),
			mutate(small, func(b []byte) { b[HeaderLen+3] ^= 0x55 }),
			append(append([]byte(nil), small...), 0),
			e.AppendUpdateRequest(nil, Header{Node: NoNode, Seq: 1, Time: t0}),
			small,                                 // accepted
			small,                                 // duplicate
			encode(t, e, 7, 9, smallSample())[0],  // stale
			encode(t, e, 7, 11, smallSample())[0], // next
			encode(t, &Encoder{Epoch: 5, mac: e.mac}, 7, 99, smallSample())[0], // earlier process: replay
		} {
			w.feed(d, node7Addr, t0)
		}
		// A split sample, shuffled, with duplicates, from an address.
		rng := rand.New(rand.NewPCG(9, 9))
		parts := encode(t, e, NoNode, 12, randomSample(rng, 300, 20))
		rng.Shuffle(len(parts), func(i, j int) { parts[i], parts[j] = parts[j], parts[i] })
		done := 0
		for i, d := range append(parts, parts[0]) {
			if i == 2 {
				w.feed(parts[1], node7Addr, t0)
			}
			if ok, _ := w.feed(d, node7Addr, t0); ok {
				done++
			}
		}
		if done != 1 {
			t.Fatalf("split sample completed %d times", done)
		}
	}
	// A short datagram claiming the most CPUs and devices is refused
	// before anything is sized by its counts.
	liar := raw(statusHeader(0, 1), append(uvarints(MaxCPUs, 0, MaxCPUs, MaxNetDevs, 0, MaxNetDevs), wholeNode...), nil)
	var into sample.Sample
	if _, _, err := NewAssembler(1, 0).Receive(NewParser(nil), liar, node7Addr, t0, &into); !errors.Is(err, ErrTruncated) {
		t.Errorf("err = %v, want ErrTruncated", err)
	}
	if cap(into.CPUs) != 0 || cap(into.Net) != 0 {
		t.Errorf("into sized to %d CPUs and %d devices by a datagram that cannot hold them", cap(into.CPUs), cap(into.Net))
	}
	newTwin(t, nil, 1, 0).feed(liar, node7Addr, t0)
}

// 1.5 M packets from distinct senders (here 20,000, with MaxSenders 1,000)
// leave at most MaxSenders senders' state: memory follows the bound, not
// the packets.
func TestAssemblerSendersBounded(t *testing.T) {
	a := NewAssembler(16, 0)
	a.MaxSenders = 1000
	enc := NewEncoder(nil)
	smp := &sample.Sample{Time: t0, BootID: [16]byte{1}, CPUs: make([]sample.CPU, 1)}
	p := NewParser(nil)
	var got sample.Sample
	for i := range 20_000 {
		bufs, err := enc.AppendStatus(nil, uint32(i), 1, smp)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok, err := a.Receive(p, bufs[0], netip.MustParseAddr("10.0.0.1"), t0, &got); !ok || err != nil {
			t.Fatalf("sender %d: %v %v", i, ok, err)
		}
	}
	if a.Senders() > 1000 {
		t.Errorf("%d senders remembered, want at most 1000", a.Senders())
	}
}
