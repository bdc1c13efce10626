package shm

import (
	"bufio"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/hoststat/hoststat/internal/netlab"
)

// envReaderDir names the shm directory to the child run as another user.
const envReaderDir = "HOSTSTAT_SHM_UNPRIV_READER_DIR"

// TestUnprivilegedReaderCannotStopWriter: a real process of an ordinary
// user (uid 65534) reads the table, holds an exclusive flock on it (issue
// 8: recvstats then refused to start), and tries the writer's lock file and
// the directory. While it holds its lock, recvstats' writer starts, reuses
// the table and writes it; the reader still reads it. Only the writer's
// 0600 lock file, which the user cannot open, decides who writes.
func TestUnprivilegedReaderCannotStopWriter(t *testing.T) {
	netlab.RequireRoot(t) // to run the reader as another user
	dir := t.TempDir()
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	w := create(t, dir, WriterOptions{})
	putCounter(w, 3, 1, 1, 1)
	w.Close()

	cmd := exec.Command(netlab.ExecutableForOthers(t), "-test.run=^TestUnprivilegedReaderChild$", "-test.v")
	cmd.Env = append(os.Environ(), envReaderDir+"="+dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	lines := bufio.NewScanner(stdout)
	var out []string
	locked := false
	for !locked && lines.Scan() {
		locked = lines.Text() == "locked"
		out = append(out, lines.Text())
	}
	if !locked {
		cmd.Wait()
		t.Fatalf("the reader did not take its lock: %v\n%q", lines.Err(), out)
	}

	w2, err := Create(dir, WriterOptions{Logger: quiet})
	if err != nil {
		t.Fatalf("an ordinary user's flock on the table stops the writer: %v", err)
	}
	if err := putCounter(w2, 3, 2, 1, 1); err != nil {
		t.Fatal(err)
	}
	if len(w2.Nodes()) != 1 {
		t.Errorf("table not reused: nodes %v", w2.Nodes())
	}
	stdin.Close() // the reader reads once more, then lets go
	for lines.Scan() {
		out = append(out, lines.Text())
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("the reader (%v):\n%q", err, out)
	}
	w2.Close()
	t.Logf("the reader's output: %q", out)
}

// TestUnprivilegedReaderChild is the reader of
// TestUnprivilegedReaderCannotStopWriter, run as an ordinary user.
func TestUnprivilegedReaderChild(t *testing.T) {
	dir := os.Getenv(envReaderDir)
	if dir == "" {
		t.Skip("run by TestUnprivilegedReaderCannotStopWriter as an ordinary user")
	}
	r, err := OpenReader(dir)
	if err != nil {
		t.Fatalf("an ordinary user cannot read the table: %v", err)
	}
	defer r.Close()
	f, err := os.Open(filepath.Join(dir, FileName))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		t.Fatalf("flock of the table: %v", err)
	}
	if _, err := os.Open(filepath.Join(dir, LockName)); !errors.Is(err, os.ErrPermission) {
		t.Errorf("opening the writer's lock file: %v, want permission denied", err)
	}
	if _, err := os.OpenFile(filepath.Join(dir, FileName), os.O_RDWR, 0); !errors.Is(err, os.ErrPermission) {
		t.Errorf("opening the table for writing: %v, want permission denied", err)
	}
	if _, err := os.Create(filepath.Join(dir, "planted")); !errors.Is(err, os.ErrPermission) {
		t.Errorf("creating a file in the shm directory: %v, want permission denied", err)
	}
	os.Stdout.WriteString("locked\n")
	bufio.NewReader(os.Stdin).ReadString('\n') // until the writer has written
	if _, ok, err := r.Summary(3); err != nil || !ok {
		t.Errorf("reading node 3 after the writer restarted: %v %v", ok, err)
	}
}
