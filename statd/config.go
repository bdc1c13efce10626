package statd

import (
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/hoststat/hoststat/nsm"
	"github.com/hoststat/hoststat/nsm/etcdstore"
	"github.com/hoststat/hoststat/nsm/identity"
)

// DefaultStateDir is where the store and the admin socket live by default.
const DefaultStateDir = "/var/lib/hoststat-statd"

// ParseSchedule reads "first-retry=100ms,max-retry=1s,frequent-for=5s,
// slow=2s,give-up=30s" over the default schedule (keys left out keep their
// default). It exists so tests can run the schedule quickly.
func ParseSchedule(s string) (nsm.Schedule, error) {
	sch := nsm.DefaultSchedule()
	if strings.TrimSpace(s) == "" {
		return sch, nil
	}
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if !ok {
			return sch, fmt.Errorf("schedule: %q is not key=duration", kv)
		}
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return sch, fmt.Errorf("schedule: %s: bad duration %q", k, v)
		}
		switch k {
		case "first-retry":
			sch.FirstRetry = d
		case "max-retry":
			sch.MaxRetry = d
		case "frequent-for":
			sch.FrequentFor = d
		case "slow":
			sch.Slow = d
		case "give-up":
			sch.GiveUpAfter = d
		default:
			return sch, fmt.Errorf("schedule: unknown key %q (first-retry, max-retry, frequent-for, slow, give-up)", k)
		}
	}
	return sch, nil
}

// Config is everything the daemon needs; cmd/rpc.statd fills it from flags.
type Config struct {
	Name         string       // our name in SM_NOTIFY (--name); default: the host's FQDN
	StateDir     string       // -P
	Port         int          // -p: listener port, 0 for ephemeral
	OutgoingPort int          // -o: source port of SM_NOTIFY, 0 for any
	HACallout    string       // -H
	NoNotify     bool         // -L: do not notify owed hosts at start
	Schedule     nsm.Schedule // zero: nsm.DefaultSchedule()
	// NotifyWorkers bounds the SM_NOTIFY calls in flight (default 256).
	NotifyWorkers int
	// Listen lists the addresses to serve on; default 0.0.0.0 and ::.
	Listen []netip.Addr
	// Register with the local rpcbind (default true through the command).
	Register bool
	// RPCBindPort is the port of every host's rpcbind (111; tests change it).
	RPCBindPort int
	// BootIDPath overrides /proc/sys/kernel/random/boot_id (tests).
	BootIDPath string
	// NotifyTimeout bounds one attempt on one host: rpcbind lookup plus the
	// SM_NOTIFY calls (default 3s).
	NotifyTimeout time.Duration
	// ResetStore (--reset-store) begins a new store when the old one is
	// missing, empty or damaged while the state file knows a state number;
	// the state still moves forward from the state file's.
	ResetStore bool
	// NFSUtilsDir is the nfs-utils state directory a new store imports
	// (--nfs-utils-dir; the command's default is /var/lib/nfs); "" imports
	// nothing.
	NFSUtilsDir string
	// Etcd, when set (--store etcd://…), keeps the host's identity (Name)
	// in etcd instead of the bbolt store in StateDir, which then holds
	// only the admin socket and a lock file; ResetStore and NFSUtilsDir
	// are bbolt's and not used.
	Etcd *etcdstore.Config
	// Identities (--identity, with Etcd) are served besides the host's
	// own, each while this statd owns it in etcd; IdentityTTL is the
	// ownership lease's (--identity-ttl, default 10s).
	Identities  []identity.Identity
	IdentityTTL time.Duration
	// KernelStatePath is where the state number is written for the
	// kernel's lock manager when the file exists (the command's default is
	// DefaultKernelStatePath); "" writes nothing.
	KernelStatePath string
	// BootTime overrides when the host booted (tests of the import rule).
	BootTime time.Time
	// CallbackPrograms are programs registrants may name as callback
	// targets besides the lock manager's (--callback-program); never
	// SM_PROG or rpcbind.
	CallbackPrograms []uint32
	// MetricsAddr (--metrics), when set, is the HOST:PORT of the
	// Prometheus /metrics endpoint; a loopback address unless
	// MetricsPublic (--metrics-public).
	MetricsAddr   string
	MetricsPublic bool
	// Telemetry is the telemetry table's directory (--telemetry); "" runs
	// without telemetry.
	Telemetry string
	// TelemetryPeriod is how often the table is scanned (default 1s).
	TelemetryPeriod time.Duration
	// GoneAfter is how long a host telemetry knows is silent before it is
	// gone (--gone-after, default 24h).
	GoneAfter time.Duration
	// GraceSettle is how long after the last acknowledgement the grace
	// period is ended (--grace-settle; the command's default is
	// DefaultGraceSettle).
	GraceSettle time.Duration
	// ReleaseGone forgets a monitored host gone past GoneAfter as
	// statdctl forget does (--release-gone).
	ReleaseGone bool
	// EndGracePath is where the lock manager is told its grace period may
	// end once every host owed a notification after our reboot has it
	// (--end-grace-path; the command's default is DefaultEndGracePath);
	// "" tells nothing.
	EndGracePath string
	// Resolver looks names up (default net.DefaultResolver).
	Resolver Resolver
	Logger   *slog.Logger
}

