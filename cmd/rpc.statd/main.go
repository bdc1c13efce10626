// Command rpc.statd is hoststat's NSM host status monitor (ONC RPC program
// 100024), a drop-in for the nfs-utils and FreeBSD daemons. See statd.Run.
package main

import (
	"context"
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
	"github.com/hoststat/hoststat/liveness"
	"github.com/hoststat/hoststat/nsm"
	"github.com/hoststat/hoststat/nsm/etcdstore"
	"github.com/hoststat/hoststat/nsm/identity"
	"github.com/hoststat/hoststat/nsm/nfsutils"
	"github.com/hoststat/hoststat/shm"
	"github.com/hoststat/hoststat/statd"
)

// Exit codes: 0 success; 1 the daemon failed, or -n left hosts owed;
// 2 usage errors and refusing to run from inetd.
const (
	exitOK    = 0
	exitFail  = 1
	exitUsage = 2
)

const name = "rpc.statd"

const usageHead = `Usage: rpc.statd [-dFLn] [-p port] [-o port] [-P dir] [--name name] [-H prog] [--metrics addr]
                 [--store etcd://HOST:PORT[,HOST:PORT...]/PREFIX [--etcd-cacert file ...] [--identity NAME=ADDR ...]]

`

const usageFoot = `Run rpc.statd from the boot scripts, never from inetd. Needs root to register with rpcbind
and to call local lock managers back from a port below 1024. statdctl -P DIR shows its state.
`

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	fs := pflag.NewFlagSet(name, pflag.ContinueOnError)
	var (
		debug      = fs.BoolP("debug", "d", false, "write debug records (every RPC transaction) to syslog, facility daemon, level debug")
		notifyOnly = fs.BoolP("notify", "n", false, "send SM_NOTIFY to every host owed one after a reboot, then exit: through the running daemon if there is one, else on its own (a reboot step first)")
		foreground = fs.BoolP("foreground", "F", false, "stay in the foreground and also log to stderr")
		port       = fs.IntP("port", "p", 0, "port for the RPC listeners (default: ephemeral)")
		outPort    = fs.IntP("outgoing-port", "o", 0, "source port of outgoing SM_NOTIFY calls (default: any)")
		stateDir   = fs.StringP("state-directory-path", "P", statd.DefaultStateDir, "directory of the durable store and the admin socket")
		ourName    = fs.String("name", "", "our name in SM_NOTIFY (default: this host's fully qualified name; the short name is sent too)")
		noNotify   = fs.BoolP("no-notify", "L", false, "do not notify hosts owed a notification when starting: rpc.statd -n asks the daemon for that pass later (after the NFS server starts)")
		haCallout  = fs.StringP("ha-callout", "H", "", "run `PROG` add-client|del-client MON_NAME MY_NAME on SM_MON/SM_UNMON, sm-notify MON_NAME IP STATE on SM_NOTIFY")
		metrics    = fs.String("metrics", "", "serve Prometheus metrics at http://`ADDR`/metrics (HOST:PORT, loopback; off by default)")
		metricsPub = fs.Bool("metrics-public", false, "allow --metrics on an address other than loopback, and requests for any host name")
		cbProgs    = fs.UintSlice("callback-program", nil, "also allow registrants to be called back at RPC program `PROG` (repeatable; the lock manager, 100021, always is)")
		_          = fs.BoolP("help", "h", false, "show this help")
		_          = fs.BoolP("version", "v", false, "show the version")
		schedule   = fs.String("notify-schedule", os.Getenv("HOSTSTAT_STATD_SCHEDULE"), "notification retry schedule, e.g. first-retry=1s,max-retry=30s,frequent-for=10m,slow=1h,give-up=24h (tests)")
		noRegister = fs.Bool("no-rpcbind", false, "do not register with the local rpcbind (tests)")
		bootIDPath = fs.String("boot-id-path", "", "read the boot id from this file (tests)")
		resetStore = fs.Bool("reset-store", false, "begin a new store when the old one is missing, empty or damaged (its registrations and owed notifications are lost; the state number still moves forward)")
		nfsDir     = fs.String("nfs-utils-dir", nfsutils.DefaultDir, "import this nfs-utils state `DIR` (sm/, sm.bak/, state) when the store is new; \"\" imports nothing")
		confPath   = fs.String("nfs-conf", nfsutils.DefaultConfPath, "read the [statd] and [sm-notify] sections of this file (tests)")
		kernelPath = fs.String("kernel-state-path", statd.DefaultKernelStatePath, "tell the kernel's lock manager the state number in this file (tests)")
		telDir     = fs.String("telemetry", "", "follow the telemetry table in `DIR` (reboots without SM_NOTIFY, liveness); default "+shm.DefaultDir+" when its table is there")
		noTel      = fs.Bool("no-telemetry", false, "do not read the telemetry table")
		goneAfter  = fs.Duration("gone-after", liveness.DefaultGoneAfter, "a host telemetry knows, silent this long, is gone")
		relGone    = fs.Bool("release-gone", false, "release the locks of a monitored host gone past --gone-after and forget it, as statdctl forget does")
		gracePath  = fs.String("end-grace-path", statd.DefaultEndGracePath, "after a reboot, once every host owed a notification has it, end the lock manager's grace period by writing this file (when it exists); \"\" never")
		settle     = fs.Duration("grace-settle", statd.DefaultGraceSettle, "how long after the last host acknowledges our reboot's notification the grace period is ended (its lock manager's reclaims come just after)")
		telPeriod  = fs.Duration("telemetry-period", liveness.DefaultPeriod, "how often the telemetry table is read (tests)")
		idents     = fs.StringArray("identity", nil, "also serve the NSM identity `NAME=ADDR[,ADDR]` (repeatable; needs --store etcd://): while this statd owns it in etcd, SM_MON whose my_name is NAME goes to it, and on taking it over the state moves on and every host it monitors is notified from ADDR as NAME")
		identTTL   = fs.Duration("identity-ttl", 10*time.Second, "lease of an --identity's ownership in etcd (whole seconds): how long it stays unserved after its statd dies")
		etcd       = etcdstore.AddFlags(fs, "keep this host's NSM identity (--name) in etcd: `URL` etcd://HOST:PORT[,HOST:PORT...]/PREFIX; the default is the bbolt store in -P, and with etcd -P holds only the admin socket")
	)
	for _, h := range []string{"notify-schedule", "no-rpcbind", "boot-id-path", "nfs-conf", "kernel-state-path", "telemetry-period"} {
		fs.MarkHidden(h)
	}
	if code, done := (daemon.Flags{Head: usageHead, Foot: usageFoot}).Parse(fs, args, stdout, stderr); done {
		return code
	}
	if statd.StdinIsSocket() {
		fmt.Fprintln(stderr, "rpc.statd: standard input is a socket: refusing to run from inetd; the NSM protocol needs statd running from boot to shutdown (start it from the boot scripts)")
		return exitUsage
	}
	// nfs.conf fills in what the command line left out.
	conf, err := nfsutils.ReadConf(*confPath)
	if err != nil {
		return daemon.UsageError(stderr, name, "%v", err)
	}
	if err := applyConf(conf, fs, port, outPort, ourName, stateDir, haCallout, nfsDir); err != nil {
		return daemon.UsageError(stderr, name, "%s: %v", *confPath, err)
	}
	for _, p := range []struct {
		flag string
		v    int
	}{{"--port", *port}, {"--outgoing-port", *outPort}} {
		if p.v < 0 || p.v > 65535 {
			return daemon.UsageError(stderr, name, "%s %d is not in 0..65535", p.flag, p.v)
		}
	}
	if *ourName != "" {
		if err := nsm.ValidateMonName(*ourName); err != nil {
			return daemon.UsageError(stderr, name, "--name: %v", err)
		}
	}
	if *metrics != "" {
		if err := statd.CheckMetricsAddr(*metrics, *metricsPub); err != nil {
			return daemon.UsageError(stderr, name, "%v", err)
		}
	}
	sch, err := statd.ParseSchedule(*schedule)
	if err != nil {
		return daemon.UsageError(stderr, name, "--notify-schedule: %v", err)
	}
	// A daemonized child runs in "/": make paths absolute while they mean
	// what the user meant.
	for _, p := range []*string{stateDir, nfsDir} {
		if abs, err := filepath.Abs(*p); err == nil && *p != "" {
			*p = abs
		}
	}
	if strings.Contains(*haCallout, "/") {
		if abs, err := filepath.Abs(*haCallout); err == nil {
			*haCallout = abs
		}
	}
	storeCfg, err := storeConfig(fs, etcd)
	if err != nil {
		return daemon.UsageError(stderr, name, "%v", err)
	}
	if storeCfg != nil {
		*nfsDir = "" // bbolt's import: an etcd identity is not this host's nfs-utils state
	}
	ids, err := identity.ParseAll(*idents)
	if err != nil {
		return daemon.UsageError(stderr, name, "%v", err)
	}
	if len(ids) > 0 && storeCfg == nil {
		return daemon.UsageError(stderr, name, "--identity needs --store etcd://HOST:PORT[,HOST:PORT...]/PREFIX")
	}
	if *identTTL < 2*time.Second || *identTTL%time.Second != 0 {
		return daemon.UsageError(stderr, name, "--identity-ttl %v: want whole seconds, at least 2s", *identTTL)
	}
	for _, id := range ids {
		if *ourName != "" && nsm.CanonicalName(id.Name) == nsm.CanonicalName(*ourName) {
			return daemon.UsageError(stderr, name, "--identity %s: that is --name, the host's own identity", id.Name)
		}
	}
	cfg := statd.Config{Etcd: storeCfg, Identities: ids, IdentityTTL: *identTTL,
		Name: *ourName, StateDir: *stateDir, Port: *port, OutgoingPort: *outPort,
		HACallout: *haCallout, NoNotify: *noNotify, Schedule: sch,
		Register: !*noRegister, BootIDPath: *bootIDPath,
		ResetStore: *resetStore, NFSUtilsDir: *nfsDir, KernelStatePath: *kernelPath,
		MetricsAddr: *metrics, MetricsPublic: *metricsPub,
	}
	if *goneAfter <= 0 || *telPeriod <= 0 || *settle < 0 {
		return daemon.UsageError(stderr, name, "--gone-after and --telemetry-period must be positive durations, --grace-settle not negative")
	}
	if cfg.Telemetry, err = telemetryDir(*telDir, *noTel); err != nil {
		return daemon.UsageError(stderr, name, "%v", err)
	}
	cfg.GoneAfter, cfg.TelemetryPeriod, cfg.EndGracePath, cfg.ReleaseGone, cfg.GraceSettle = *goneAfter, *telPeriod, *gracePath, *relGone, *settle
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
		if sum.Daemon != 0 {
			log.Info("the running daemon made the notification pass", "pid", sum.Daemon)
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
	serving := false
	err = statd.Run(ctx, cfg, func() { serving = true; ready.Ready() })
	switch {
	case err == nil:
		return exitOK
	case serving:
		// The logger shows it (on stderr too under -F).
		log.Error("rpc.statd stopped", "err", err)
	case *foreground:
		// A start-up error: said once, plainly, where the command was typed.
		fmt.Fprintln(stderr, "rpc.statd:", err)
	default:
		// The waiting parent prints it; syslog keeps it.
		ready.Fail(err)
		log.Error("rpc.statd could not start", "err", err)
	}
	return exitFail
}

