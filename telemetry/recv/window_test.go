package recv

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestWindowKeepsFreshness(t *testing.T) {
	dir := t.TempDir()
	w, err := OpenWindow(dir, 16)
	if err != nil {
		t.Fatal(err)
	}
	f := Freshness{BootID: [16]byte{9}, BootTime: 1e18, Epoch: 77, Seq: 5, Honest: true}
	w.Store(3, f)
	w.Store(4, f)
	w.Clear(4)
	w.Close()
	w, err = OpenWindow(dir, 32) // a larger --max-nodes keeps what was there
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	got, bad := w.Load()
	if len(got) != 1 || got[3] != f || bad != 0 {
		t.Fatalf("loaded %v (%d bad), want node 3's window only", got, bad)
	}
	// A damaged slot is skipped and counted, the others load.
	b, _ := os.ReadFile(w.Path())
	b[winHeaderLen+3*winSlotLen+20] ^= 1
	os.WriteFile(w.Path(), b, 0o600)
	if got, bad := w.Load(); len(got) != 0 || bad != 1 {
		t.Errorf("damaged slot: loaded %v, %d bad", got, bad)
	}
}

// The window file is refused when it is not ours to trust: a symbolic
// link, writable by others, or with a damaged header.
func TestWindowRefusesUntrustedFiles(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, WindowFileName)
	target := filepath.Join(t.TempDir(), "elsewhere")
	os.WriteFile(target, nil, 0o600)
	os.Symlink(target, path)
	if _, err := OpenWindow(dir, 16); err == nil {
		t.Error("a symbolic link was followed")
	}
	os.Remove(path)
	os.WriteFile(path, nil, 0o600)
	os.Chmod(path, 0o666)
	if _, err := OpenWindow(dir, 16); err == nil || !strings.Contains(err.Error(), "others") {
		t.Errorf("a file others can write: %v", err)
	}
	os.WriteFile(path, []byte("HSTSWIN1 but not really a header......................................."), 0o600)
	os.Chmod(path, 0o600)
	if _, err := OpenWindow(dir, 16); err == nil || !strings.Contains(err.Error(), "damaged") {
		t.Errorf("a damaged header: %v", err)
	}
}

// FuzzWindowFile: whatever a window file holds, its header is refused or
// gives a slot count that fits the file, and its slots load without a
// panic, only for nodes the file has.
func FuzzWindowFile(f *testing.F) {
	dir := f.TempDir()
	w, err := OpenWindow(dir, 4)
	if err != nil {
		f.Fatal(err)
	}
	w.Store(1, Freshness{BootID: [16]byte{1}, Seq: 3})
	w.Close()
	good, _ := os.ReadFile(filepath.Join(dir, WindowFileName))
	f.Add(good)
	f.Add([]byte{})
	f.Add(good[:70])
	f.Fuzz(func(t *testing.T, b []byte) {
		n, err := decodeWindowHeader(b, int64(len(b)))
		if err != nil {
			n = (len(b) - winHeaderLen) / winSlotLen // the slots alone, as if it were right
		} else if winHeaderLen+n*winSlotLen != len(b) {
			t.Fatalf("header says %d slots for %d bytes", n, len(b))
		}
		if len(b) < winHeaderLen {
			return
		}
		got, bad := loadWindow(b[winHeaderLen:], n)
		for node := range got {
			if node < 0 || node >= n {
				t.Fatalf("window for node %d of %d slots", node, n)
			}
		}
		if len(got)+bad > n {
			t.Fatalf("%d windows and %d bad of %d slots", len(got), bad, n)
		}
	})
}
