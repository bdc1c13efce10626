package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	sd "github.com/coreos/go-systemd/v22/daemon"
)

// Exit codes of the hoststat daemons.
const (
	ExitOK    = 0
	ExitFail  = 1 // could not start, or failed while running
	ExitUsage = 2
)

// Failed reports why the program name cannot go on, on stderr, and
// returns ExitFail.
func Failed(stderr io.Writer, name string, err error) int {
	fmt.Fprintf(stderr, "%s: %v\n", name, err)
	return ExitFail
}

// Service is what a daemon runs once it has started.
type Service struct {
	Serve func(ctx context.Context) error // until ctx is done; nil on a clean stop
	Close func() error
	About []any // slog attributes of the "serving" line: addresses, options
}

// Run is the life of a daemon once its command line is checked. Unless
// foreground, it first goes to the background (Detach): the parent returns
// ExitOK once the child serves, or ExitFail with the child's reason. The
// process that stays builds its service with start, given its logger
// (NewLogger: syslog, and with debug records on stderr in the foreground), logs "serving", tells a waiting
// parent, and serves until SIGTERM or SIGINT. It returns the exit code.
func Run(name string, foreground bool, stderr io.Writer, start func(*slog.Logger) (Service, error)) int {
	if !foreground && !IsChild() && !UnderSystemd() {
		if err := Detach(); err != nil {
			return Failed(stderr, name, err)
		}
		return ExitOK
	}
	ready := Child()
	// -d means debug output on stderr as well as not forking.
	log, closeLog := NewLogger(LogOptions{Debug: foreground, Foreground: foreground, Stderr: stderr, Tag: name})
	defer closeLog()
	svc, err := start(log)
	if err != nil {
		ready.Fail(err)
		return Failed(stderr, name, err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	log.Info("serving", append(svc.About, "version", Version(), "pid", os.Getpid())...)
	ready.Ready()
	started := time.Now()
	err = svc.Serve(ctx)
	notifySystemd(sd.SdNotifyStopping)
	if err := errors.Join(err, svc.Close()); err != nil {
		log.Error("stopped", "err", err)
		return Failed(stderr, name, err)
	}
	log.Info("stopped", "uptime", time.Since(started).Round(time.Second).String())
	return ExitOK
}
