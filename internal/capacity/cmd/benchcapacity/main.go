// Command benchcapacity runs the capacity benchmark (make bench-capacity):
// for each node count, the bare receiver, recvstats in the background and
// recvstats -d, each beside loadgen, and prints the table of
// docs/benchmarks.md; see package internal/capacity.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	flag "github.com/spf13/pflag"

	"github.com/hoststat/hoststat/internal/capacity"
)

func main() {
	fs := flag.NewFlagSet("benchcapacity", flag.ExitOnError)
	var o capacity.Options
	fs.StringVar(&o.Bin, "bin", "bin/capacity", "`DIR` holding recvstats, loadgen and barerecv")
	nodes := fs.String("nodes", "10000 50000 100000 150000 200000", "node counts to measure, separated by spaces or commas")
	fs.Float64Var(&o.Rate, "rate", 1, "samples a node sends a second")
	fs.DurationVar(&o.Window, "window", 30*time.Second, "how long each point is measured")
	fs.DurationVar(&o.Warmup, "warmup", 3*time.Second, "how long each point runs before the window")
	fs.IntVar(&o.Repeat, "repeat", 1, "measure every receiver this many times per node count, alternating")
	fs.StringVar(&o.KeyFile, "key-file", "", "shared key `FILE` (default: a fresh one per point)")
	fs.IntVar(&o.ReadBuffer, "read-buffer", capacity.DefaultReadBuffer, "bare receiver's socket buffer in `BYTES` (keep it recvstats')")
	fs.StringVar(&o.PerfDir, "perf", "", "profile each receiver's window with perf(1), keeping data and reports in `DIR`")
	write := fs.String("write", "", "write the report between the capacity markers of this markdown `FILE`")
	jsonOut := fs.String("json", "", "write every point as JSON to `FILE`")
	command := fs.String("command", "", "the command to show in the report (default: this one)")
	fs.Parse(os.Args[1:])
	for _, f := range strings.FieldsFunc(*nodes, func(r rune) bool { return r == ' ' || r == ',' }) {
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 {
			fail("--nodes: %q is not a node count", f)
		}
		o.Nodes = append(o.Nodes, n)
	}
	if *command == "" {
		*command = strings.Join(os.Args, " ")
	}
	o.Progress = os.Stderr
	if o.PerfDir != "" {
		if err := os.MkdirAll(o.PerfDir, 0o755); err != nil {
			fail("%v", err)
		}
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	points, err := capacity.Sweep(ctx, o)
	if *jsonOut != "" && len(points) > 0 {
		b, _ := json.MarshalIndent(points, "", "  ")
		if werr := os.WriteFile(*jsonOut, append(b, '\n'), 0o644); werr != nil {
			fail("%v", werr)
		}
	}
	if err != nil {
		fail("%v", err)
	}
	version, _ := exec.Command(filepath.Join(o.Bin, "recvstats"), "--version").Output()
	about := strings.TrimSpace(string(version))
	if rev, err := exec.Command("git", "describe", "--always", "--dirty").Output(); err == nil {
		about += " at commit " + strings.TrimSpace(string(rev))
	}
	report := capacity.Report(points, *command, about)
	fmt.Print(report)
	if *write != "" {
		if err := capacity.WriteBetweenMarkers(*write, report); err != nil {
			fail("%v", err)
		}
		fmt.Fprintf(os.Stderr, "benchcapacity: wrote the report into %s\n", *write)
	}
}

func fail(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "benchcapacity: "+format+"\n", a...)
	os.Exit(1)
}
