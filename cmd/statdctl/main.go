// Command statdctl shows what a running rpc.statd knows: its state number,
// every monitored host with its registrants, and every notification it still
// owes with the time of the next try. It asks over the daemon's admin socket
// in the state directory, which only root (or the daemon's user) may open.
// identities and move ask etcd instead: who serves each NSM identity, and
// moving one to a standby statd.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/pflag"

	"github.com/hoststat/hoststat/internal/daemon"
	"github.com/hoststat/hoststat/nsm/etcdstore"
	"github.com/hoststat/hoststat/statd"
)

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

const name = "statdctl"

const usageHead = `Usage: statdctl [-P dir] [--json]
       statdctl [-P dir] import NFS-UTILS-DIR
       statdctl [-P dir] [--json] forget [--identity NAME] HOST
       statdctl --store etcd://HOST:PORT/PREFIX [--json] identities
       statdctl --store etcd://HOST:PORT/PREFIX [--json] move IDENTITY

Shows the state of the running rpc.statd, imports an nfs-utils state
directory (sm/, sm.bak/, state) into the store of a stopped one, or makes
the running one forget a host for good: its registrants are called back
(lock managers release the host's locks), then its registrations and owed
notifications are dropped from the store: under the host's own name and
under every --identity the daemon serves now, or with --identity under
that one only.

identities lists the NSM identities in etcd with the statd serving each,
its lease, state number, registrations and owed notifications; move
deposes an identity's statd and waits (up to --timeout) until a standby
has taken it over with a new state number.

`

const usageFoot = `import opens the store directly, so rpc.statd must be stopped (the store is locked while
it runs); the daemon loads what was imported at its next start. Needs root.
`

// isRoot is os.Geteuid() == 0; tests replace it.
var isRoot = daemon.IsRoot

func run(args []string, stdout, stderr io.Writer) int {
	fs := pflag.NewFlagSet(name, pflag.ContinueOnError)
	dir := fs.StringP("state-directory-path", "P", statd.DefaultStateDir, "state directory of the rpc.statd to ask")
	asJSON := fs.Bool("json", false, "print JSON instead of text")
	timeout := fs.Duration("timeout", 5*time.Second, "how long to wait for the daemon, or for etcd and a standby's takeover")
	etcd := etcdstore.AddFlags(fs, storeUsage)
	_ = fs.BoolP("help", "h", false, "show this help")
	_ = fs.BoolP("version", "v", false, "show the version")
	only := fs.String("identity", "", "forget: only in this NSM identity (an --identity served by the daemon, or its own name)")
	bootIDPath := fs.String("boot-id-path", "", "read the boot id from this file (tests)")
	fs.MarkHidden("boot-id-path")
	fl := daemon.Flags{Head: usageHead, Foot: usageFoot, MaxArgs: 2, ArgsName: "import DIR | forget HOST | move IDENTITY"}
	if code, done := fl.Parse(fs, args, stdout, stderr); done {
		return code
	}
	if *timeout <= 0 {
		return daemon.UsageError(stderr, name, "--timeout %v must be positive", *timeout)
	}
	switch {
	case fs.NArg() == 0:
	case fs.Arg(0) == "identities" || fs.Arg(0) == "move":
		return runEtcd(etcd, fs.Args(), *asJSON, *timeout, stdout, stderr)
	case fs.Arg(0) == "forget" && fs.NArg() != 2:
		return daemon.UsageError(stderr, name, "forget needs the host, as in 'statdctl forget client1'")
	case fs.Arg(0) == "forget":
	case fs.Arg(0) != "import":
		return daemon.UsageError(stderr, name, "unknown command %q (commands: import, forget, identities, move)", fs.Arg(0))
	case fs.NArg() != 2:
		return daemon.UsageError(stderr, name, "import needs the nfs-utils state directory, as in 'statdctl import /var/lib/nfs'")
	}
	if *only != "" && fs.Arg(0) != "forget" {
		return daemon.UsageError(stderr, name, "--identity is forget's (statdctl forget --identity NAME HOST)")
	}
	if !isRoot() {
		return daemon.Failed(stderr, name, errors.New("needs root: rpc.statd's state directory and admin socket are open to root and the daemon's user only"))
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	if fs.Arg(0) == "forget" {
		sum, err := statd.Forget(ctx, *dir, fs.Arg(1), *only)
		if err != nil {
			return daemon.Failed(stderr, name, err)
		}
		if *asJSON {
			return writeJSON(stdout, stderr, sum)
		}
		printForget(stdout, sum)
		return daemon.ExitOK
	}
	if fs.NArg() == 2 {
		sum, err := statd.ImportNFSUtils(ctx, *dir, fs.Arg(1), *bootIDPath, nil)
		if err != nil {
			return daemon.Failed(stderr, name, err)
		}
		if *asJSON {
			return writeJSON(stdout, stderr, sum)
		}
		fmt.Fprintf(stdout, "imported %s: state %d (nfs-utils had %d), %d registrations, %d hosts owed a notification, %d records skipped\n",
			sum.Dir, sum.StateAfter, sum.State, sum.Registrations, sum.Owed, len(sum.Skipped))
		for _, s := range sum.Skipped {
			fmt.Fprintf(stdout, "  skipped %s\n", s)
		}
		return daemon.ExitOK
	}
	st, err := statd.FetchStatus(ctx, *dir)
	if err != nil {
		return daemon.Failed(stderr, name, err)
	}
	if *asJSON {
		return writeJSON(stdout, stderr, st)
	}
	printText(stdout, st, time.Now())
	return daemon.ExitOK
}

// printForget is statdctl forget's answer: the totals, then each
// identity's share when the daemon has --identity identities.
func printForget(w io.Writer, sum statd.ForgetSummary) {
	fmt.Fprintf(w, "forgot %s: %d registrants called back (release), %d registrations and %d owed notifications dropped\n",
		sum.Host, sum.Released, sum.Registrations, sum.Owed)
	for _, p := range sum.Identities {
		kind := "identity"
		if p.Own {
			kind = "own name"
		}
		fmt.Fprintf(w, "  %s %s: %d called back, %d registrations and %d owed notifications dropped\n",
			kind, p.Identity, p.Released, p.Registrations, p.Owed)
	}
}

func writeJSON(stdout, stderr io.Writer, v any) int {
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return daemon.Failed(stderr, name, err)
	}
	return daemon.ExitOK
}

