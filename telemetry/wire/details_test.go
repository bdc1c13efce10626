package wire

import (
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/hoststat/hoststat/telemetry/sample"
)

func withDetails(s *sample.Sample, disks, fss int) *sample.Sample {
	c := *s
	c.Hostname = "node-17.cluster"
	c.Disks, c.Filesystems = nil, nil
	for i := range disks {
		c.Disks = append(c.Disks, sample.Disk{Name: fmt.Sprintf("sd%c", 'a'+i%26), Reads: uint64(i) << 20, Writes: 7,
			ReadBytes: 1 << 40, WriteBytes: uint64(i) << 33, IOMillis: 123456})
	}
	for i := range fss {
		c.Filesystems = append(c.Filesystems, sample.Filesystem{Mount: fmt.Sprintf("/scratch/%d", i), Type: "xfs",
			Total: 2 << 40, Free: 1 << 40, Avail: 1<<40 - 4096, Files: 1 << 30, FilesFree: 1 << 29, NotAnswering: i == 1})
	}
	return &c
}

// sendAll is what sendstats sends for one sample: the details, then the
// status parts.
func sendAll(t testing.TB, e *Encoder, node, seq uint32, s *sample.Sample) [][]byte {
	t.Helper()
	d, cut := e.AppendDetails(nil, node, seq, s)
	if cut != 0 {
		t.Fatalf("%d details left out", cut)
	}
	if len(d) > MaxDatagram {
		t.Fatalf("details datagram of %d bytes", len(d))
	}
	return append([][]byte{d}, encode(t, e, node, seq, s)...)
}

// Details and status arrive as one sample, through Parse+Add and through
// Receive alike, whole or split, in either order of the details and the
// status parts.
func TestDetailsRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 3))
	for _, key := range [][]byte{nil, testKey} {
		for _, s := range []*sample.Sample{withDetails(smallSample(), 3, 4), withDetails(randomSample(rng, 200, 30), 12, 12)} {
			w := newTwin(t, key, 8, time.Second)
			e := NewEncoder(key)
			dgs := sendAll(t, e, 5, 1, s)
			done := 0
			for _, d := range dgs {
				ok, err := w.feed(d, node7Addr, t0)
				if err != nil {
					t.Fatal(err)
				}
				if ok {
					done++
				}
			}
			if done != 1 {
				t.Fatalf("%d samples completed, want 1", done)
			}
			equalSamples(t, &w.s1, s)

			// Status before details: the sample completes without them and
			// the late details are a duplicate of it.
			dgs = sendAll(t, e, 5, 2, s)
			for _, d := range dgs[1:] {
				w.feed(d, node7Addr, t0)
			}
			if w.s1.Hostname != "" || len(w.s1.Disks) != 0 || len(w.s1.Filesystems) != 0 {
				t.Errorf("sample without its details kept the last ones: %q %v", w.s1.Hostname, w.s1.Filesystems)
			}
			if _, err := w.feed(dgs[0], node7Addr, t0); !errors.Is(err, ErrDuplicate) {
				t.Errorf("late details: %v, want a duplicate", err)
			}
		}
	}
}

// A sender of the first release of v1 sends no details: its samples are
// taken as ever, without hostname, disks or filesystems.
func TestSamplesWithoutDetailsAreAccepted(t *testing.T) {
	w := newTwin(t, nil, 8, time.Second)
	// A datagram captured from the encoder of main before details existed
	// (smallSample, node 5, seq 1, epoch 777).
	raw, err := os.ReadFile("testdata/status-before-details.hex")
	if err != nil {
		t.Fatal(err)
	}
	old, err := hex.DecodeString(strings.TrimSpace(string(raw)))
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := w.feed(old, node7Addr, t0); !ok || err != nil {
		t.Fatalf("old datagram: %v, %v", ok, err)
	}
	equalSamples(t, &w.s1, smallSample())
	e := NewEncoder(nil)
	e.Epoch = 777
	if again := encode(t, e, 5, 1, smallSample())[0]; string(again) != string(old) {
		t.Error("today's encoder no longer writes the old datagram byte for byte")
	}
	for seq := uint32(2); seq <= 4; seq++ {
		ok, err := w.feed(encode(t, e, 5, seq, smallSample())[0], node7Addr, t0)
		if !ok || err != nil {
			t.Fatalf("seq %d: %v, %v", seq, ok, err)
		}
		equalSamples(t, &w.s1, smallSample())
	}
	// A status datagram is byte for byte what it was: details do not
	// change it.
	with := encode(t, e, 5, 9, withDetails(smallSample(), 2, 2))[0]
	without := encode(t, e, 5, 9, smallSample())[0]
	if string(with) != string(without) {
		t.Error("the details changed the status datagram")
	}
}

// What an older receiver does with details is what any receiver does
// with a kind it does not know: drop that datagram as malformed and take
// the status parts all the same.
func TestUnknownKindLeavesStatusIntact(t *testing.T) {
	e := NewEncoder(nil)
	dgs := sendAll(t, e, 5, 1, withDetails(smallSample(), 1, 1))
	future := append([]byte(nil), dgs[0]...)
	future[KindOffset] = 4
	w := newTwin(t, nil, 8, time.Second)
	if _, err := w.feed(future, node7Addr, t0); !errors.Is(err, ErrMalformed) {
		t.Fatalf("unknown kind: %v, want malformed", err)
	}
	if ok, err := w.feed(dgs[1], node7Addr, t0); !ok || err != nil {
		t.Fatalf("status after an unknown kind: %v, %v", ok, err)
	}
}

func TestDetailsBounded(t *testing.T) {
	e := NewEncoder(testKey)
	s := withDetails(smallSample(), sample.MaxDisks, sample.MaxFilesystems)
	d, cut := e.AppendDetails(nil, 1, 1, s)
	if len(d) > MaxDatagram || cut == 0 {
		t.Fatalf("%d bytes, %d cut: want one datagram and some left out", len(d), cut)
	}
	p, err := NewParser(testKey).Parse(d)
	if err != nil || p.Kind != KindDetails {
		t.Fatal(p.Kind, err)
	}
	// Counts beyond the limits or beyond the datagram are refused.
	for _, mutate := range []func([]byte) []byte{
		func(b []byte) []byte { b[HeaderLen+1+len("node-17.cluster")] = 0x7f; return b }, // 127 disks
		func(b []byte) []byte { return b[:len(b)-1] },
		func(b []byte) []byte { return append(b, 0) },
	} {
		raw, _ := NewEncoder(nil).AppendDetails(nil, 1, 1, withDetails(smallSample(), 2, 2))
		if _, err := NewParser(nil).Parse(mutate(raw)); err == nil {
			t.Error("damaged details accepted")
		}
	}
}
