package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/hoststat/hoststat/internal/daemon"
	"github.com/hoststat/hoststat/nsm/etcdstore"
	"github.com/hoststat/hoststat/nsm/identity"
)

// storeUsage is --store's help in statdctl.
const storeUsage = "the etcd store of the NSM identities: `URL` etcd://HOST:PORT[,HOST:PORT...]/PREFIX, as rpc.statd's --store (identities, move)"

// runEtcd answers identities and move: they ask etcd, not a daemon.
func runEtcd(flags *etcdstore.Flags, args []string, asJSON bool, timeout time.Duration, stdout, stderr io.Writer) int {
	cmd := args[0]
	switch {
	case cmd == "identities" && len(args) != 1:
		return daemon.UsageError(stderr, name, "unexpected argument %q: identities takes none", args[1])
	case cmd == "move" && len(args) != 2:
		return daemon.UsageError(stderr, name, "move needs the identity, as in 'statdctl move nfs.example'")
	case *flags.Store == "":
		return daemon.UsageError(stderr, name, "%s needs --store etcd://HOST:PORT[,HOST:PORT...]/PREFIX", cmd)
	}
	cfg, err := flags.Config()
	if err != nil {
		return daemon.UsageError(stderr, name, "%v", err)
	}
	cli, err := cfg.Client()
	if err != nil {
		return daemon.Failed(stderr, name, err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	unanswered := func(err error) error {
		if ctx.Err() != nil {
			return fmt.Errorf("etcd %s did not answer within %v (--timeout): %w", strings.Join(cfg.Endpoints, ","), timeout, err)
		}
		return err
	}
	if cmd == "identities" {
		hs, err := identity.Holdings(ctx, cli, cfg.Prefix)
		if err != nil {
			return daemon.Failed(stderr, name, unanswered(err))
		}
		if asJSON {
			return writeJSON(stdout, stderr, append([]identity.Holding{}, hs...))
		}
		printHoldings(stdout, hs)
		return daemon.ExitOK
	}
	before, after, err := identity.Move(ctx, cli, cfg.Prefix, args[1])
	switch {
	case errors.Is(err, identity.ErrNotTaken):
		now := "nobody owns it now"
		switch {
		case after.Holder == before.Holder && after.Holder != "":
			now = after.Holder + " owns it again"
		case after.Holder != "":
			now = fmt.Sprintf("%s owns it but has not moved its state on from %d", after.Holder, after.State)
		}
		return daemon.Failed(stderr, name, fmt.Errorf("%w within %v; %s deposed, %s", err, timeout, before.Holder, now))
	case err != nil:
		return daemon.Failed(stderr, name, unanswered(err))
	case asJSON:
		return writeJSON(stdout, stderr, struct {
			Before identity.Holding `json:"before"`
			After  identity.Holding `json:"after"`
		}{before, after})
	}
	fmt.Fprintf(stdout, "moved %s from %s (state %d) to %s (state %d, %d notifications owed)\n",
		after.Name, before.Holder, before.State, after.Holder, after.State, after.Owed)
	return daemon.ExitOK
}

func printHoldings(w io.Writer, hs []identity.Holding) {
	if len(hs) == 0 {
		fmt.Fprintln(w, "no identities")
		return
	}
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "IDENTITY\tHOLDER\tLEASE\tSTATE\tREGISTRATIONS\tOWED")
	for _, h := range hs {
		holder, lease := "-", "-"
		if h.Holder != "" {
			holder, lease = h.Holder, fmt.Sprintf("%x", int64(h.Lease))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\n", h.Name, holder, lease, h.State, h.Registrations, h.Owed)
	}
	tw.Flush()
}
