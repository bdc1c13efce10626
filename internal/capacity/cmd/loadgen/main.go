// Command loadgen plays N cluster nodes sending signed status packets to a
// recvstats (or to barerecv) for the capacity benchmark; see package
// internal/capacity. It prints what it sent as JSON on stdout when it
// stops: after --duration, or on SIGTERM or SIGINT.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"

	flag "github.com/spf13/pflag"

	"github.com/hoststat/hoststat/internal/capacity"
	"github.com/hoststat/hoststat/telemetry/wire"
)

func main() {
	fs := flag.NewFlagSet("loadgen", flag.ExitOnError)
	to := fs.String("to", fmt.Sprintf("127.0.0.1:%d", wire.DefaultPort), "send to `ADDR:PORT`")
	var cfg capacity.GenConfig
	fs.IntVarP(&cfg.Nodes, "nodes", "n", 10000, "number of nodes to play")
	fs.IntVar(&cfg.FirstNode, "first-node", 0, "lowest node number")
	fs.Float64VarP(&cfg.Rate, "rate", "r", 1, "samples a node sends a second")
	fs.DurationVar(&cfg.Tick, "tick", 0, "wake up this often to send what is due (default 1ms)")
	fs.IntVar(&cfg.Batch, "batch", 0, "most datagrams a sendmmsg call sends (default 64)")
	fs.DurationVar(&cfg.Duration, "duration", 0, "stop after this long (default: until SIGTERM or SIGINT)")
	keyFile := fs.String("key-file", "", "sign packets with the shared key in `FILE` (as sendstats --key-file)")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the run to `FILE` (where the generator's time goes)")
	fs.Parse(os.Args[1:])
	if fs.NArg() > 0 {
		fail("unexpected argument %q", fs.Arg(0))
	}
	var err error
	if cfg.Target, err = netip.ParseAddrPort(*to); err != nil {
		fail("--to %q: %v", *to, err)
	}
	if *keyFile != "" {
		if cfg.Key, err = wire.LoadKey(*keyFile); err != nil {
			fail("%v", err)
		}
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			fail("%v", err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			fail("%v", err)
		}
		defer pprof.StopCPUProfile()
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	sent, err := capacity.Generate(ctx, cfg)
	json.NewEncoder(os.Stdout).Encode(sent)
	if err != nil {
		pprof.StopCPUProfile()
		fail("%v", err)
	}
}

func fail(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "loadgen: "+format+"\n", a...)
	os.Exit(1)
}