func (c *Config) withDefaults() (Config, error) {
	cc := *c
	if cc.StateDir == "" {
		cc.StateDir = DefaultStateDir
	}
	if cc.Schedule == (nsm.Schedule{}) {
		cc.Schedule = nsm.DefaultSchedule()
	}
	if cc.NotifyWorkers <= 0 {
		cc.NotifyWorkers = 256
	}
	if len(cc.Listen) == 0 {
		cc.Listen = []netip.Addr{netip.IPv4Unspecified(), netip.IPv6Unspecified()}
	}
	if cc.RPCBindPort == 0 {
		cc.RPCBindPort = 111
	}
	if cc.NotifyTimeout <= 0 {
		cc.NotifyTimeout = 3 * time.Second
	}
	if cc.Logger == nil {
		cc.Logger = slog.New(slog.DiscardHandler)
	}
	if cc.Name == "" {
		cc.Name = DefaultName()
	}
	if err := nsm.CheckCallbackPrograms(cc.CallbackPrograms); err != nil {
		return cc, fmt.Errorf("--callback-program: %w", err)
	}
	cc.CallbackPrograms = append([]uint32{nsm.NLMProgram}, cc.CallbackPrograms...)
	if cc.Resolver == nil {
		cc.Resolver = net.DefaultResolver
	}
	if err := nsm.ValidateMonName(cc.Name); err != nil {
		return cc, fmt.Errorf("--name: %w", err)
	}
	if cc.MetricsAddr != "" {
		if err := CheckMetricsAddr(cc.MetricsAddr, cc.MetricsPublic); err != nil {
			return cc, err
		}
	}
	if len(cc.Identities) > 0 && cc.Etcd == nil {
		return cc, fmt.Errorf("--identity needs --store etcd://HOST:PORT[,HOST:PORT...]/PREFIX")
	}
	if cc.Port < 0 || cc.Port > 65535 {
		return cc, fmt.Errorf("--port %d: out of range 0..65535", cc.Port)
	}
	if cc.OutgoingPort < 0 || cc.OutgoingPort > 65535 {
		return cc, fmt.Errorf("--outgoing-port %d: out of range 0..65535", cc.OutgoingPort)
	}
	return cc, nil
}

// DefaultName is the host's fully qualified name when the resolver knows
// one, else its host name: what nfs-utils hosts expect in SM_NOTIFY.
func DefaultName() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "localhost"
	}
	if strings.Contains(h, ".") {
		return h
	}
	if cname, err := net.LookupCNAME(h); err == nil {
		cname = strings.TrimSuffix(cname, ".")
		if strings.HasPrefix(cname, h+".") {
			return cname
		}
	}
	return h
}

// notifyNames is what we announce ourselves as: the fully qualified name
// first, then the short name (nfs-utils peers often registered us by that).
// An address literal has no short form.
func notifyNames(name string) []string {
	if _, err := netip.ParseAddr(name); err == nil {
		return []string{name}
	}
	short, _, found := strings.Cut(name, ".")
	if !found || short == "" {
		return []string{name}
	}
	return []string{name, short}
}
