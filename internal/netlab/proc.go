package netlab

import (
	"errors"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Proc is a long-running process started on a host with Host.Start.
type Proc struct {
	name string
	cmd  *exec.Cmd
	out  *LogBuffer
	done chan struct{}
	err  error // valid once done is closed
}

// Start starts a long-running process on the host. Its stdout and stderr go
// to a buffer (Output) that is written to the test log if the test fails. At
// cleanup it is killed (SIGKILL, then waited for) unless it already ended.
// Start fails the test if the process cannot be started, so call it from the
// test's goroutine. Cleanup and failure logging belong to the test that
// called New: a process started in a subtest outlives the subtest unless
// stopped.
func (h *Host) Start(name string, args ...string) *Proc {
	t := h.lab.t
	t.Helper()
	cmd := h.Command(name, args...)
	p := &Proc{
		name: h.Name + ": " + strings.Join(append([]string{name}, args...), " "),
		cmd:  cmd,
		out:  &LogBuffer{Limit: 4 << 20},
		done: make(chan struct{}),
	}
	cmd.Stdout = p.out
	cmd.Stderr = p.out
	// A daemon's forked child may keep the output pipe; do not let it
	// hold up Wait once the process we started is gone.
	cmd.WaitDelay = time.Second
	if err := cmd.Start(); err != nil {
		t.Fatalf("netlab: start %s: %v", p.name, err)
	}
	go func() {
		err := cmd.Wait()
		if errors.Is(err, exec.ErrWaitDelay) {
			err = nil
		}
		p.err = err
		close(p.done)
	}()
	t.Cleanup(func() {
		p.Kill()
		if t.Failed() {
			t.Logf("netlab: output of %s (pid %d, %v):\n%s", p.name, p.Pid(), p.err, p.Output())
		}
	})
	return p
}

// Pid is the process id (in the test's pid namespace).
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Signal sends sig to the process; it is an error once the process ended.
func (p *Proc) Signal(sig os.Signal) error {
	if p.Exited() {
		return os.ErrProcessDone
	}
	return p.cmd.Process.Signal(sig)
}

// Kill sends SIGKILL and waits for the process to end. It returns nil, also
// when the process had already ended; Wait tells how it ended.
func (p *Proc) Kill() error {
	if !p.Exited() {
		p.cmd.Process.Signal(syscall.SIGKILL)
	}
	<-p.done
	return nil
}

// Stop sends SIGTERM, waits up to 5 s, then kills. It returns Wait's result:
// nil for a process that exited 0 on SIGTERM.
func (p *Proc) Stop() error {
	if !p.Exited() {
		p.cmd.Process.Signal(syscall.SIGTERM)
	}
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		p.Kill()
	}
	return p.err
}

// Wait waits for the process to end and returns how it ended, as
// exec.Cmd.Wait does.
func (p *Proc) Wait() error {
	<-p.done
	return p.err
}

// Done is closed when the process has ended.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has ended.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Output returns what the process wrote so far, stdout and stderr
// interleaved (only the last 4 MiB of a chatty process).
func (p *Proc) Output() string { return p.out.String() }

// LogBuffer collects what many goroutines write (a process's stdout and
// stderr, an in-process daemon's logger) for a test to read while they run.
// The zero value keeps everything; with Limit set it keeps at least the last
// Limit/2 bytes and at most Limit.
type LogBuffer struct {
	Limit int

	mu  sync.Mutex
	buf []byte
	cut bool
}

func (b *LogBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if b.Limit > 0 && len(b.buf) > b.Limit {
		// Drop down to half, so trimming is rare.
		b.buf = append(b.buf[:0], b.buf[len(b.buf)-b.Limit/2:]...)
		b.cut = true
	}
	return len(p), nil
}

// String returns what was kept, marked when earlier output was dropped.
func (b *LogBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cut {
		return "[…earlier output dropped…]\n" + string(b.buf)
	}
	return string(b.buf)
}
