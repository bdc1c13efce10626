package shm

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/hoststat/hoststat/internal/netlab"
	"github.com/hoststat/hoststat/telemetry/sample"
)

// The attacks of issue 8 on the table, from the network (node numbers) and
// from local users (the shm directory, the lock, the file itself).

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Size()
}

// One status packet for node 1048575 made the table 1.4 GB: the index was
// sized by the largest node number. It follows the nodes present now.
func TestSparseNodeNumberKeepsTableSmall(t *testing.T) {
	dir := t.TempDir()
	w := create(t, dir, WriterOptions{})
	defer w.Close()
	if err := putCounter(w, MaxNodes-1, 1, 4, 3); err != nil {
		t.Fatal(err)
	}
	size := func() int64 { return fileSize(t, w.Path()) }
	if s := size(); s > 256<<10 {
		t.Errorf("one node numbered %d makes a %d-byte table; want ≤ 256 KiB", MaxNodes-1, s)
	}
	// One node in each of 64 distant blocks: one 4 KiB index leaf each.
	for i := range 64 {
		if err := putCounter(w, i*16381, uint64(i), 4, 3); err != nil {
			t.Fatal(err)
		}
	}
	if s := size(); s > 1<<20 {
		t.Errorf("65 scattered nodes make a %d-byte table; want ≤ 1 MiB", s)
	}
	r := openReader(t, dir)
	nodes, err := r.Nodes(nil)
	if err != nil || len(nodes) != 65 || nodes[0] != 0 || nodes[64] != MaxNodes-1 {
		t.Fatalf("Nodes = %v (%d), %v", nodes, len(nodes), err)
	}
	var rec Record
	for _, n := range nodes {
		if ok, err := r.Read(n, &rec); !ok || err != nil || rec.Node != n || checkCounter(&rec, 4, 3) != nil {
			t.Errorf("node %d: %v %v %v", n, ok, err, checkCounter(&rec, 4, 3))
		}
	}
	if info := r.Info(); info.Nodes != 65 || info.NodeLimit != MaxNodes {
		t.Errorf("Info = %+v", info)
	}
}

// MaxNodes bounds the nodes held; a forgotten node's room is reused.
func TestMaxNodesBoundsTable(t *testing.T) {
	dir := t.TempDir()
	w := create(t, dir, WriterOptions{InitialNodes: 2, MaxNodes: 3})
	defer w.Close()
	for _, n := range []int{10, 2000, 900000} {
		if err := putCounter(w, n, 1, 1, 1); err != nil {
			t.Fatal(err)
		}
	}
	err := putCounter(w, 5, 1, 1, 1)
	if !errors.Is(err, ErrTableFull) || !strings.Contains(err.Error(), "node 5") {
		t.Fatalf("Put of a 4th node = %v; want ErrTableFull naming it", err)
	}
	if err := putCounter(w, 2000, 2, 1, 1); err != nil {
		t.Errorf("known node refused when full: %v", err)
	}
	w.Remove(2000)
	st, _ := os.Stat(w.Path())
	gen := openReader(t, dir).Info().Generation
	if err := putCounter(w, 5, 1, 1, 1); err != nil {
		t.Fatalf("Put after Remove: %v", err)
	}
	r := openReader(t, dir)
	if st2, _ := os.Stat(w.Path()); st2.Size() != st.Size() || r.Info().Generation != gen {
		t.Errorf("the freed record was not reused: %d → %d bytes", st.Size(), st2.Size())
	}
	if nodes, _ := r.Nodes(nil); len(nodes) != 3 || nodes[0] != 5 || nodes[1] != 10 || nodes[2] != 900000 {
		t.Errorf("Nodes = %v", nodes)
	}
	if _, ok, err := r.Summary(2000); ok || err != nil {
		t.Errorf("removed node still there: %v %v", ok, err)
	}
}

