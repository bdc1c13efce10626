package main

import (
	"bufio"
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
	format   string // text, json, jsonl or csv
	fields   []beostat.Field
	history  int // --history NODE; -1 not asked
	since    time.Duration
	events   bool
	last     int
	stats    bool
}

// run is the whole command; main only wires it to the process.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fl := pflag.NewFlagSet("beostat", pflag.ContinueOnError)
	var o options
	var asJSON bool
	var fields string
	fl.StringVar(&o.dir, "shm-dir", shm.DefaultDir, "directory of the node table that recvstats writes")
	fl.IntVar(&o.node, "node", 0, "show node `N` in detail: per-CPU use and clock, memory, load, network devices")
	fl.BoolVarP(&o.watch, "watch", "w", false, "refresh every --interval until interrupted")
	fl.DurationVarP(&o.interval, "interval", "i", time.Second, "refresh interval for --watch")
	fl.StringVarP(&o.format, "format", "o", "text", "output `FORMAT`: text; json, an array with one object per node on one line (with --watch, one array per frame); jsonl, one object per line; csv")
	fl.BoolVar(&asJSON, "json", false, "the same as --format json")
	fl.StringVar(&fields, "fields", "", "print only these comma-separated `FIELDS` of each node, named as in the JSON (e.g. node,state,cpu,load1,mem_used)")
	fl.IntVar(&o.history, "history", -1, "show node `N`'s history instead: one-minute points of the last day, full-resolution points of the last minutes")
	fl.DurationVar(&o.since, "since", 24*time.Hour, "with --history, only the points of the last `DURATION`")
	fl.BoolVar(&o.events, "events", false, "follow the node events recvstats publishes (up, down, reboot, forgotten): one line each, TIME NODE ADDR EVENT (--json: one object per line)")
	fl.BoolVar(&o.stats, "stats", false, "show recvstats' own counters instead: datagrams received, samples stored, drops by reason, nodes up and down, table size")
	fl.IntVar(&o.last, "last", 10, "with --events, first show up to the last `N` events")
	fl.BoolP("help", "h", false, "show this help and exit")
	fl.BoolP("version", "v", false, "show the version and exit")
	fl.SortFlags = false
	head := "Usage: beostat [--shm-dir DIR] [--node N] [--watch [--interval D]] [--json | --format F] [--fields LIST]\n" +
		"       beostat [--shm-dir DIR] --history N [--since DURATION] [--json]\n" +
		"       beostat [--shm-dir DIR] --events [--last N] [--interval D] [--json]\n" +
		"       beostat [--shm-dir DIR] --stats [--json]\n\n" +
		"Shows the status of every cluster node from the table recvstats keeps.\n\nOptions:\n"
	if code, done := (daemon.Flags{Head: head}).Parse(fl, args, stdout, stderr); done {
		return code
	}
	switch {
	case o.node < 0:
		return daemon.UsageError(stderr, "beostat", "--node %d: node numbers start at 0", o.node)
	case o.interval <= 0:
		return daemon.UsageError(stderr, "beostat", "--interval %v: must be positive", o.interval)
	case fl.Changed("history") && (o.history < 0 || fl.Changed("node") || o.watch || fl.Changed("fields")):
		return daemon.UsageError(stderr, "beostat", "--history %d: wants a node number (from 0), without --node, --watch or --fields", o.history)
	case o.events && (fl.Changed("history") || fl.Changed("node") || o.watch || fl.Changed("fields") || o.last < 0):
		return daemon.UsageError(stderr, "beostat", "--events: not with --history, --node, --watch or --fields; --last %d must be 0 or more", o.last)
	case o.since <= 0:
		return daemon.UsageError(stderr, "beostat", "--since %v: must be positive", o.since)
	case asJSON && fl.Changed("format") && o.format != "json":
		return daemon.UsageError(stderr, "beostat", "--json and --format %s disagree", o.format)
	}
	if asJSON {
		o.format = "json"
	}
	switch o.format {
	case "text", "json", "jsonl", "csv":
	default:
		return daemon.UsageError(stderr, "beostat", "--format %q: want text, json, jsonl or csv", o.format)
	}
	if fields != "" {
		var err error
		if o.fields, err = beostat.ParseFields(fields); err != nil {
			return daemon.UsageError(stderr, "beostat", "--fields: %v", err)
		}
	}

	o.detail = fl.Changed("node")
	if o.events {
		interval := 200 * time.Millisecond // events are rare: a quick poll costs little
		if fl.Changed("interval") {
			interval = o.interval
		}
		if err := followEvents(ctx, stdout, stderr, o.dir, o.last, interval, o.format == "json" || o.format == "jsonl"); err != nil {
			fmt.Fprintf(stderr, "beostat: %v\n", err)
			return exitRuntime
		}
		return exitOK
	}
	if o.history >= 0 {
		out := bufio.NewWriter(stdout)
		err := showHistory(out, o.dir, o.history, o.since, o.format == "json", time.Now())
		if ferr := out.Flush(); err == nil {
			err = ferr
		}
		if err != nil {
			fmt.Fprintf(stderr, "beostat: %v\n", err)
			return exitRuntime
		}
		return exitOK
	}

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
	if o.stats {
		if err := showStats(stdout, t.Info(), o.format == "json" || o.format == "jsonl"); err != nil {
			fmt.Fprintf(stderr, "beostat: %v\n", err)
			return exitRuntime
		}
		return exitOK
	}

	// Redraw in place only on a terminal; into a pipe or file, frames
	// follow each other with no control codes. Output is written as the
	// table is read, through one buffer of fixed size.
	redraw := o.watch && o.format == "text" && isTerminal(stdout)
	out := bufio.NewWriterSize(stdout, 64<<10)
	for frame := 0; ; frame++ {
		switch {
		case redraw:
			out.WriteString("\x1b[H\x1b[2J") // home and clear
		case o.watch && o.format == "text" && frame > 0:
			out.WriteString("\n")
		}
		err := show(out, t, o, time.Now())
		if err == nil {
			err = out.Flush()
		}
		if err != nil {
			out.Flush()
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
func show(w *bufio.Writer, t *beostat.Table, o options, now time.Time) error {
	if o.detail {
		d, err := t.Detail(o.node)
		if err != nil {
			return err
		}
		switch o.format {
		case "json", "jsonl":
			b, err := json.Marshal([]beostat.Detail{d})
			if o.format == "jsonl" {
				b, err = json.Marshal(d)
			}
			if err != nil {
				return err
			}
			w.Write(b)
			return w.WriteByte('\n')
		case "csv":
			return streamNodes(w, t, o, now, func(s *beostat.Status) bool { return s.Node == o.node })
		}
		writeDetail(w, d, now)
		return nil
	}
	return streamNodes(w, t, o, now, nil)
}

// streamNodes writes every node (those keep accepts, when given) in the
// chosen format as it reads them.
func streamNodes(w *bufio.Writer, t *beostat.Table, o options, now time.Time, keep func(*beostat.Status) bool) error {
	var each func(*beostat.Status) error
	var end func() error
	switch {
	case o.format == "json" || o.format == "jsonl":
		// One array on one line, or one object per line.
		var line []byte
		n := 0
		if o.format == "json" {
			w.WriteByte('[')
		}
		each = func(s *beostat.Status) error {
			line = line[:0]
			switch {
			case o.format == "jsonl":
			case n > 0:
				line = append(line, ',')
			}
			n++
			line = s.AppendJSON(line, o.fields)
			if o.format == "jsonl" {
				line = append(line, '\n')
			}
			_, err := w.Write(line)
			return err
		}
		end = func() error {
			if o.format == "json" {
				_, err := w.WriteString("]\n")
				return err
			}
			return nil
		}
	case o.format == "csv" || o.fields != nil:
		fields := o.fields
		if fields == nil {
			fields = beostat.AllFields()
		}
		each = newFieldsWriter(w, fields, o.format == "csv").node
		end = func() error { return nil }
	default:
		tw := newTableWriter(w, t.Info(), now)
		each, end = tw.node, tw.end
	}
	err := t.Each(func(s *beostat.Status) error {
		if keep != nil && !keep(s) {
			return nil
		}
		return each(s)
	})
	if err != nil {
		return err
	}
	return end()
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
