package netlab

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
)

// ProcTree is a copy of a captured /proc tree for sendstats --proc, whose
// boot (boot id and btime) a test changes to make the node "reboot".
type ProcTree struct {
	t   testing.TB
	Dir string
}

// NewProcTree copies the captured tree in src into a temporary directory.
func NewProcTree(t testing.TB, src string) *ProcTree {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "proc")
	if err := os.CopyFS(dir, os.DirFS(src)); err != nil {
		t.Fatal(err)
	}
	return &ProcTree{t, dir}
}

var btimeLine = regexp.MustCompile(`(?m)^btime \d+$`)

// Boot sets the node's boot id and boot time, as a reboot does.
func (p *ProcTree) Boot(id string, btime int64) {
	p.t.Helper()
	if err := os.WriteFile(filepath.Join(p.Dir, "sys/kernel/random/boot_id"), []byte(id+"\n"), 0o644); err != nil {
		p.t.Fatal(err)
	}
	stat := filepath.Join(p.Dir, "stat")
	b, err := os.ReadFile(stat)
	if err != nil {
		p.t.Fatal(err)
	}
	b = btimeLine.ReplaceAll(b, []byte("btime "+strconv.FormatInt(btime, 10)))
	if err := os.WriteFile(stat, b, 0o644); err != nil {
		p.t.Fatal(err)
	}
}

// StartDaemon starts a process in the foreground and returns what stops
// it (SIGKILL, then wait); it is stopped at cleanup too, and its output
// logged when the test failed.
func StartDaemon(t testing.TB, bin string, args ...string) (stop func()) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	var out LogBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	stop = func() {
		select {
		case <-done:
			return
		default:
		}
		cmd.Process.Kill()
		<-done
	}
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			t.Logf("%s output:\n%s", filepath.Base(bin), out.String())
		}
	})
	return stop
}
