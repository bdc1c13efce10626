// Command recvstats is the master daemon of hoststat: it receives status
// packets from the cluster's nodes and keeps the shared-memory table that
// beostat reads. See recvstats --help.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/signal"
	"syscall"
	"time"

	flag "github.com/spf13/pflag"

	"github.com/hoststat/hoststat/internal/daemon"
	"github.com/hoststat/hoststat/shm"
	"github.com/hoststat/hoststat/telemetry/recv"
	"github.com/hoststat/hoststat/telemetry/wire"
)

// Exit codes.
const (
	exitOK    = 0
	exitFail  = 1 // could not start, or failed while serving
	exitUsage = 2
)

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

const usageHead = `Usage: recvstats [-d] [-i IF] [-p PORT] [options]

Receives status packets from the cluster nodes' sendstats and keeps the
shared-memory table that beostat reads. Without -d it goes to the
background once it is serving.

`

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("recvstats", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.SortFlags = false // the manual page's order
	var (
		debug     = fs.BoolP("debug", "d", false, "debug output on stderr; do not fork")
		iface     = fs.StringP("interface", "i", "", "join the multicast group on interface `IF` (without it: unicast only)")
		port      = fs.IntP("port", "p", wire.DefaultPort, "UDP `PORT` to listen on")
		help      = fs.BoolP("help", "h", false, "show this help and exit")
		version   = fs.BoolP("version", "v", false, "show the version and exit")
		listen    = fs.String("listen", "", "listen on this unicast `ADDR` only (e.g. 127.0.0.1); default every IPv4 address")
		group     = fs.String("group", wire.DefaultGroup.String(), "multicast group `ADDR` of status packets and update requests")
		shmDir    = fs.String("shm-dir", shm.DefaultDir, "`DIR` of the shared-memory table (created 0755 if missing)")
		nodes     = fs.IntP("nodes", "N", 64, "initial node count of the table `N` (it grows on demand)")
		nodeMap   = fs.String("node-map", "", "`FILE` of \"NODE ADDRESS\" lines numbering nodes that do not send a number")
		downAfter = fs.Duration("down-after", recv.DefaultDownAfter, "show a node down after `DURATION` without a packet")
		keyFile   = fs.String("key-file", "", "accept only packets authenticated with the shared key in `FILE`")
	)
	usage := func(w io.Writer) {
		fmt.Fprint(w, usageHead)
		fmt.Fprint(w, fs.FlagUsages())
	}
	if err := fs.Parse(args); err != nil {
		fmt.Fprintf(stderr, "recvstats: %v\nTry 'recvstats --help' for more information.\n", err)
		return exitUsage
	}
	switch {
	case *help:
		usage(stdout)
		return exitOK
	case *version:
		fmt.Fprintf(stdout, "recvstats (hoststat) %s\n", daemon.Version())
		return exitOK
	}
	bad := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "recvstats: "+format+"\n", a...)
		return exitUsage
	}
	if fs.NArg() > 0 {
		return bad("unexpected argument %q", fs.Arg(0))
	}
	cfg := recv.Config{Interface: *iface, ShmDir: *shmDir, InitialNodes: *nodes, DownAfter: *downAfter}
	if *port < 1 || *port > 65535 {
		return bad("port %d is not in 1..65535", *port)
	}
	cfg.Port = *port
	g, err := netip.ParseAddr(*group)
	if err != nil || !g.Is4() || !g.IsMulticast() {
		return bad("group %q is not an IPv4 multicast address", *group)
	}
	cfg.Group = g
	if *listen != "" {
		a, err := netip.ParseAddr(*listen)
		if err != nil {
			return bad("listen address %q: %v", *listen, err)
		}
		cfg.Listen = a
	}
	if *nodes < 1 || *nodes > shm.MaxNodes {
		return bad("node count %d is not in 1..%d", *nodes, shm.MaxNodes)
	}
	if *downAfter <= 0 {
		return bad("down-after %v must be positive", *downAfter)
	}
	if *nodeMap != "" {
		if cfg.NodeMap, err = recv.LoadNodeMap(*nodeMap); err != nil {
			fmt.Fprintf(stderr, "recvstats: %v\n", err)
			return exitFail
		}
	}
	if *keyFile != "" {
		if cfg.Key, err = wire.LoadKey(*keyFile); err != nil {
			fmt.Fprintf(stderr, "recvstats: %v\n", err)
			return exitFail
		}
	}

	if !*debug && !daemon.IsChild() {
		if err := daemon.Detach(); err != nil {
			fmt.Fprintf(stderr, "recvstats: %v\n", err)
			return exitFail
		}
		return exitOK
	}
	ready := daemon.Child()
	log := daemon.Logger("recvstats", *debug)
	cfg.Logger = log

	srv, err := recv.NewServer(cfg)
	if err != nil {
		ready.Fail(err)
		fmt.Fprintf(stderr, "recvstats: %v\n", err)
		return exitFail
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if cfg.Interface == "" {
		log.Warn("no interface given (-i): receiving by unicast only, no multicast update requests")
	}
	log.Info("serving", "addr", srv.Addr().String(), "interface", cfg.Interface, "group", cfg.Group.String(),
		"table", srv.TablePath(), "down_after", cfg.DownAfter.String(), "authenticated", len(cfg.Key) > 0,
		"version", daemon.Version(), "pid", os.Getpid())
	ready.Ready()
	start := time.Now()

	serveErr := srv.Serve(ctx)
	closeErr := srv.Close()
	if err := errors.Join(serveErr, closeErr); err != nil {
		log.Error("stopped", "err", err)
		fmt.Fprintf(stderr, "recvstats: %v\n", err)
		return exitFail
	}
	log.Info("stopped", "uptime", time.Since(start).Round(time.Second).String())
	return exitOK
}
