// Package daemon puts a Go program in the background the way a C daemon
// forks: Go cannot fork a running runtime, so the program re-executes
// itself detached (new session, stdio on /dev/null) and the parent waits on
// a pipe until the child says it is serving, or why it could not start.
// Only then does the parent exit, so "daemon recvstats -i eth0" in an init
// script fails loudly when the daemon cannot bind its port. Run wraps that
// and the rest of a daemon's life after its command line: logger, serving
// until SIGTERM, exit code.
package daemon

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	sd "github.com/coreos/go-systemd/v22/daemon"
)

// envFD names the descriptor of the readiness pipe in the child.
const envFD = "HOSTSTAT_READY_FD"

// readyWord is what the child writes when it is serving; anything else on
// the pipe is the reason it failed.
const readyWord = "ready\n"

// StartTimeout bounds how long the parent waits for the child.
var StartTimeout = 30 * time.Second

// IsChild reports whether this process is the background copy started by
// Detach.
func IsChild() bool { return os.Getenv(envFD) != "" }

// Detach starts this program again in the background with the same
// arguments and waits until it calls Notifier.Ready (nil error) or
// Notifier.Fail / exits (the child's reason as error). The caller, the
// parent, then exits.
func Detach() error {
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("daemon: cannot find own executable: %w", err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("daemon: readiness pipe: %w", err)
	}
	defer r.Close()
	null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		w.Close()
		return fmt.Errorf("daemon: %w", err)
	}
	defer null.Close()

	cmd := exec.Command(exe, os.Args[1:]...)
	cmd.Env = append(os.Environ(), envFD+"=3") // ExtraFiles[0] is fd 3
	cmd.Stdin, cmd.Stdout, cmd.Stderr = null, null, null
	cmd.ExtraFiles = []*os.File{w}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true} // no controlling terminal, own session
	cmd.Dir = "/"
	if err := cmd.Start(); err != nil {
		w.Close()
		return fmt.Errorf("daemon: starting background process: %w", err)
	}
	w.Close() // only the child holds the write end now: EOF means it is gone

	type result struct {
		msg string
		err error
	}
	done := make(chan result, 1)
	go func() {
		b, err := io.ReadAll(io.LimitReader(bufio.NewReader(r), 64<<10))
		done <- result{string(b), err}
	}()
	select {
	case res := <-done:
		if res.msg == readyWord {
			// The child keeps running; release it so it is not reaped by us.
			_ = cmd.Process.Release()
			return nil
		}
		reason := strings.TrimSpace(res.msg)
		werr := cmd.Wait()
		if reason == "" {
			if werr != nil {
				reason = fmt.Sprintf("background process ended before it was serving: %v", werr)
			} else {
				reason = "background process ended before it was serving"
			}
		}
		return errors.New(reason)
	case <-time.After(StartTimeout):
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return fmt.Errorf("background process not serving after %v; killed it", StartTimeout)
	}
}

// Notifier is the child's end of the readiness pipe. A nil Notifier (the
// foreground case) ignores every call.
type Notifier struct{ f *os.File }

// Child returns the readiness notifier when this process was started by
// Detach, else nil. It unsets the variable so programs the daemon starts
// do not inherit it.
func Child() *Notifier {
	v := os.Getenv(envFD)
	if v == "" {
		return nil
	}
	os.Unsetenv(envFD)
	fd, err := strconv.Atoi(v)
	if err != nil || fd < 3 {
		return nil
	}
	syscall.CloseOnExec(fd)
	return &Notifier{f: os.NewFile(uintptr(fd), "ready-pipe")}
}

// Ready tells the parent the program is serving; the parent exits 0.
// Under systemd it tells systemd instead (READY=1).
func (n *Notifier) Ready() {
	notifySystemd(sd.SdNotifyReady)
	if n == nil || n.f == nil {
		return
	}
	_, _ = io.WriteString(n.f, readyWord)
	n.f.Close()
	n.f = nil
}

// Fail tells the parent why the program cannot start; the parent prints
// it and exits non-zero.
func (n *Notifier) Fail(err error) {
	if n == nil || n.f == nil {
		return
	}
	msg := err.Error()
	if msg+"\n" == readyWord {
		msg = "failed: " + msg
	}
	_, _ = io.WriteString(n.f, msg+"\n")
	n.f.Close()
	n.f = nil
}
