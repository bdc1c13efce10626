package shm

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func openEventsForTest(t *testing.T, dir string, kept int) (*Writer, *EventWriter) {
	t.Helper()
	w, err := Create(dir, WriterOptions{InitialNodes: 4})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	ew, err := w.OpenEvents(kept)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ew.Close() })
	return w, ew
}

func openEventReader(t *testing.T, dir string) *EventReader {
	t.Helper()
	r, err := OpenEventReader(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// TestEventsRing: a reader opened before the events sees each once, in
// order, with node, address and kind; one that falls more than the ring
// behind is told how many it missed; Back shows recent ones.
func TestEventsRing(t *testing.T) {
	dir := t.TempDir()
	_, ew := openEventsForTest(t, dir, 4)
	r := openEventReader(t, dir)
	t0 := time.Unix(1700000000, 123)
	want := []Event{
		{Time: t0, Node: 3, Addr: netip.MustParseAddrPort("10.0.0.3:3040"), Kind: EventUp},
		{Time: t0.Add(time.Second), Node: 7, Addr: netip.MustParseAddrPort("[fd00::7]:99"), Kind: EventReboot},
		{Time: t0.Add(2 * time.Second), Node: 3, Kind: EventDown},
	}
	for _, e := range want {
		if err := ew.Append(e); err != nil {
			t.Fatal(err)
		}
	}
	got, missed, err := r.Poll(nil)
	if err != nil || missed != 0 || len(got) != len(want) {
		t.Fatalf("Poll: %v missed %d err %v, want %v", got, missed, err, want)
	}
	for i := range want {
		if !got[i].Time.Equal(want[i].Time) || got[i].Node != want[i].Node || got[i].Addr != want[i].Addr || got[i].Kind != want[i].Kind {
			t.Errorf("event %d: %+v, want %+v", i, got[i], want[i])
		}
	}
	if got, _, _ := r.Poll(nil); len(got) != 0 {
		t.Errorf("second Poll returned %v again", got)
	}
	for i := range 10 {
		ew.Append(Event{Time: t0, Node: i, Kind: EventForgotten})
	}
	got, missed, err = r.Poll(nil)
	if err != nil || missed != 6 || len(got) != 4 || got[0].Node != 6 || got[3].Node != 9 {
		t.Errorf("10 events into a ring of 4: %v, missed %d, err %v; want nodes 6..9, 6 missed", got, missed, err)
	}
	r.Back(2)
	if got, _, _ := r.Poll(nil); len(got) != 2 || got[0].Node != 8 {
		t.Errorf("Back(2): %v, want nodes 8 and 9", got)
	}
}

// TestEventsReplaced: a new writer makes a new events file; a reader of
// the old one moves to it and reads its events.
func TestEventsReplaced(t *testing.T) {
	dir := t.TempDir()
	w, ew := openEventsForTest(t, dir, 8)
	r := openEventReader(t, dir)
	ew.Append(Event{Time: time.Unix(1, 0), Node: 1, Kind: EventUp})
	ew.Close()
	w.Close()
	_, ew2 := openEventsForTest(t, dir, 8)
	ew2.Append(Event{Time: time.Unix(2, 0), Node: 2, Kind: EventDown})
	got, _, err := r.Poll(nil)
	if err != nil || len(got) != 1 || got[0].Node != 2 {
		t.Errorf("after a new writer: %v, %v; want node 2's down (the old file retired)", got, err)
	}
}

// TestEventsDamaged: a damaged event is an error naming the file, never
// a panic.
func TestEventsDamaged(t *testing.T) {
	dir := t.TempDir()
	_, ew := openEventsForTest(t, dir, 4)
	r := openEventReader(t, dir)
	ew.Append(Event{Time: time.Unix(1, 0), Node: 1, Kind: EventUp})
	ew.m[eventsHeaderSize+vKind] = 99
	if _, _, err := r.Poll(nil); !errors.Is(err, ErrCorrupt) {
		t.Errorf("kind 99: %v, want ErrCorrupt", err)
	}
}

// FuzzEventsFile: any bytes as an events file give events or an error,
// never a panic.
func FuzzEventsFile(f *testing.F) {
	dir := f.TempDir()
	w, err := Create(dir, WriterOptions{InitialNodes: 4})
	if err != nil {
		f.Fatal(err)
	}
	ew, err := w.OpenEvents(4)
	if err != nil {
		f.Fatal(err)
	}
	ew.Append(Event{Time: time.Unix(1, 0), Node: 1, Addr: netip.MustParseAddrPort("10.0.0.1:1"), Kind: EventUp})
	seed, _ := os.ReadFile(filepath.Join(dir, EventsFileName))
	ew.Close()
	w.Close()
	f.Add(seed)
	f.Add(make([]byte, 128)) // bad magic: once read after its unmap
	f.Fuzz(func(t *testing.T, b []byte) {
		d := t.TempDir()
		if err := os.WriteFile(filepath.Join(d, EventsFileName), b, 0o644); err != nil {
			t.Fatal(err)
		}
		r, err := OpenEventReader(d)
		if err != nil {
			return
		}
		defer r.Close()
		r.Back(MaxEventsKept)
		r.Poll(nil)
	})
}
