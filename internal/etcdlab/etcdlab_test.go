package etcdlab

import (
	"context"
	"testing"
	"time"

	"github.com/hoststat/hoststat/internal/netlab"
)

// TestLabMembers: a three-member cluster with each member on its own lab
// host keeps committing through a partition, a kill -9 and a SIGSTOP of
// one member, and each member is back in the cluster afterwards.
func TestLabMembers(t *testing.T) {
	lab := netlab.New(t)
	c := StartInLab(t, lab, 3)
	client := lab.AddHost("client")
	// put writes through the members other than down (-1: any), as a
	// client configured with them would.
	put := func(down int, what string) {
		t.Helper()
		var eps []string
		for i, m := range c.Members {
			if i != down {
				eps = append(eps, m.Endpoint())
			}
		}
		cli := ClientIn(t, client, eps...)
		// An election after a member's loss fails requests for a moment;
		// a client retries them (etcdstore does), so this does too.
		netlab.WaitFor(t, 20*time.Second, "put with "+what, func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_, err := cli.Put(ctx, "/k", what)
			return err
		})
	}
	put(-1, "all members up")

	m := c.Members[2]
	m.Partition()
	if err := client.Ping(m.Host.Addr, time.Second); err == nil {
		t.Fatal("partitioned member's host still answers a ping")
	}
	put(2, "member 2 partitioned")
	// Cut off, the member loses its leader and says it is unhealthy.
	netlab.WaitFor(t, 20*time.Second, "partitioned member unhealthy", func() error {
		if err := m.health(); err == nil {
			return errHealthy
		}
		return nil
	})
	m.Heal()
	m.WaitHealthy(30 * time.Second)

	c.Members[1].Kill()
	put(1, "member 1 killed")
	c.Members[1].Start()
	c.Members[1].WaitHealthy(30 * time.Second)

	c.Members[0].Stop()
	put(0, "member 0 stopped")
	c.Members[0].Cont()
	c.Members[0].WaitHealthy(30 * time.Second)
	put(-1, "all members back")
}
