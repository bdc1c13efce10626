package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"

	"github.com/hoststat/hoststat/beostat"
	"github.com/hoststat/hoststat/internal/daemon"
	"github.com/hoststat/hoststat/shm"
)

const (
	exitOK      = 0
	exitRuntime = 1
)

type options struct {
	dir      string
	node     int
	detail   bool // --node given
	watch    bool
	interval time.Duration
	json     bool
}

// run is the whole command; main only wires it to the process.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fl := pflag.NewFlagSet("beostat", pflag.ContinueOnError)
	var o options
	fl.StringVar(&o.dir, "shm-dir", shm.DefaultDir, "directory of the node table that recvstats writes")
	fl.IntVar(&o.node, "node", 0, "show node `N` in detail: per-CPU use and clock, memory, load, network devices")
	fl.BoolVarP(&o.watch, "watch", "w", false, "refresh every --interval until interrupted")
	fl.DurationVarP(&o.interval, "interval", "i", time.Second, "refresh interval for --watch")
	fl.BoolVar(&o.json, "json", false, "print JSON: an array with one object per node (with --watch, one array per line)")
	fl.BoolP("help", "h", false, "show this help and exit")
	fl.BoolP("version", "v", false, "show the version and exit")
	fl.SortFlags = false
	head := "Usage: beostat [--shm-dir DIR] [--node N] [--watch [--interval D]] [--json]\n\n" +
		"Shows the status of every cluster node from the table recvstats keeps.\n\nOptions:\n"
	if code, done := (daemon.Flags{Head: head}).Parse(fl, args, stdout, stderr); done {
		return code
	}
	switch {
	case o.node < 0:
		return daemon.UsageError(stderr, "beostat", "--node %d: node numbers start at 0", o.node)
	case o.interval <= 0:
		return daemon.UsageError(stderr, "beostat", "--interval %v: must be positive", o.interval)
	}

	o.detail = fl.Changed("node")

	t, err := beostat.Open(o.dir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			fmt.Fprintf(stderr, "beostat: no node table at %s: recvstats is probably not running (or uses another --shm-dir)\n",
				filepath.Join(o.dir, shm.FileName))
		} else {
			fmt.Fprintf(stderr, "beostat: %v\n", err)
		}
		return exitRuntime
	}
	defer t.Close()

	// Redraw in place only on a terminal; into a pipe or file, frames
	// follow each other with no control codes.
	redraw := o.watch && !o.json && isTerminal(stdout)
	var buf bytes.Buffer
	for frame := 0; ; frame++ {
		buf.Reset()
		switch {
		case redraw:
			buf.WriteString("\x1b[H\x1b[2J") // home and clear
		case o.watch && !o.json && frame > 0:
			buf.WriteString("\n")
		}
		if err := show(&buf, t, o, time.Now()); err != nil {
			fmt.Fprintf(stderr, "beostat: %v\n", err)
			return exitRuntime
		}
		if _, err := stdout.Write(buf.Bytes()); err != nil {
			fmt.Fprintf(stderr, "beostat: %v\n", err)
			return exitRuntime
		}
		if !o.watch {
			return exitOK
		}
		select {
		case <-ctx.Done():
			return exitOK
		case <-time.After(o.interval):
		}
	}
}

// show writes one view of the table.
func show(w io.Writer, t *beostat.Table, o options, now time.Time) error {
	if o.detail {
		d, err := t.Detail(o.node)
		if err != nil {
			return err
		}
		if o.json {
			return writeJSON(w, []beostat.Detail{d})
		}
		writeDetail(w, d, now)
		return nil
	}
	st, err := t.Status()
	if err != nil {
		return err
	}
	if o.json {
		return writeJSON(w, st)
	}
	writeTable(w, t.Info(), st, now)
	return nil
}

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

func writeJSON(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}