func printText(w io.Writer, st *statd.Status, now time.Time) {
	fmt.Fprintf(w, "rpc.statd %q  state %d  pid %d  up since %s\n", st.Name, st.State, st.Pid, st.Started.Format(time.RFC3339))
	fmt.Fprintf(w, "state directory %s  boot id %s\n", st.StateDir, st.BootID)
	for _, l := range st.Listeners {
		fmt.Fprintf(w, "listening on %s\n", l)
	}
	if st.Metrics != "" {
		fmt.Fprintf(w, "metrics at http://%s/metrics\n", st.Metrics)
	}
	if len(st.Serving) > 0 {
		fmt.Fprintf(w, "serving identities %s (statdctl --store … identities)\n", strings.Join(st.Serving, ", "))
	}
	printHosts(w, "", st.Monitored, st.Owed, now)
	for _, id := range st.Identities {
		fmt.Fprintf(w, "\nidentity %q  state %d\n", id.Name, id.State)
		printHosts(w, "identity "+id.Name+": ", id.Monitored, id.Owed, now)
	}
}

// printHosts is one identity's monitored hosts and owed notifications.
func printHosts(w io.Writer, label string, monitored []statd.Monitored, owed []statd.Owed, now time.Time) {
	nreg := 0
	for _, m := range monitored {
		nreg += len(m.Registrants)
	}
	fmt.Fprintf(w, "\n%smonitored hosts: %d (%d registrations)\n", label, len(monitored), nreg)
	if len(monitored) > 0 {
		tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
		fmt.Fprintln(tw, "  MON_NAME\tLIVENESS\tMY_NAME\tPROG\tVERS\tPROC\tPRIV")
		for _, m := range monitored {
			for i, r := range m.Registrants {
				host, live := m.MonName, livenessText(m.Liveness, now)
				if i > 0 {
					host, live = "", ""
				}
				fmt.Fprintf(tw, "  %s\t%s\t%s\t%d\t%d\t%d\t%s\n", host, live, r.MyName, r.Prog, r.Vers, r.Proc, r.Priv)
			}
		}
		tw.Flush()
	}
	fmt.Fprintf(w, "\n%snotifications owed: %d\n", label, len(owed))
	if len(owed) > 0 {
		tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
		fmt.Fprintln(tw, "  HOST\tSTATE\tATTEMPTS\tNEXT TRY\tOWED SINCE\tLAST ERROR")
		for _, o := range owed {
			next := o.NextTry.Format(time.RFC3339)
			if d := o.NextTry.Sub(now); d > 0 {
				next += fmt.Sprintf(" (in %s)", d.Round(time.Second))
			} else {
				next += " (due)"
			}
			fmt.Fprintf(tw, "  %s\t%d\t%d\t%s\t%s\t%s\n", o.Host, o.State, o.Attempts, next, o.Since.Format(time.RFC3339), o.LastErr)
		}
		tw.Flush()
	}
}

// livenessText is a host's liveness in a column: "up", "silent 5m0s",
// "gone 25h0m0s" (how long since last heard), "unknown", or "-" without
// telemetry.
func livenessText(l *statd.HostLiveness, now time.Time) string {
	switch {
	case l == nil:
		return "-"
	case (l.State == "silent" || l.State == "gone") && !l.Since.IsZero():
		return l.State + " " + now.Sub(l.Since).Truncate(time.Second).String()
	}
	return l.State
}