// storeConfig is the etcd store --store names, or nil for the bbolt
// store; the bbolt-only options and --etcd-* without --store are refused.
func storeConfig(fs *pflag.FlagSet, f *etcdstore.Flags) (*etcdstore.Config, error) {
	if *f.Store == "" {
		for _, o := range []string{"etcd-cacert", "etcd-cert", "etcd-key", "etcd-user", "etcd-password-file"} {
			if fs.Changed(o) {
				return nil, fmt.Errorf("--%s needs --store etcd://HOST:PORT[,HOST:PORT...]/PREFIX", o)
			}
		}
		return nil, nil
	}
	c, err := f.Config()
	if err != nil {
		return nil, err
	}
	for _, o := range []string{"reset-store", "nfs-utils-dir"} {
		if fs.Changed(o) {
			return nil, fmt.Errorf("--%s is for the bbolt store in -P, not --store etcd://", o)
		}
	}
	return &c, nil
}

// telemetryDir is the table directory to follow: --telemetry's (made
// absolute: a daemonized child runs in "/"), else the standard one when
// its table is there, else none; --no-telemetry wins over both.
func telemetryDir(dir string, off bool) (string, error) {
	switch {
	case off && dir != "":
		return "", fmt.Errorf("--telemetry and --no-telemetry together")
	case off:
		return "", nil
	case dir != "":
		return filepath.Abs(dir)
	}
	if _, err := os.Stat(filepath.Join(shm.DefaultDir, shm.FileName)); err == nil {
		return shm.DefaultDir, nil
	}
	return "", nil
}
