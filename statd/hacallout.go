package statd

import (
	"context"
	"log/slog"
	"os/exec"
	"strconv"
	"time"

	"github.com/hoststat/hoststat/nsm"
)

// haCallout runs the -H program with nfs-utils' arguments:
//
//	PROG add-client MON_NAME MY_NAME         after a successful SM_MON
//	PROG del-client MON_NAME MY_NAME         after SM_UNMON / each SM_UNMON_ALL match
//	PROG sm-notify  MON_NAME CALLER_IP STATE on every SM_NOTIFY received
//
// Calls run one at a time in arrival order on their own goroutine: nfs-utils
// waits for each in the RPC path, we keep its ordering but not its blocking.
type haCallout struct {
	prog  string
	log   *slog.Logger
	queue chan []string
	done  chan struct{}
}

func newHACallout(prog string, log *slog.Logger) *haCallout {
	if prog == "" {
		return nil
	}
	h := &haCallout{prog: prog, log: log, queue: make(chan []string, 4096), done: make(chan struct{})}
	go h.run()
	return h
}

func (h *haCallout) addClient(monName, myName string) {
	h.enqueue("add-client", monName, myName)
}

func (h *haCallout) delClient(monName, myName string) {
	h.enqueue("del-client", monName, myName)
}

func (h *haCallout) smNotify(monName, callerIP string, state int32) {
	h.enqueue("sm-notify", monName, callerIP, strconv.Itoa(int(state)))
}

// enqueue blocks when 4096 callouts are pending: back-pressure rather than
// losing an event an HA setup depends on.
func (h *haCallout) enqueue(args ...string) {
	if h == nil {
		return
	}
	h.queue <- args
}

func (h *haCallout) run() {
	defer close(h.done)
	for args := range h.queue {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		cmd := exec.CommandContext(ctx, h.prog, args...)
		out, err := cmd.CombinedOutput()
		cancel()
		if err != nil {
			h.log.Error("ha-callout failed", "prog", nsm.Quote(h.prog), "event", args[0], "err", err, "output", nsm.Quote(string(out)))
		} else {
			h.log.Debug("ha-callout done", "prog", nsm.Quote(h.prog), "args", args)
		}
	}
}

// close waits for queued callouts to finish.
func (h *haCallout) close() {
	if h == nil {
		return
	}
	close(h.queue)
	<-h.done
}
