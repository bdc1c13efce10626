// Command statdctl shows what a running rpc.statd knows: its state number,
// every monitored host with its registrants, and every notification it still
// owes with the time of the next try. It asks over the daemon's admin socket
// in the state directory, which only root (or the daemon's user) may open.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"github.com/spf13/pflag"

	"github.com/hoststat/hoststat/statd"
)

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	fs := pflag.NewFlagSet("statdctl", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.StringP("state-directory-path", "P", statd.DefaultStateDir, "state directory of the rpc.statd to ask")
	asJSON := fs.Bool("json", false, "print JSON instead of text")
	timeout := fs.Duration("timeout", 5*time.Second, "how long to wait for the daemon")
	help := fs.BoolP("help", "h", false, "show this help")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: statdctl [-P dir] [--json]\n\nShows the state of the running rpc.statd.\n\n%s", fs.FlagUsages())
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *help {
		fs.SetOutput(stdout)
		fs.Usage()
		return 0
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	st, err := statd.FetchStatus(ctx, *dir)
	if err != nil {
		fmt.Fprintln(stderr, "statdctl:", err)
		return 1
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(st); err != nil {
			return 1
		}
		return 0
	}
	printText(stdout, st, time.Now())
	return 0
}

func printText(w io.Writer, st *statd.Status, now time.Time) {
	fmt.Fprintf(w, "rpc.statd %q  state %d  pid %d  up since %s\n", st.Name, st.State, st.Pid, st.Started.Format(time.RFC3339))
	fmt.Fprintf(w, "state directory %s  boot id %s\n", st.StateDir, st.BootID)
	for _, l := range st.Listeners {
		fmt.Fprintf(w, "listening on %s\n", l)
	}
	nreg := 0
	for _, m := range st.Monitored {
		nreg += len(m.Registrants)
	}
	fmt.Fprintf(w, "\nmonitored hosts: %d (%d registrations)\n", len(st.Monitored), nreg)
	if len(st.Monitored) > 0 {
		tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
		fmt.Fprintln(tw, "  MON_NAME\tMY_NAME\tPROG\tVERS\tPROC\tPRIV")
		for _, m := range st.Monitored {
			for i, r := range m.Registrants {
				host := m.MonName
				if i > 0 {
					host = ""
				}
				fmt.Fprintf(tw, "  %s\t%s\t%d\t%d\t%d\t%s\n", host, r.MyName, r.Prog, r.Vers, r.Proc, r.Priv)
			}
		}
		tw.Flush()
	}
	fmt.Fprintf(w, "\nnotifications owed: %d\n", len(st.Owed))
	if len(st.Owed) > 0 {
		tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
		fmt.Fprintln(tw, "  HOST\tSTATE\tATTEMPTS\tNEXT TRY\tOWED SINCE\tLAST ERROR")
		for _, o := range st.Owed {
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
