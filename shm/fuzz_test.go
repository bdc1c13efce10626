package shm

import (
	"os"
	"path/filepath"
	"testing"
)

// validTable returns the bytes of a small real table: two nodes in a
// 12 KiB file (the fuzzer slows down on big inputs).
func validTable(f *testing.F) []byte {
	g := newGeometry(1, 2, 4096)
	w := &Writer{m: make([]byte, g.fileSize), g: g, free: map[uint32][]uint64{}, log: quiet}
	encodeHeader(w.m, g)
	putCounter(w, 0, 1, 2, 2)
	putCounter(w, 1, 3, 1, 1)
	if w.g != g {
		f.Fatal("seed table grew")
	}
	return w.m
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

// A reader given any file returns an error or consistent data: never a
// panic, never a read outside the mapping.
func FuzzOpenReader(f *testing.F) {
	good := validTable(f)
	f.Add(good, false)
	f.Add(good[:headerSize], true)
	f.Add(good[:len(good)-1], false)
	f.Add([]byte{}, false)
	f.Add([]byte("HSTATSHM\x01\x00\x00\x00"), true)
	// No waiting for odd records: a deterministic retry count keeps
	// coverage stable from run to run.
	readWait, liveWriterWait = 0, 0
	f.Fuzz(func(t *testing.T, b []byte, fix bool) {
		if fix {
			fixHeader(b)
		}
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, FileName), b, 0o644); err != nil {
			t.Fatal(err)
		}
		r, err := OpenReader(dir)
		if err != nil {
			return
		}
		defer r.Close()
		info := r.Info()
		if info.Capacity != r.Capacity() || info.NodeLimit > info.Capacity {
			t.Fatalf("Info %+v, Capacity %d", info, r.Capacity())
		}
		var rec Record
		for n := range min(r.Capacity(), 64) {
			s, ok, err := r.Summary(n)
			if ok && (err != nil || s.Node != n) {
				t.Fatalf("Summary(%d) = %+v %v %v", n, s, ok, err)
			}
			ok, err = r.Read(n, &rec)
			if ok && (len(rec.Sample.CPUs) != len(rec.CPUPercent) || len(rec.Sample.Net) != len(rec.NetRates)) {
				t.Fatalf("Read(%d): slices disagree: %d/%d CPUs, %d/%d devices", n,
					len(rec.Sample.CPUs), len(rec.CPUPercent), len(rec.Sample.Net), len(rec.NetRates))
			}
		}
	})
}

// A writer started over any file reuses it only when it is sound, and
// then works: never a panic, never a write outside the mapping.
func FuzzCreateOverFile(f *testing.F) {
	good := validTable(f)
	f.Add(good, false)
	f.Add(good[:headerSize+100], true)
	f.Add([]byte("garbage"), false)
	f.Fuzz(func(t *testing.T, b []byte, fix bool) {
		if fix {
			fixHeader(b)
		}
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, FileName), b, 0o644); err != nil {
			t.Fatal(err)
		}
		w, err := Create(dir, WriterOptions{Logger: quiet})
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		for _, a := range w.Nodes() {
			if err := putCounter(w, a.Node, 5, 3, 2); err != nil {
				t.Fatal(err)
			}
		}
		for n := range 3 {
			if err := putCounter(w, n, 7, 2, 1); err != nil {
				t.Fatal(err)
			}
		}
		r, err := OpenReader(dir)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		var rec Record
		if ok, err := r.Read(2, &rec); !ok || err != nil || checkCounter(&rec, 2, 1) != nil {
			t.Fatalf("Read(2) = %v %v %v", ok, err, checkCounter(&rec, 2, 1))
		}
	})
}
