// Command rpc.statd is hoststat's NSM host status monitor (ONC RPC program
// 100024), a drop-in for the nfs-utils and FreeBSD daemons. See statd.Run.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"github.com/hoststat/hoststat/internal/daemon"
	"github.com/hoststat/hoststat/statd"
)

// Exit codes: 0 success; 1 the daemon failed, or -n left hosts owed;
// 2 usage errors and refusing to run from inetd.
const (
	exitOK    = 0
	exitFail  = 1
	exitUsage = 2
)

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	fs := pflag.NewFlagSet("rpc.statd", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		debug      = fs.BoolP("debug", "d", false, "write debug records (every RPC transaction) to syslog, facility daemon, level debug")
		notifyOnly = fs.BoolP("notify", "n", false, "just send SM_NOTIFY to every host owed one after a reboot, then exit; do not start the daemon")
		foreground = fs.BoolP("foreground", "F", false, "stay in the foreground and also log to stderr")
		port       = fs.IntP("port", "p", 0, "port for the RPC listeners (default: ephemeral)")
		outPort    = fs.IntP("outgoing-port", "o", 0, "source port of outgoing SM_NOTIFY calls (default: any)")
		stateDir   = fs.StringP("state-directory-path", "P", statd.DefaultStateDir, "directory of the durable store and the admin socket")
		name       = fs.String("name", "", "our name in SM_NOTIFY (default: this host's fully qualified name; the short name is sent too)")
		noNotify   = fs.BoolP("no-notify", "L", false, "do not notify hosts owed a notification when starting")
		haCallout  = fs.StringP("ha-callout", "H", "", "run `PROG` add-client|del-client MON_NAME MY_NAME on SM_MON/SM_UNMON, sm-notify MON_NAME IP STATE on SM_NOTIFY")
		cbProgs    = fs.UintSlice("callback-program", nil, "also allow registrants to be called back at RPC program `PROG` (repeatable; the lock manager, 100021, always is)")
		help       = fs.BoolP("help", "h", false, "show this help")
		version    = fs.BoolP("version", "v", false, "show the version")
		schedule   = fs.String("notify-schedule", os.Getenv("HOSTSTAT_STATD_SCHEDULE"), "notification retry schedule, e.g. first-retry=1s,max-retry=30s,frequent-for=10m,slow=1h,give-up=24h (tests)")
		noRegister = fs.Bool("no-rpcbind", false, "do not register with the local rpcbind (tests)")
		bootIDPath = fs.String("boot-id-path", "", "read the boot id from this file (tests)")
	)
	for _, h := range []string{"notify-schedule", "no-rpcbind", "boot-id-path"} {
		fs.MarkHidden(h)
	}
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: rpc.statd [-dFLn] [-p port] [-o port] [-P dir] [--name name] [-H prog]\n\n")
		fmt.Fprint(stderr, fs.FlagUsages())
		fmt.Fprintf(stderr, "\nRun rpc.statd from the boot scripts, never from inetd. Needs root to register with rpcbind\nand to call local lock managers back from a port below 1024. statdctl -P DIR shows its state.\n")
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if *help {
		fs.SetOutput(stdout)
		fs.Usage()
		return exitOK
	}
	if *version {
		fmt.Fprintf(stdout, "rpc.statd (hoststat) %s\n", daemon.Version())
		return exitOK
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "rpc.statd: unexpected argument %q\n", fs.Arg(0))
		return exitUsage
	}
	if statd.StdinIsSocket() {
		fmt.Fprintln(stderr, "rpc.statd: standard input is a socket: refusing to run from inetd; the NSM protocol needs statd running from boot to shutdown (start it from the boot scripts)")
		return exitUsage
	}
	sch, err := statd.ParseSchedule(*schedule)
	if err != nil {
		fmt.Fprintln(stderr, "rpc.statd:", err)
		return exitUsage
	}
	// A daemonized child runs in "/": make paths absolute while they mean
	// what the user meant.
	if abs, err := filepath.Abs(*stateDir); err == nil {
		*stateDir = abs
	}
	if strings.Contains(*haCallout, "/") {
		if abs, err := filepath.Abs(*haCallout); err == nil {
			*haCallout = abs
		}
	}
	cfg := statd.Config{
		Name: *name, StateDir: *stateDir, Port: *port, OutgoingPort: *outPort,
		HACallout: *haCallout, NoNotify: *noNotify, Schedule: sch,
		Register: !*noRegister, BootIDPath: *bootIDPath,
	}
	for _, p := range *cbProgs {
		if p > 1<<32-1 {
			fmt.Fprintf(stderr, "rpc.statd: --callback-program %d: not an RPC program number\n", p)
			return exitUsage
		}
		cfg.CallbackPrograms = append(cfg.CallbackPrograms, uint32(p))
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	if *notifyOnly {
		log, closeLog := daemon.NewLogger(daemon.LogOptions{Debug: *debug, Foreground: true, Stderr: stderr, Tag: "rpc.statd"})
		defer closeLog()
		cfg.Logger = log
		sum, err := statd.NotifyOnce(ctx, cfg)
		if err != nil {
			fmt.Fprintln(stderr, "rpc.statd:", err)
			return exitFail
		}
		fmt.Fprintf(stdout, "rpc.statd: state %d: notified %d of %d hosts; %d still owed\n", sum.State, sum.Notified, sum.Total, sum.Owed)
		if sum.Owed > 0 {
			return exitFail
		}
		return exitOK
	}

	if !*foreground && !daemon.IsChild() {
		daemon.StartTimeout = time.Minute
		if err := daemon.Detach(); err != nil {
			fmt.Fprintln(stderr, "rpc.statd:", err)
			return exitFail
		}
		return exitOK // parent: the daemon serves and is registered
	}
	ready := daemon.Child()
	log, closeLog := daemon.NewLogger(daemon.LogOptions{Debug: *debug, Foreground: *foreground, Stderr: stderr, Tag: "rpc.statd"})
	defer closeLog()
	cfg.Logger = log
	err = statd.Run(ctx, cfg, ready.Ready)
	if err != nil {
		ready.Fail(err)
		log.Error("rpc.statd stopped", "err", err)
		if *foreground {
			fmt.Fprintln(stderr, "rpc.statd:", err)
		}
		return exitFail
	}
	return exitOK
}
