package nsm

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// damagedStoreImage builds a store big enough to have branch pages, leaf
// pages and several buckets, and returns the file's bytes.
func damagedStoreImage(t testing.TB) []byte { return storeImage(t, 600) }

// storeImage builds a store with n registrations and returns its pages in
// use (without the file's preallocated tail).
func storeImage(t testing.TB, n int) []byte {
	t.Helper()
	path := filepath.Join(t.TempDir(), "statd.db")
	s, err := OpenStore(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := StartCore(ctx, s, NewCore(CoreConfig{}), "boot-a", false, t0); err != nil {
		t.Fatal(err)
	}
	// Concurrent callers share commits: a few fsyncs, not 600, so fuzz
	// workers start quickly.
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		my := MyID{Name: "me", Prog: 100021, Vers: 4, Proc: 16}
		if i%3 == 0 {
			my.Vers = 3
		}
		wg.Go(func() {
			errs <- s.Monitor(ctx, reg(fmt.Sprintf("client-%04d.cluster.example.org", i), my, byte(i)))
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	simulateCrash(t, s, t0)
	s.Close()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	ps := os.Getpagesize()
	hwm := max(binary.NativeEndian.Uint64(b[bPageHeader+40:]), binary.NativeEndian.Uint64(b[ps+bPageHeader+40:]))
	return b[:min(len(b), int(hwm)*ps)]
}

// pagesOf lists the ids of the pages of the image with flags, from the
// page headers (page size 4096, as the test machine's).
func pagesOf(b []byte, flags uint16) []int {
	var ids []int
	ps := os.Getpagesize()
	for id := 2; (id+1)*ps <= len(b); id++ {
		p := b[id*ps:]
		if binary.NativeEndian.Uint64(p) == uint64(id) && binary.NativeEndian.Uint16(p[8:]) == flags {
			ids = append(ids, id)
		}
	}
	return ids
}

// resum recomputes a meta page's checksum after a deliberate change, so
// the damage is past the checksum and only the structure check sees it.
func resum(b []byte, page int) {
	m := b[page*os.Getpagesize()+bPageHeader:]
	h := fnv.New64a()
	h.Write(m[:bMetaSummed])
	binary.NativeEndian.PutUint64(m[bMetaSummed:], h.Sum64())
}

// useStore opens the file at path and reads everything a daemon reads at
// start; it reports the first error. A panic fails the test (and on old
// main crashed the daemon).
func useStore(path string) error {
	s, err := OpenStore(path)
	if err != nil {
		return err
	}
	defer s.Close()
	if _, err := s.Registrations(); err != nil {
		return err
	}
	if _, err := s.Owed(); err != nil {
		return err
	}
	if _, err := s.GaveUp(); err != nil {
		return err
	}
	_, err = StartCore(context.Background(), s, NewCore(CoreConfig{}), "boot-b", false, t0)
	return err
}

// TestDamagedStoresGiveErrors: eighteen kinds of damage to a store file
// give an error naming the file and what is wrong, never a panic or
// SIGBUS; the file is left as it was.
func TestDamagedStoresGiveErrors(t *testing.T) {
	img := damagedStoreImage(t)
	ps := os.Getpagesize()
	ne := binary.NativeEndian
	branches, leaves := pagesOf(img, bBranch), pagesOf(img, bLeaf)
	if len(branches) == 0 || len(leaves) < 2 {
		t.Fatalf("test store has %d branch and %d leaf pages; want some of each", len(branches), len(leaves))
	}
	br, lf := branches[0]*ps, leaves[len(leaves)/2]*ps
	hwm := func(b []byte) uint64 { return ne.Uint64(b[bPageHeader+40:]) }
	active := func(b []byte) int { // the meta page bbolt uses
		if ne.Uint64(b[ps+bPageHeader+48:]) > ne.Uint64(b[bPageHeader+48:]) {
			return 1
		}
		return 0
	}
	cases := []struct {
		name   string
		damage func(b []byte) []byte
		want   string
	}{
		{"zero length", func(b []byte) []byte { return nil }, "is empty"},
		{"truncated to 8 KiB", func(b []byte) []byte { return b[:8<<10] }, "too short"},
		{"truncated to half", func(b []byte) []byte { return b[:len(b)/2/ps*ps] }, "truncated"},
		{"truncated inside the pages in use", func(b []byte) []byte {
			return b[:int(hwm(b[active(b)*ps:]))*ps-ps/2]
		}, "truncated"},
		{"both meta pages flipped", func(b []byte) []byte { b[bPageHeader] ^= 1; b[ps+bPageHeader] ^= 1; return b }, "no valid meta page"},
		{"both meta checksums flipped", func(b []byte) []byte { b[bPageHeader+60] ^= 0x80; b[ps+bPageHeader+60] ^= 0x80; return b }, "checksum mismatch"},
		{"both meta page types bad", func(b []byte) []byte { b[8] = 0x02; b[ps+8] = 0x02; return b }, "not meta"},
		{"high-water mark past the file", func(b []byte) []byte {
			m := active(b)
			ne.PutUint64(b[m*ps+bPageHeader+40:], hwm(b[m*ps:])+1000)
			resum(b, m)
			return b
		}, "too short"},
		{"root beyond high-water mark", func(b []byte) []byte {
			m := active(b)
			ne.PutUint64(b[m*ps+bPageHeader+16:], hwm(b[m*ps:])+5)
			resum(b, m)
			b[(1-m)*ps+bPageHeader] ^= 1 // and the older meta unusable
			return b
		}, "no valid meta page"},
		{"branch page type bad", func(b []byte) []byte { ne.PutUint16(b[br+8:], 0x10); return b }, "type 0x10"},
		{"branch child is a meta page", func(b []byte) []byte { ne.PutUint64(b[br+bPageHeader+8:], 1); return b }, "page 1"},
		{"branch child past the end", func(b []byte) []byte { ne.PutUint64(b[br+bPageHeader+8:], 1<<40); return b }, "outside"},
		{"branch count too large", func(b []byte) []byte { ne.PutUint16(b[br+10:], 0xffff); return b }, "elements"},
		{"leaf count too large", func(b []byte) []byte { ne.PutUint16(b[lf+10:], 0xffff); return b }, "elements"},
		{"leaf element position wild", func(b []byte) []byte { ne.PutUint32(b[lf+bPageHeader+4:], 0x7fffffff); return b }, "outside the page"},
		{"leaf key size wild", func(b []byte) []byte { ne.PutUint32(b[lf+bPageHeader+8:], 0xfffffff0); return b }, "outside the page"},
		{"leaf header names another page", func(b []byte) []byte { ne.PutUint64(b[lf:], 3); return b }, "header of page 3"},
		{"leaf overflow wild", func(b []byte) []byte { ne.PutUint32(b[lf+12:], 0xffffff); return b }, "high-water mark"},
	}
	if len(cases) != 18 {
		t.Fatalf("%d cases", len(cases))
	}
	for _, c := range cases {
		t.Run(strings.ReplaceAll(c.name, " ", "_"), func(t *testing.T) {
			b := c.damage(append([]byte(nil), img...))
			path := filepath.Join(t.TempDir(), "statd.db")
			if err := os.WriteFile(path, b, 0o600); err != nil {
				t.Fatal(err)
			}
			err := useStore(path)
			if err == nil {
				t.Fatalf("a store with %s opened without error", c.name)
			}
			var de *DamageError
			if !errors.As(err, &de) || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %q; want a DamageError naming %s and saying %q", err, path, c.want)
			}
			if after, _ := os.ReadFile(path); string(after) != string(b) {
				t.Errorf("the damaged file was changed")
			}
		})
	}
}

// TestRandomBitFlipsNeverPanic flips single bits anywhere in a store: each
// copy either opens and reads, or gives an error; none panics.
func TestRandomBitFlipsNeverPanic(t *testing.T) {
	flips := 300
	if v, err := strconv.Atoi(os.Getenv("HOSTSTAT_FLIPS")); err == nil {
		flips = v
	}
	img := damagedStoreImage(t)
	rng := rand.New(rand.NewPCG(1, 2))
	dir := t.TempDir()
	errs := 0
	for i := range flips {
		b := append([]byte(nil), img...)
		// Half the flips land in the pages in use, where they matter.
		n := len(b)
		if i%2 == 0 {
			n = min(n, int(binary.NativeEndian.Uint64(b[bPageHeader+40:]))*os.Getpagesize())
		}
		bit := rng.IntN(n * 8)
		b[bit/8] ^= 1 << (bit % 8)
		path := filepath.Join(dir, fmt.Sprintf("flip-%d.db", i))
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := useStore(path); err != nil {
			errs++
			if !strings.Contains(err.Error(), path) {
				t.Errorf("flip of bit %d: error %q does not name the file", bit, err)
			}
		}
		os.Remove(path)
	}
	t.Logf("%d of %d flipped stores refused", errs, flips)
}

// TestStoreSymlinkNotFollowed: a symbolic link at the store's name is
// refused, and its target is neither created nor changed.
func TestStoreSymlinkNotFollowed(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "elsewhere")
	link := filepath.Join(dir, "statd.db")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	s, err := OpenStore(link)
	if err == nil {
		s.Close()
		t.Fatal("OpenStore followed a symbolic link")
	}
	if _, err := os.Lstat(target); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the link's target was created: %v", err)
	}
	os.WriteFile(target, []byte("precious"), 0o600)
	if s, err := OpenStore(link); err == nil {
		s.Close()
		t.Fatal("OpenStore followed a symbolic link to an existing file")
	}
	if b, _ := os.ReadFile(target); string(b) != "precious" {
		t.Errorf("the link's target changed: %q", b)
	}
}

