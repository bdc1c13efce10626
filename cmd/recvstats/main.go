// Command recvstats is the master daemon of hoststat: it receives status
// packets from the cluster's nodes and keeps the shared-memory table that
// beostat reads. See recvstats --help.
package main

import (
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"

	flag "github.com/spf13/pflag"

	"github.com/hoststat/hoststat/internal/daemon"
	"github.com/hoststat/hoststat/shm"
	"github.com/hoststat/hoststat/telemetry/recv"
	"github.com/hoststat/hoststat/telemetry/wire"
)

const name = "recvstats"

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

const usageHead = `Usage: recvstats [-d] [-i IF] [-p PORT] [options]

Receives status packets from the cluster nodes' sendstats and keeps the
shared-memory table that beostat reads. Without -d it goes to the
background once it is serving.

`

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SortFlags = false // the manual page's order
	var (
		debug = fs.BoolP("debug", "d", false, "debug output on stderr; do not fork")
		iface = fs.StringP("interface", "i", "", "join the multicast group on interface `IF` (without it: unicast only)")
		port  = fs.IntP("port", "p", wire.DefaultPort, "UDP `PORT` to listen on")
		// -h and -v are answered by daemon.ParseFlags.
		_         = fs.BoolP("help", "h", false, "show this help and exit")
		_         = fs.BoolP("version", "v", false, "show the version and exit")
		listen    = fs.String("listen", "", "listen on this unicast `ADDR` only (e.g. 127.0.0.1); default every IPv4 address")
		group     = fs.String("group", wire.DefaultGroup.String(), "multicast group `ADDR` of status packets and update requests")
		shmDir    = fs.String("shm-dir", shm.DefaultDir, "`DIR` of the shared-memory table (created 0755 if missing)")
		nodes     = fs.IntP("nodes", "N", 64, "initial node count of the table `N` (it grows on demand)")
		maxNodes  = fs.Int("max-nodes", recv.DefaultMaxNodes, "hold at most `N` nodes, numbered 0..N-1")
		forget    = fs.Duration("forget-after", recv.DefaultForgetAfter, "forget a node silent for `DURATION`: its record goes and its number is free")
		admit     = fs.Float64("admit-rate", recv.DefaultAdmitRate, "admit at most `N` new unsigned senders a second (bursts of --admit-burst)")
		burst     = fs.Int("admit-burst", recv.DefaultAdmitBurst, "admit a burst of up to `N` new unsigned senders at once")
		histNodes = fs.Int("history-nodes", shm.DefaultHistoryNodes, "keep the history of up to `N` nodes in <shm-dir>/beostat.history (31 KiB each, reserved as nodes come, from -N on); 0 keeps none")
		histFine  = fs.Int("history-points", 900, "full-resolution history points per node (`N` samples: 15 min at 1 s)")
		histMins  = fs.Int("history-minutes", 1440, "one-minute history points per node (`N` minutes: 24 h)")
		nodeMap   = fs.String("node-map", "", "`FILE` of \"NODE ADDRESS\" lines numbering nodes that do not send a number")
		downAfter = fs.Duration("down-after", recv.DefaultDownAfter, "show a node down after `DURATION` without a packet")
		keyFile   = fs.String("key-file", "", "accept only packets authenticated with the shared key in `FILE`")
		onEvent   = fs.String("on-event", "", "run `PROG` NODE ADDR up|down|reboot|forgotten for each change of a node, one at a time")
		evTimeout = fs.Duration("event-timeout", recv.DefaultHookTimeout, "stop a run of --on-event's program after `DURATION`")
		evQueue   = fs.Int("event-queue", recv.DefaultHookQueue, "hold events of at most `N` nodes for --on-event (one a node, the latest)")
	)
	if code, done := daemon.ParseFlags(fs, args, usageHead, stdout, stderr); done {
		return code
	}
	bad := func(format string, a ...any) int { return daemon.UsageError(stderr, name, format, a...) }
	cfg := recv.Config{Interface: *iface, ShmDir: *shmDir, InitialNodes: *nodes, DownAfter: *downAfter,
		History: shm.HistoryOptions{Nodes: *histNodes, Fine: *histFine, Coarse: *histMins}, NoHistory: *histNodes == 0}
	if *histNodes < 0 || *histFine < 1 || *histMins < 1 {
		return bad("history sizes must be positive (--history-nodes 0 keeps none)")
	}
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
	if *maxNodes < 1 || *maxNodes > recv.MaxNodes {
		return bad("max-nodes %d is not in 1..%d", *maxNodes, recv.MaxNodes)
	}
	if *forget <= 0 {
		return bad("forget-after %v must be positive", *forget)
	}
	if !(*admit > 0) || *burst < 1 {
		return bad("admit-rate %v and admit-burst %d must be positive", *admit, *burst)
	}
	if *evTimeout <= 0 || *evQueue < 1 {
		return bad("event-timeout %v and event-queue %d must be positive", *evTimeout, *evQueue)
	}
	cfg.Hook = recv.HookConfig{Program: *onEvent, Timeout: *evTimeout, Queue: *evQueue}
	cfg.Table = recv.TableConfig{MaxNodes: *maxNodes, ForgetAfter: *forget, AdmitRate: *admit, AdmitBurst: *burst}
	// The daemon works from /: every path is made absolute first, here
	// and on the command line the background process is started with.
	abs, err := daemon.AbsPaths(fs, "shm-dir", "node-map", "key-file")
	if err != nil {
		return daemon.Failed(stderr, name, err)
	}
	if *onEvent != "" {
		// Found now, where the command was typed, as the daemon works from /.
		p, err := exec.LookPath(*onEvent)
		if err == nil {
			p, err = filepath.Abs(p)
		}
		if err != nil {
			return daemon.Failed(stderr, name, fmt.Errorf("--on-event: %w", err))
		}
		*onEvent = p
		abs = append(abs, "--on-event="+p)
	}
	os.Args = append(append(os.Args[:1:1], args...), abs...)
	cfg.ShmDir = *shmDir
	cfg.Hook.Program = *onEvent
	// Files are read before going to the background, so their errors
	// show where the command was typed.
	if *nodeMap != "" {
		if cfg.NodeMap, err = recv.LoadNodeMap(*nodeMap); err != nil {
			return daemon.Failed(stderr, name, err)
		}
		for a, n := range cfg.NodeMap {
			if n >= *maxNodes {
				return daemon.Failed(stderr, name, fmt.Errorf("node map %s: node %d (%s) is not below --max-nodes %d", *nodeMap, n, a, *maxNodes))
			}
		}
	}
	if *keyFile != "" {
		if cfg.Key, err = wire.LoadKey(*keyFile); err != nil {
			return daemon.Failed(stderr, name, err)
		}
	}

	return daemon.Run(name, *debug, stderr, func(log *slog.Logger) (daemon.Service, error) {
		cfg.Logger = log
		srv, err := recv.NewServer(cfg)
		if err != nil {
			return daemon.Service{}, err
		}
		if cfg.Interface == "" {
			log.Warn("no interface given (-i): receiving by unicast only, no multicast update requests")
		}
		return daemon.Service{Serve: srv.Serve, Close: srv.Close, About: []any{
			"addr", srv.Addr().String(), "interface", cfg.Interface, "group", cfg.Group.String(), "table", srv.TablePath(),
			"down_after", cfg.DownAfter.String(), "authenticated", len(cfg.Key) > 0,
			"max_nodes", *maxNodes, "forget_after", forget.String(),
		}}, nil
	})
}