// Any reader could flock the table file, and recvstats then refused to
// start. The writer locks a file readers cannot open.
func TestReaderLockDoesNotBlockWriter(t *testing.T) {
	dir := t.TempDir()
	w := create(t, dir, WriterOptions{})
	putCounter(w, 3, 1, 1, 1)
	w.Close()
	f, err := os.Open(filepath.Join(dir, FileName))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		t.Fatal(err)
	}
	w2, err := Create(dir, WriterOptions{Logger: quiet})
	if err != nil {
		t.Fatalf("a reader's lock on the table stops the writer: %v", err)
	}
	defer w2.Close()
	if len(w2.Nodes()) != 1 {
		t.Errorf("table not reused: %v", w2.Nodes())
	}
	st, err := os.Lstat(filepath.Join(dir, LockName))
	if err != nil || st.Mode() != 0o600 {
		t.Errorf("lock file: %v %v; want a 0600 file", st.Mode(), err)
	}

	// A lock file of ours that others could open (an older version, a
	// umask) may be held open by a reader: it is made anew, not trusted.
	w2.Close()
	lock := filepath.Join(dir, LockName)
	os.Chmod(lock, 0o644)
	lf, err := os.Open(lock)
	if err != nil {
		t.Fatal(err)
	}
	defer lf.Close()
	if err := unix.Flock(int(lf.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		t.Fatal(err)
	}
	w3, err := Create(dir, WriterOptions{Logger: quiet})
	if err != nil {
		t.Fatalf("a reader's lock on a readable lock file stops the writer: %v", err)
	}
	w3.Close()
	if st, err := os.Lstat(lock); err != nil || st.Mode() != 0o600 {
		t.Errorf("lock file now %v %v; want 0600", st.Mode(), err)
	}
}

// In a world-writable (sticky) shm directory, a table file another user
// made is never reused, read or written: root recvstats replaced it with
// its own. So are symlinks, files others can write and foreign lock files.
func TestForeignFilesInSharedDir(t *testing.T) {
	netlab.RequireRoot(t)
	const nobody = 65534
	dir := sharedDir(t)
	path := filepath.Join(dir, FileName)

	// Another user's table holding forged figures for node 5.
	other := t.TempDir()
	w := create(t, other, WriterOptions{})
	putCounter(w, 5, 666, 1, 1)
	w.Close()
	forged, _ := os.ReadFile(w.Path())
	plant := func(mode os.FileMode, uid int) {
		t.Helper()
		os.Remove(path)
		if err := os.WriteFile(path, forged, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(path, uid, uid); err != nil {
			t.Fatal(err)
		}
	}
	check := func(what string) {
		t.Helper()
		w, err := Create(dir, WriterOptions{Logger: quiet})
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		defer w.Close()
		if got := w.Nodes(); len(got) != 0 {
			t.Errorf("%s: the writer adopted it: nodes %v", what, got)
		}
		var st unix.Stat_t
		if err := unix.Lstat(path, &st); err != nil || st.Uid != 0 || st.Mode&unix.S_IFMT != unix.S_IFREG || st.Mode&0o7777 != 0o644 {
			t.Errorf("%s: table now uid %d mode %o, %v; want root's regular 0644 file", what, st.Uid, st.Mode, err)
		}
	}
	// A lock file of another user's, with a lock held on it, too.
	lock := filepath.Join(dir, LockName)
	if err := os.WriteFile(lock, nil, 0o666); err != nil {
		t.Fatal(err)
	}
	os.Chown(lock, nobody, nobody)
	lf, _ := os.Open(lock)
	defer lf.Close()
	unix.Flock(int(lf.Fd()), unix.LOCK_EX)

	plant(0o644, nobody)
	check("another user's table")
	if b, _ := os.ReadFile(w.Path()); !bytes.Equal(b, forged) {
		t.Error("the foreign file was written to")
	}
	var st unix.Stat_t
	if unix.Lstat(lock, &st) != nil || st.Uid != 0 || st.Mode&0o777 != 0o600 {
		t.Errorf("lock file uid %d mode %o; want root's 0600", st.Uid, st.Mode&0o777)
	}

	plant(0o666, 0)
	check("our table, writable by all")

	// A symlink to a table elsewhere (which must not be changed).
	victim := filepath.Join(other, FileName)
	os.Remove(path)
	if err := os.Symlink(victim, path); err != nil {
		t.Fatal(err)
	}
	check("a symlink")
	if b, _ := os.ReadFile(victim); !bytes.Equal(b, forged) {
		t.Error("the symlink's target was written to")
	}

	// Leftovers of other users are not ours to remove.
	tmp := filepath.Join(dir, ".beostat-123.tmp")
	os.WriteFile(tmp, nil, 0o644)
	os.Chown(tmp, nobody, nobody)
	check("a foreign temporary file")
	if _, err := os.Lstat(tmp); err != nil {
		t.Errorf("another user's file removed: %v", err)
	}

	// A directory anyone may write without the sticky bit: anyone could
	// rename our table away. Refused.
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	if _, err := Create(dir, WriterOptions{Logger: quiet}); err == nil || !strings.Contains(err.Error(), "sticky") {
		t.Errorf("Create in a 0777 directory = %v", err)
	}
}

// A slot offset of 2^40 in a table crashed the writer that reopened it
// (slice bounds out of range). Every offset is checked on reopen: a bad
// table is replaced, never a panic.
func TestTamperedOffsetsNoPanic(t *testing.T) {
	cases := []struct {
		name  string
		field int
		width int
		value uint64
	}{
		{"slot offset 2^40", rDataOff, 8, 1 << 40},
		{"slot capacity past the end", rDataCap, 4, 1 << 31},
		{"CPU count", rCPUs, 4, 1 << 30},
		{"record of another node", rNode, 4, 9},
		{"leaf word out of range", -1, 4, 1 << 30},
		{"directory word out of range", -2, 4, 1 << 20},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			w := create(t, dir, WriterOptions{})
			// No CPUs or devices: a slot of 0 bytes, whose offset the old
			// writer never checked.
			empty := &sample.Sample{Time: base, BootID: [16]byte{1}}
			w.Put(7, addrOf(7), base, empty)
			putCounter(w, 8, 1, 2, 2)
			off := w.g.record(w.lookup(7)) + c.field
			switch c.field {
			case -1:
				off = leafWord(0, 7)
			case -2:
				off = dirWord(7)
			}
			w.Close()
			f, err := os.OpenFile(w.Path(), os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			var b [8]byte
			le.PutUint64(b[:], c.value)
			f.WriteAt(b[:c.width], int64(off))
			f.Close()

			w2, err := Create(dir, WriterOptions{Logger: quiet})
			if err != nil {
				t.Fatal(err)
			}
			defer w2.Close()
			if got := w2.Nodes(); len(got) != 0 {
				t.Errorf("tampered table adopted: %v", got)
			}
			empty.Time = base.Add(1)
			if err := w2.Put(7, addrOf(7), base, empty); err != nil {
				t.Fatal(err)
			}
			if err := putCounter(w2, 8, 2, 2, 2); err != nil {
				t.Fatal(err)
			}
			r := openReader(t, dir)
			var rec Record
			if ok, err := r.Read(8, &rec); !ok || err != nil || checkCounter(&rec, 2, 2) != nil {
				t.Errorf("Read(8) = %v %v", ok, err)
			}
		})
	}
}