// FuzzOpenStore opens arbitrary bytes as a store file and reads it as the
// daemon does: an error is fine, a panic is not. The seed is a small store
// (a few pages): the fuzzer minimizes interesting inputs, which takes
// minutes on a large one.
func FuzzOpenStore(f *testing.F) {
	img := storeImage(f, 20)
	f.Add(img)
	f.Add(img[:8<<10])
	f.Add([]byte{})
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, b []byte) {
		path := filepath.Join(dir, "fuzz.db")
		os.Remove(path)
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := useStore(path); err != nil && !strings.Contains(err.Error(), path) {
			t.Fatalf("error %q does not name the file", err)
		}
	})
}

// FuzzCheckBolt runs the structure check alone on arbitrary images, many
// times faster than FuzzOpenStore, so deep damage is reached.
func FuzzCheckBolt(f *testing.F) {
	img := storeImage(f, 100)
	f.Add(img)
	f.Add(img[:8<<10])
	f.Fuzz(func(t *testing.T, b []byte) {
		checkBolt(strings.NewReader(string(b)), int64(len(b)))
	})
}

// TestSalvageSkipsDamagedPages: from a store with one leaf page of
// registrations destroyed, SalvageStore still reads the state number and
// the hosts of every intact page.
func TestSalvageSkipsDamagedPages(t *testing.T) {
	img := damagedStoreImage(t)
	leaves := pagesOf(img, bLeaf)
	ps := os.Getpagesize()
	lf := leaves[len(leaves)/2] * ps
	binary.NativeEndian.PutUint16(img[lf+10:], 0xffff)
	path := filepath.Join(t.TempDir(), "statd.db")
	os.WriteFile(path, img, 0o600)
	if err := CheckStoreFile(path); err == nil {
		t.Fatal("the damage was not seen")
	}
	sv, err := SalvageStore(path)
	if err != nil {
		t.Fatal(err)
	}
	// damagedStoreImage ends with a simulated crash: state 3, all 600
	// hosts owed and registered, so each host is named twice and the lost
	// page costs none of them.
	if sv.State != 3 || sv.Skipped == 0 || len(sv.Owed) != 600 {
		t.Fatalf("salvaged state %d, %d hosts, %d skipped; want state 3 and all 600 hosts", sv.State, len(sv.Owed), sv.Skipped)
	}
	for _, h := range sv.Owed {
		if ValidateMonName(h) != nil || !strings.HasPrefix(h, "client-") {
			t.Fatalf("salvaged host %q", h)
		}
	}
}

