package statd

import (
	"context"
	"fmt"
	"time"

	"github.com/hoststat/hoststat/nsm"
	"github.com/hoststat/hoststat/oncrpc/rpcbind"
)

const rpcbindBudget = 10 * time.Second

// register tells the local rpcbind where SM_PROG 1 listens (udp, tcp and,
// when we serve IPv6, udp6 and tcp6), replacing the entries a killed statd
// may have left. rpcbind takes SET only over its unix socket (or, failing
// that, from a privileged loopback port), hence rpcbind.Register.
func (d *daemon) register(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, rpcbindBudget)
	defer cancel()
	_, six := d.ports["udp6"]
	if err := rpcbind.Register(ctx, nsm.Program, nsm.Version, d.ports["udp"], d.ports["tcp"], six); err != nil {
		return fmt.Errorf("register with rpcbind (is rpcbind running?): %w", err)
	}
	d.log.Info("registered with rpcbind", "program", nsm.Program, "version", nsm.Version, "port", d.ports["udp"], "ipv6", six)
	return nil
}

// unregister removes every SM_PROG 1 entry.
func (d *daemon) unregister() {
	ctx, cancel := context.WithTimeout(context.Background(), rpcbindBudget)
	defer cancel()
	if err := rpcbind.Unregister(ctx, nsm.Program, nsm.Version); err != nil {
		d.log.Error("unregister from rpcbind", "err", err)
		return
	}
	d.log.Info("unregistered from rpcbind")
}