// Forgotten nodes give their room back: the table shrinks with them.
func TestTableShrinksWithNodes(t *testing.T) {
	dir := t.TempDir()
	w := create(t, dir, WriterOptions{InitialNodes: 16})
	defer w.Close()
	for n := range 4000 {
		if err := putCounter(w, n*200, uint64(n), 4, 3); err != nil {
			t.Fatal(err)
		}
	}
	size := func() int64 { return fileSize(t, w.Path()) }
	big := size()
	r := openReader(t, dir)
	for n := 10; n < 4000; n++ {
		w.Remove(n * 200)
	}
	if s := size(); s > big/20 {
		t.Errorf("4000 nodes took %d bytes; 10 left take %d", big, s)
	}
	nodes, err := r.Nodes(nil)
	if err != nil || len(nodes) != 10 || nodes[9] != 1800 {
		t.Fatalf("reader after shrinking: %v %v", nodes, err)
	}
	var rec Record
	for _, n := range nodes {
		if ok, err := r.Read(n, &rec); !ok || err != nil || checkCounter(&rec, 4, 3) != nil || rec.Sample.Memory.Total != uint64(n/200) {
			t.Errorf("node %d after shrinking: %v %v", n, ok, err)
		}
	}
	// And grows again.
	for n := range 100 {
		if err := putCounter(w, MaxNodes-1-n, 1, 1, 1); err != nil {
			t.Fatal(err)
		}
	}
	if nodes, _ := r.Nodes(nil); len(nodes) != 110 {
		t.Errorf("%d nodes after growing again", len(nodes))
	}
}

// sharedDir is a shm directory like /tmp: world-writable with the sticky
// bit, where other users can make files.
func sharedDir(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "shm")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o777|os.ModeSticky); err != nil {
		t.Fatal(err)
	}
	return dir
}