// FuzzSalvage: salvaging arbitrary bytes never panics and returns only
// valid names.
func FuzzSalvage(f *testing.F) {
	img := storeImage(f, 100)
	f.Add(img)
	f.Fuzz(func(t *testing.T, b []byte) {
		var sv Salvage
		salvageBolt(strings.NewReader(string(b)), int64(len(b)), &sv)
		for _, h := range sv.Owed {
			if err := ValidateMonName(h); err != nil {
				t.Fatal(err)
			}
		}
	})
}

// TestStateFile: the state file round-trips, is replaced atomically, and
// is never read through a symbolic link.
func TestStateFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "statd.state")
	if _, ok, err := ReadStateFile(path); ok || err != nil {
		t.Fatalf("missing file: %v %v", ok, err)
	}
	for _, st := range []int32{1, 3, 2147483647} {
		if err := WriteStateFile(path, st); err != nil {
			t.Fatal(err)
		}
		if got, ok, err := ReadStateFile(path); got != st || !ok || err != nil {
			t.Fatalf("read %d %v %v; want %d", got, ok, err, st)
		}
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Fatalf("temporary files left: %v", ents)
	}
	os.WriteFile(path, []byte("123"), 0o600)
	if _, _, err := ReadStateFile(path); err == nil || !strings.Contains(err.Error(), "3 bytes, want 4") {
		t.Fatalf("short file: %v", err)
	}
	os.Remove(path)
	os.Symlink(filepath.Join(dir, "elsewhere"), path)
	if _, _, err := ReadStateFile(path); err == nil || !strings.Contains(err.Error(), "symbolic link") {
		t.Fatalf("symbolic link: %v", err)
	}
	// Writing replaces the link itself, never its target.
	if err := WriteStateFile(path, 5); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(filepath.Join(dir, "elsewhere")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the link's target was written: %v", err)
	}
}
