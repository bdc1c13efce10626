package sample

import (
	"errors"
	"os"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// fakeStatfs answers statfs from a table; a mount in hang blocks until
// release is closed.
type fakeStatfs struct {
	mu      sync.Mutex
	calls   map[string]int
	hang    map[string]bool
	release chan struct{}
}

func newFakeStatfs(hang ...string) *fakeStatfs {
	f := &fakeStatfs{calls: map[string]int{}, hang: map[string]bool{}, release: make(chan struct{})}
	for _, h := range hang {
		f.hang[h] = true
	}
	return f
}

func (f *fakeStatfs) statfs(path string, st *unix.Statfs_t) error {
	f.mu.Lock()
	f.calls[path]++
	hang := f.hang[path]
	f.mu.Unlock()
	if hang {
		<-f.release
	}
	if path == "/boot" {
		return errors.New("permission denied")
	}
	*st = unix.Statfs_t{Bsize: 4096, Frsize: 4096, Blocks: 1000, Bfree: 400, Bavail: 300, Files: 50, Ffree: 20}
	return nil
}

func (f *fakeStatfs) count(path string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[path]
}

func collectorWithStatfs(t *testing.T, f *fakeStatfs) *Collector {
	c := newTestCollector(t, "testdata/proc/four")
	c.Statfs = f.statfs
	c.StatfsTimeout = 50 * time.Millisecond
	c.slowAt = time.Time{} // NewCollector's first sample used the real statfs
	return c
}

func mountsOf(s *Sample) []string {
	var out []string
	for _, fs := range s.Filesystems {
		out = append(out, fs.Mount)
	}
	return out
}

func TestCollectFilesystems(t *testing.T) {
	f := newFakeStatfs()
	c := collectorWithStatfs(t, f)
	var s Sample
	if err := c.Collect(&s); err != nil {
		t.Fatal(err)
	}
	if s.Hostname != "node-four" {
		t.Errorf("Hostname = %q, want node-four", s.Hostname)
	}
	// Pseudo filesystems, the bind mount of the same device, the NFS
	// mount and /boot (statfs failed) are left out.
	want := []string{"/", "/scratch space", "/data"}
	got := mountsOf(&s)
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] || got[2] != want[2] {
		t.Fatalf("filesystems %q, want %q", got, want)
	}
	fs := s.Filesystems[0]
	if fs.Type != "ext4" || fs.Total != 1000*4096 || fs.Free != 400*4096 || fs.Avail != 300*4096 ||
		fs.Files != 50 || fs.FilesFree != 20 || fs.NotAnswering || fs.Used() != 600*4096 {
		t.Errorf("/ = %+v", fs)
	}
	if f.count("/home") != 0 {
		t.Error("the NFS mount was asked by default")
	}

	c.NetworkFilesystems = true
	c.slowAt = time.Time{}
	if err := c.Collect(&s); err != nil {
		t.Fatal(err)
	}
	if got := mountsOf(&s); len(got) != 4 || got[2] != "/home" {
		t.Errorf("with NetworkFilesystems: %q, want /home too", got)
	}
}

// A mount whose statfs hangs (a dead NFS server) neither holds up the
// sample nor costs a goroutine per refresh: it is reported not answering
// and asked again only once the hung call has returned.
func TestCollectSkipsHungMount(t *testing.T) {
	f := newFakeStatfs("/home")
	c := collectorWithStatfs(t, f)
	c.NetworkFilesystems = true
	var s Sample
	done := make(chan error)
	go func() { done <- c.Collect(&s) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(time.Minute): // a hang, not a speed check
		t.Fatal("Collect waits for the hung mount")
	}
	home := findFS(&s, "/home")
	if home == nil || !home.NotAnswering || home.Total != 0 {
		t.Fatalf("/home = %+v, want reported not answering", home)
	}
	if root := findFS(&s, "/"); root == nil || root.NotAnswering || root.Total == 0 {
		t.Errorf("/ = %+v, want answered", root)
	}
	for i := 0; i < 5; i++ {
		c.slowAt = time.Time{}
		if err := c.Collect(&s); err != nil {
			t.Fatal(err)
		}
		if home := findFS(&s, "/home"); home == nil || !home.NotAnswering {
			t.Fatalf("refresh %d: /home = %+v, want not answering", i, home)
		}
	}
	if n := f.count("/home"); n != 1 {
		t.Errorf("statfs of the hung mount called %d times, want once while it hangs", n)
	}
	if n := f.count("/"); n != 6 {
		t.Errorf("statfs of / called %d times, want 6", n)
	}

	// The server comes back: the call returns, and the mount is asked
	// again and answers.
	f.mu.Lock()
	f.hang["/home"] = false
	f.mu.Unlock()
	close(f.release)
	for f.count("/home") < 2 {
		c.slowAt = time.Time{}
		if err := c.Collect(&s); err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	c.slowAt = time.Time{}
	if err := c.Collect(&s); err != nil {
		t.Fatal(err)
	}
	if home := findFS(&s, "/home"); home == nil || home.NotAnswering || home.Total != 1000*4096 {
		t.Errorf("after recovery /home = %+v, want answered", home)
	}
}

func findFS(s *Sample, dir string) *Filesystem {
	for i := range s.Filesystems {
		if s.Filesystems[i].Mount == dir {
			return &s.Filesystems[i]
		}
	}
	return nil
}

// Between refreshes the sample carries the last figures without asking.
func TestFilesystemsReadOnlyWhenDue(t *testing.T) {
	f := newFakeStatfs()
	c := collectorWithStatfs(t, f)
	var s Sample
	for i := 0; i < 3; i++ {
		if err := c.Collect(&s); err != nil {
			t.Fatal(err)
		}
	}
	if n := f.count("/"); n != 1 {
		t.Errorf("statfs of / called %d times in 3 samples, want 1", n)
	}
	if len(s.Filesystems) != 3 {
		t.Errorf("%d filesystems carried, want 3", len(s.Filesystems))
	}
}

func TestCollectLiveRootFilesystem(t *testing.T) {
	c := newTestCollector(t, "/proc")
	var s Sample
	if err := c.Collect(&s); err != nil {
		t.Fatal(err)
	}
	want, err := os.Hostname()
	if err == nil && s.Hostname != want {
		t.Errorf("Hostname = %q, want %q", s.Hostname, want)
	}
	root := findFS(&s, "/")
	if root == nil || root.Total == 0 || root.NotAnswering {
		t.Errorf("/ = %+v among %q", root, mountsOf(&s))
	}
	if s.Uptime() <= 0 {
		t.Errorf("Uptime = %v", s.Uptime())
	}
}
