package shm

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The fuzz targets work on anonymous mappings, not files: no directory,
// file or mmap of a file per execution, and no waiting, so an input covers
// the same code every run. (Before, each execution wrote a file in a new
// directory and timing changed the code covered, so the fuzzer spent its
// time minimising 12 KiB inputs that did not reproduce: about 20
// executions in 30 s.) An input is a list of patches to a valid table, so
// inputs stay small and every field is in reach. OpenReader's and
// Create's file handling is tested in shm_test.go.

// anonMap is a page-aligned writable copy of b, as a file mapping would be.
func anonMap(t testing.TB, b []byte) []byte {
	m, err := unix.Mmap(-1, 0, max(len(b), 1), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	if err != nil {
		t.Fatal(err)
	}
	copy(m, b)
	return m[:len(b)]
}

// validTable returns the bytes of a small real table: two nodes in a
// 20 KiB file (the fuzzer slows down on big inputs).
func validTable(f *testing.F) []byte {
	g := newGeometry(1, 2, 1, 4096)
	w := &Writer{m: anonMap(f, make([]byte, g.fileSize)), g: g, free: map[uint32][]uint64{}, log: quiet, max: 2}
	encodeHeader(w.m, g)
	putCounter(w, 0, 1, 2, 2)
	putCounter(w, 1030, 3, 1, 1)
	if w.g != g {
		f.Fatal("seed table grew")
	}
	return append([]byte(nil), w.m...)
}

// tamper is a copy of the table base with the fuzzer's patches applied:
// each 12 bytes of p are an offset (modulo the size) and 8 bytes to write
// there; then cut bytes are cut off the end.
func tamper(base, p []byte, cut uint16) []byte {
	b := append([]byte(nil), base...)
	for ; len(p) >= 12; p = p[12:] {
		off := int(le.Uint32(p) % uint32(len(b)))
		copy(b[off:], p[4:12])
	}
	return b[:len(b)-int(cut)%len(b)]
}

// patch is one patch for tamper: v written at off.
func patch(off int, v uint64) []byte {
	var b [12]byte
	le.PutUint32(b[:], uint32(off))
	le.PutUint64(b[4:], v)
	return b[:]
}

// fixHeader makes a fuzzed header self-consistent (size and checksum) so
// the fuzzer gets past them to the checks behind.
func fixHeader(b []byte) {
	if len(b) < headerSize {
		return
	}
	le.PutUint64(b[hFileSize:], uint64(len(b)))
	le.PutUint32(b[hCRC:], headerCRC(b))
}

// A reader given any table returns an error or consistent data: never a
// panic, never a read outside the mapping.
func FuzzOpenReader(f *testing.F) {
	good := validTable(f)
	rec0 := int(newGeometry(1, 2, 1, 4096).recordOffset)
	f.Add([]byte{}, uint16(0), false)
	f.Add([]byte{}, uint16(len(good)-headerSize), true)
	f.Add([]byte{}, uint16(1), false)
	f.Add(patch(rec0+rDataOff, 1<<40), uint16(0), false)
	f.Add(patch(rec0+rSeq, 1), uint16(0), false)
	f.Add(patch(dirOffset, 7), uint16(0), false)
	f.Add(patch(hCapacity, 1<<20), uint16(0), true)
	readWait, liveWriterWait = 0, 0
	f.Fuzz(func(t *testing.T, p []byte, cut uint16, fix bool) {
		b := tamper(good, p, cut)
		if fix {
			fixHeader(b)
		}
		g, err := decodeHeader(b, int64(len(b)))
		if err != nil {
			return
		}
		m := anonMap(t, b)
		defer unix.Munmap(m)
		r := &Reader{path: "fuzz", m: m, g: g}
		info := r.Info()
		if info.Capacity != r.Capacity() || info.Nodes > info.Capacity || info.NodeLimit > MaxNodes {
			t.Fatalf("Info %+v, Capacity %d", info, r.Capacity())
		}
		nodes, err := r.Nodes(nil)
		if err != nil {
			return
		}
		var rec Record
		for _, n := range nodes[:min(len(nodes), 64)] {
			s, ok, err := r.Summary(n)
			if ok && (err != nil || s.Node != n) {
				t.Fatalf("Summary(%d) = %+v %v %v", n, s, ok, err)
			}
			ok, err = r.Read(n, &rec)
			if ok && (rec.Node != n || len(rec.Sample.CPUs) != len(rec.CPUPercent) || len(rec.Sample.Net) != len(rec.NetRates)) {
				t.Fatalf("Read(%d): node %d, slices disagree: %d/%d CPUs, %d/%d devices", n, rec.Node,
					len(rec.Sample.CPUs), len(rec.CPUPercent), len(rec.Sample.Net), len(rec.NetRates))
			}
		}
	})
}

// A writer taking over any table adopts it only when every offset in it
// is sound, and then works: never a panic, never a write outside the
// mapping.
func FuzzCreateOverFile(f *testing.F) {
	good := validTable(f)
	rec0 := int(newGeometry(1, 2, 1, 4096).recordOffset)
	f.Add([]byte{}, uint16(0), false)
	f.Add([]byte{}, uint16(len(good)-headerSize-100), true)
	f.Add(patch(rec0+rDataOff, 1<<40), uint16(0), false)
	f.Add(append(patch(rec0+rSeq, 1), patch(rec0+rCPUs, 1<<20)...), uint16(0), false)
	f.Add(patch(leavesOffset+4, 2), uint16(0), false)
	dir := f.TempDir() // for re-layouts; one per process
	f.Fuzz(func(t *testing.T, p []byte, cut uint16, fix bool) {
		b := tamper(good, p, cut)
		if fix {
			fixHeader(b)
		}
		if len(b) < headerSize {
			return
		}
		w := &Writer{dir: dir, path: filepath.Join(dir, FileName), log: quiet, max: DefaultMaxNodes, free: map[uint32][]uint64{}}
		m := anonMap(t, b)
		if err := w.adoptMapping(m); err != nil {
			unix.Munmap(m)
			return
		}
		defer w.Close()
		for _, a := range w.Nodes() {
			if err := putCounter(w, a.Node, 5, 3, 2); err != nil {
				t.Fatal(err)
			}
		}
		for _, n := range []int{0, 1, 2, 2000} {
			if err := putCounter(w, n, 7, 2, 1); err != nil {
				t.Fatal(err)
			}
		}
		r := &Reader{path: w.path, m: w.m, g: w.g}
		var rec Record
		if ok, err := r.Read(2000, &rec); !ok || err != nil || checkCounter(&rec, 2, 1) != nil {
			t.Fatalf("Read(2000) = %v %v %v", ok, err, checkCounter(&rec, 2, 1))
		}
	})
}

// validHistory returns the bytes of a small real history file: two node
// slots of 8 full-resolution and 6 one-minute points, both used, one
// across a few minutes.
func validHistory(f *testing.F) []byte {
	g := newHistoryGeometry(1, HistoryOptions{Nodes: 2, Fine: 8, Coarse: 6})
	h := &HistoryWriter{m: anonMap(f, make([]byte, g.fileSize)), g: g, slots: map[int]int{}, reserved: g.capacity}
	encodeHistoryHeader(h.m, g)
	store32(h.m, yReserved, uint32(g.capacity))
	start := time.Unix(1_800_000_000, 0)
	for i := range 12 {
		if err := h.Append(3, start.Add(time.Duration(i)*40*time.Second), figuresAt(i)); err != nil {
			f.Fatal(err)
		}
	}
	if err := h.Append(0, start, Figures{}); err != nil {
		f.Fatal(err)
	}
	return append([]byte(nil), h.m...)
}

// tamperHistory is tamper for a history file; fix makes the header's
// size and checksum agree with the result.
func tamperHistory(good, p []byte, cut uint16, fix bool) []byte {
	b := tamper(good, p, cut)
	if fix && len(b) >= historyHeaderSize {
		le.PutUint64(b[yFileSize:], uint64(len(b)))
		le.PutUint32(b[yCRC:], historyCRC(b))
	}
	return b
}

// A history reader given any file returns an error or points that fit
// its rings: never a panic, never a read outside the mapping.
func FuzzOpenHistory(f *testing.F) {
	good := validHistory(f)
	slot1 := newHistoryGeometry(1, HistoryOptions{Nodes: 2, Fine: 8, Coarse: 6}).slot(1)
	f.Add([]byte{}, uint16(0), false)
	f.Add([]byte{}, uint16(1), true)
	f.Add(patch(yFine, 1<<30), uint16(0), true)
	f.Add(patch(slot1+sCount, 1<<32-1), uint16(0), false)
	f.Add(patch(slot1+sMinute, 1<<63), uint16(0), false)
	f.Add(patch(slot1+sSeq, 1), uint16(0), false)
	readWait, liveWriterWait = 0, 0
	f.Fuzz(func(t *testing.T, p []byte, cut uint16, fix bool) {
		b := tamperHistory(good, p, cut, fix)
		g, err := decodeHistoryHeader(b, int64(len(b)))
		if err != nil {
			return
		}
		m := anonMap(t, b)
		defer unix.Munmap(m)
		r := &HistoryReader{path: "fuzz", m: m, g: g}
		for _, n := range []int{0, 2, 3, -1} {
			minutes, fine, ok, err := r.Read(n, time.Time{})
			if ok && err == nil && (len(fine) > g.fine || len(minutes) > g.coarse) {
				t.Fatalf("node %d: %d points, %d minutes from rings of %d and %d", n, len(fine), len(minutes), g.fine, g.coarse)
			}
		}
	})
}

// A writer restarted over any history file adopts it only when it is
// sound, and then keeps working through growth and released slots: never
// a panic, never another node's points.
func FuzzHistoryOverFile(f *testing.F) {
	good := validHistory(f)
	slot1 := newHistoryGeometry(1, HistoryOptions{Nodes: 2, Fine: 8, Coarse: 6}).slot(1)
	f.Add([]byte{}, uint16(0), false)
	f.Add(patch(yCapacity, 1), uint16(0), true)
	f.Add(patch(slot1+sNode, 1), uint16(0), false) // two slots for one node
	f.Add(patch(slot1+sNode, 1<<31), uint16(0), false)
	f.Add(patch(slot1+sSeq, 1), uint16(0), false)
	f.Add(patch(slot1+sCount, 1<<32-1), uint16(0), false)
	dir := f.TempDir() // for re-layouts; one per process
	readWait, liveWriterWait = 0, 0
	f.Fuzz(func(t *testing.T, p []byte, cut uint16, fix bool) {
		b := tamperHistory(good, p, cut, fix)
		path := filepath.Join(dir, HistoryFileName)
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
		fl, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		h := &HistoryWriter{dir: dir, path: path, log: quiet, initial: 1, max: 6, slots: map[int]int{}}
		if err := h.reuse(fl, newHistoryGeometry(0, HistoryOptions{Nodes: 1, Fine: 8, Coarse: 6})); err != nil {
			fl.Close()
			return
		}
		defer h.Close()
		start := time.Unix(1_900_000_000, 0)
		for n := range h.slots {
			if n != 3 {
				h.Release(n)
			}
		}
		for i, n := range []int{20, 21, 22, 23, 24} {
			if err := h.Append(n, start.Add(time.Duration(i)*time.Second), Figures{Up: true, CPUPercent: float64(n)}); err != nil {
				t.Fatalf("node %d: %v", n, err)
			}
		}
		h.Release(21)
		r := &HistoryReader{path: path, m: h.m, g: h.g}
		for _, n := range []int{20, 22, 23, 24} {
			_, fine, ok, err := r.Read(n, time.Time{})
			if err != nil || !ok || len(fine) != 1 || fine[0].CPUPercent != float64(n) {
				t.Fatalf("node %d: %v %v %+v", n, ok, err, fine)
			}
		}
		if _, _, ok, _ := r.Read(21, time.Time{}); ok {
			t.Fatal("released node 21 still has history")
		}
	})
}
