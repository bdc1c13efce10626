// Command sendstats is the node agent of hoststat: it samples /proc and
// sends status packets to the masters' recvstats, by multicast on an
// interface and/or by unicast. See sendstats --help.
package main

import (
	"io"
	"log/slog"
	"math"
	"net/netip"
	"os"
	"runtime"
	"time"

	flag "github.com/spf13/pflag"

	"github.com/hoststat/hoststat/internal/daemon"
	"github.com/hoststat/hoststat/telemetry/send"
	"github.com/hoststat/hoststat/telemetry/wire"
)

const name = "sendstats"

func main() {
	// One processor is all the agent needs; with one, handing a request
	// from a socket's goroutine to the sampler wakes no other thread, and
	// the runtime does not re-read the CPU limit every second. GOMAXPROCS
	// in the environment still decides.
	if os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(1)
	}
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

const usageHead = `Usage: sendstats [-d] [-r SECONDS] [-i IF] [-a HOST[:PORT]]... [options]

Samples this node's /proc every SECONDS and sends it to recvstats: by
multicast on interface IF, and/or by unicast to each master given with -a.
Answers the masters' update requests at once. Without -d it goes to the
background once it is running.

`

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SortFlags = false
	var (
		rate    = fs.Float64P("rate", "r", send.DefaultRate.Seconds(), "send a sample every `SECONDS` (fractions allowed)")
		iface   = fs.StringP("interface", "i", "", "multicast on interface `IF`")
		masters = fs.StringArrayP("address", "a", nil, "also send by unicast to the master at `HOST[:PORT]` (repeatable)")
		port    = fs.IntP("port", "p", wire.DefaultPort, "UDP `PORT` of recvstats (multicast, and masters given without one)")
		debug   = fs.BoolP("debug", "d", false, "debug output on stderr; do not fork")
		// -h and -v are answered by daemon.ParseFlags.
		_       = fs.BoolP("help", "h", false, "show this help and exit")
		_       = fs.BoolP("version", "v", false, "show the version and exit")
		node    = fs.Int("node", send.NoNode, "this node's number `N` (believed when signed, or pinned by the master's node map); -1: the master assigns one from this host's address")
		keyFile = fs.String("key-file", "", "authenticate packets with the shared key in `FILE`")
		group   = fs.String("group", wire.DefaultGroup.String(), "multicast group `ADDR`")
		proc    = fs.String("proc", "/proc", "read the proc file system at `DIR`")
		noDet   = fs.Bool("no-details", false, "do not send hostname, disks and filesystems (masters older than them count each such datagram as malformed)")
		detEv   = fs.Int("details-every", send.DefaultDetailsEvery, "send hostname, disks and filesystems with one sample in `N` (and when they change, and in answer to a master's request); the master keeps them in between; 1: with every sample, for masters older than that")
		netFS   = fs.Bool("network-filesystems", false, "report NFS, CIFS, Lustre and other network mounts too (left out by default: they are the server's)")
	)
	if code, done := daemon.ParseFlags(fs, args, usageHead, stdout, stderr); done {
		return code
	}
	bad := func(format string, a ...any) int { return daemon.UsageError(stderr, name, format, a...) }
	if math.IsNaN(*rate) || *rate < 0.001 || *rate > 86400 {
		return bad("rate %v is not in 0.001..86400 seconds", *rate)
	}
	if *port < 1 || *port > 65535 {
		return bad("port %d is not in 1..65535", *port)
	}
	if *node < send.NoNode || *node >= 1<<20 {
		return bad("node %d is not in -1..%d", *node, 1<<20-1)
	}
	if *detEv < 1 || *detEv > 3600 {
		return bad("details-every %d is not in 1..3600", *detEv)
	}
	if *iface == "" && len(*masters) == 0 {
		return bad("nowhere to send: give -i IF (multicast) and/or -a HOST (unicast)")
	}
	g, err := netip.ParseAddr(*group)
	if err != nil || !g.Is4() || !g.IsMulticast() {
		return bad("group %q is not an IPv4 multicast address", *group)
	}
	cfg := send.Config{
		Rate:      time.Duration(*rate * float64(time.Second)),
		Interface: *iface, Group: g, Port: *port, Node: *node, ProcRoot: *proc,
		NoDetails: *noDet, DetailsEvery: *detEv, NetworkFilesystems: *netFS,
	}
	// Names are resolved by the running agent, again and again: a node
	// may boot before the name service is up, and a master may move.
	if cfg.Masters, cfg.MasterNames, err = send.ParseMasters(*masters, *port); err != nil {
		return bad("%v", err)
	}
	// The agent works from /: every path is made absolute first, here
	// and on the command line the background process is started with.
	abs, err := daemon.AbsPaths(fs, "key-file", "proc")
	if err != nil {
		return daemon.Failed(stderr, name, err)
	}
	os.Args = append(append(os.Args[:1:1], args...), abs...)
	cfg.ProcRoot = *proc
	if *keyFile != "" {
		if cfg.Key, err = wire.LoadKey(*keyFile); err != nil {
			return daemon.Failed(stderr, name, err)
		}
	}

	return daemon.Run(name, *debug, stderr, func(log *slog.Logger) (daemon.Service, error) {
		cfg.Logger = log
		s, err := send.New(cfg)
		if err != nil {
			return daemon.Service{}, err
		}
		var dests []string
		for _, m := range cfg.Masters {
			dests = append(dests, m.String())
		}
		for _, m := range cfg.MasterNames {
			dests = append(dests, m.String())
		}
		return daemon.Service{Serve: s.Run, Close: s.Close, About: []any{
			"rate", cfg.Rate.String(), "interface", cfg.Interface, "group", g.String(), "port", cfg.Port,
			"masters", dests, "node", cfg.Node, "authenticated", len(cfg.Key) > 0,
		}}, nil
	})
}
