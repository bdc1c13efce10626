package wire

import (
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"github.com/hoststat/hoststat/telemetry/sample"
)

func parseSeeds(f *testing.F) {
	s := smallSample()
	for _, key := range [][]byte{nil, testKey} {
		f.Add(encode(f, NewEncoder(key), 1, 1, s)[0])
		for _, d := range encode(f, NewEncoder(key), NoNode, 2, randomSample(rand.New(rand.NewPCG(1, 1)), 64, 40)) {
			f.Add(d)
		}
		f.Add(NewEncoder(key).AppendUpdateRequest(nil, Header{Node: NoNode, Seq: 1, Time: t0}))
		d, _ := NewEncoder(key).AppendDetails(nil, 1, 1, withDetails(s, 2, 2))
		f.Add(d)
	}
	f.Add([]byte("HSTS\x01"))
	f.Add([]byte{})
}

// FuzzParse checks that Parse never panics and that whatever it accepts an
// Assembler can decode, and survives encoding again unchanged; and that
// Receive, which does both at once, agrees.
func FuzzParse(f *testing.F) {
	parseSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, key := range [][]byte{nil, testKey} {
			newTwin(t, key, 2, time.Second).feed(b, node7Addr, t0)
			p, err := NewParser(key).Parse(b)
			if err != nil {
				if !isAny(err, []error{ErrVersion, ErrTruncated, ErrOversize, ErrMalformed, ErrAuth}) {
					t.Fatalf("untyped error %v", err)
				}
				continue
			}
			if len(b) > MaxDatagram || p.Parts == 0 || p.Part >= p.Parts {
				t.Fatalf("accepted %d bytes, part %d of %d", len(b), p.Part, p.Parts)
			}
			if p.Kind == KindDetails {
				var s sample.Sample
				if ok, err := NewAssembler(2, time.Second).Add(Sender{Node: 1}, &p, t0, &s); ok || err != nil {
					t.Fatalf("details after Parse: %v, %v", ok, err)
				}
				continue
			}
			if p.Kind != KindStatus {
				continue
			}
			var s sample.Sample
			ok, err := NewAssembler(2, time.Second).Add(Sender{Node: 1}, &p, t0, &s)
			if err != nil {
				t.Fatalf("Add after Parse: %v", err)
			}
			if ok != (p.Parts == 1) {
				t.Fatalf("complete %v for %d parts", ok, p.Parts)
			}
			if !ok {
				continue
			}
			// A decoded sample goes through the wire again unchanged.
			var again sample.Sample
			parts := encode(t, NewEncoder(key), p.Node, p.Seq, &s)
			deliver(t, NewParser(key), NewAssembler(2, time.Second), node7Addr, parts, t0, &again)
			equalSamples(t, &again, &s)
		}
	})
}

// FuzzAssemble feeds a stream of datagrams from a few senders to one
// Assembler: it must never panic, stay within its bounds, and return only
// whole samples. Input: repeated [sender byte][2-byte length][datagram].
func FuzzAssemble(f *testing.F) {
	frame := func(dgrams [][]byte, sender byte) []byte {
		var b []byte
		for _, d := range dgrams {
			b = append(b, sender)
			b = binary.BigEndian.AppendUint16(b, uint16(len(d)))
			b = append(b, d...)
		}
		return b
	}
	rng := rand.New(rand.NewPCG(2, 2))
	// Small seeds: the engine minimizes every new input for up to
	// -fuzzminimizetime, and big ones make that look like a stall.
	big := encode(f, NewEncoder(nil), NoNode, 1, randomSample(rng, 30, 4))
	f.Add(frame(big, 0))
	f.Add(append(frame(big[1:], 0x41), frame(big, 0x82)...))
	f.Add(frame(encode(f, NewEncoder(nil), 3, 1, smallSample()), 0))
	f.Fuzz(func(t *testing.T, b []byte) {
		a := NewAssembler(3, time.Second)
		ps := NewParser(nil)
		w := newTwin(t, nil, 3, time.Second) // Receive must agree all along
		now := t0
		var s sample.Sample
		for len(b) >= 3 {
			who := b[0]
			n := int(binary.BigEndian.Uint16(b[1:]))
			b = b[3:]
			if n > len(b) {
				n = len(b)
			}
			d := b[:n]
			b = b[n:]
			now = now.Add(time.Duration(who&0x0f) * 100 * time.Millisecond)
			w.feed(d, netip.AddrFrom4([4]byte{10, 0, 0, who >> 6}), now)
			p, err := ps.Parse(d)
			if err != nil {
				continue
			}
			from := Sender{Node: NoNode, Addr: netip.AddrFrom4([4]byte{10, 0, 0, who >> 6})}
			ok, err := a.Add(from, &p, now, &s)
			if err != nil && !isAny(err, []error{ErrMalformed, ErrDuplicate, ErrStale, ErrReplay}) {
				t.Fatalf("untyped error %v", err)
			}
			if ok && err != nil {
				t.Fatal("complete with an error")
			}
			if a.Pending() > 3 || a.held > a.maxBytes || a.held < 0 {
				t.Fatalf("pending %d, held %d bytes", a.Pending(), a.held)
			}
			if ok && (len(s.CPUs) > MaxCPUs || len(s.Net) > MaxNetDevs) {
				t.Fatalf("sample of %d CPUs, %d devices", len(s.CPUs), len(s.Net))
			}
		}
		a.Expire(now.Add(time.Hour))
		if a.Pending() != 0 || a.held != 0 {
			t.Fatalf("after expiry: pending %d, held %d", a.Pending(), a.held)
		}
	})
}

// FuzzRoundTrip encodes samples of fuzzed shape and delivers their parts
// in a fuzzed order, duplicated: the same sample must come out.
func FuzzRoundTrip(f *testing.F) {
	f.Add(uint64(1), uint16(4), uint8(3), true)
	f.Add(uint64(2), uint16(1024), uint8(64), false)
	f.Add(uint64(3), uint16(0), uint8(0), true)
	f.Fuzz(func(t *testing.T, seed uint64, cpus uint16, nets uint8, keyed bool) {
		rng := rand.New(rand.NewPCG(seed, 7))
		s := randomSample(rng, int(cpus)%2049, int(nets))
		var key []byte
		if keyed {
			key = testKey
		}
		parts := encode(t, NewEncoder(key), 5, 1, s)
		rng.Shuffle(len(parts), func(i, j int) { parts[i], parts[j] = parts[j], parts[i] })
		parts = append(parts, parts[0])
		var got sample.Sample
		a := NewAssembler(2, time.Second)
		done := 0
		for _, d := range parts {
			p, err := NewParser(key).Parse(d)
			if err != nil {
				t.Fatal(err)
			}
			ok, err := a.Add(Sender{Node: 5}, &p, t0, &got)
			if err != nil && !errors.Is(err, ErrDuplicate) {
				t.Fatal(err)
			}
			if ok {
				done++
			}
		}
		if done != 1 {
			t.Fatalf("%d samples completed", done)
		}
		equalSamples(t, &got, s)
	})
}
