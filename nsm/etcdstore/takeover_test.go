package etcdstore

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hoststat/hoststat/internal/etcdlab"
	"github.com/hoststat/hoststat/nsm"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// dyingKV lets the first commits transactions through, then fails every
// call: a statd killed in the middle of a takeover, its earlier
// transactions committed, its later ones never sent.
type dyingKV struct {
	clientv3.KV
	left atomic.Int32
}

var errDied = errors.New("statd killed")

func (k *dyingKV) Txn(ctx context.Context) clientv3.Txn {
	if k.left.Add(-1) < 0 {
		return deadTxn{}
	}
	return k.KV.Txn(ctx)
}

type deadTxn struct{}

func (deadTxn) If(...clientv3.Cmp) clientv3.Txn        { return deadTxn{} }
func (deadTxn) Then(...clientv3.Op) clientv3.Txn       { return deadTxn{} }
func (deadTxn) Else(...clientv3.Op) clientv3.Txn       { return deadTxn{} }
func (deadTxn) Commit() (*clientv3.TxnResponse, error) { return nil, errDied }

// A takeover larger than one etcd transaction (150 monitored hosts: their
// debts in several transactions, the state last) killed after each of
// its transactions in turn: the next owner's takeover always ends with
// every monitored host owed one odd state above the last one recorded,
// and the recorded state never goes backwards. Debts the killed owner
// wrote of a state it never recorded (and so never announced: it
// notifies only after the takeover is durable) are rewritten.
func TestTakeOverKilledBetweenTransactions(t *testing.T) {
	c := etcdlab.Start(t, 1)
	ctx := context.Background()
	now := time.Now()
	const n = 150
	for kill := 1; ; kill++ {
		prefix := IdentityPrefix("/hoststat", fmt.Sprintf("srv%d", kill))
		cli := storeClient(t, c)
		s := openStore(t, cli, prefix)
		core := nsm.NewCore(nsm.CoreConfig{})
		if _, err := nsm.StartCore(ctx, s, core, "boot-1", false, now); err != nil {
			t.Fatal(err)
		}
		for i := range n {
			rd, err := core.Mon(reg(fmt.Sprintf("client%03d", i), i))
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Apply(ctx, rd.Persist); err != nil {
				t.Fatal(err)
			}
			core.Apply(rd.Persist)
		}
		before, _ := s.State()

		// The owner that dies after kill transactions of its takeover.
		dying := storeClient(t, c)
		kv := &dyingKV{KV: dying.KV}
		kv.left.Store(int32(kill))
		dying.KV = kv
		ds, err := Open(ctx, dying, prefix, Options{})
		if err != nil {
			t.Fatal(err)
		}
		_, err = nsm.TakeOver(ctx, ds, nsm.NewCore(nsm.CoreConfig{}), now)
		ds.Close()
		completed := err == nil
		if err != nil && !errors.Is(err, errDied) {
			t.Fatalf("kill after %d transactions: %v", kill, err)
		}
		mid, _ := s.State()
		if mid < before {
			t.Fatalf("kill after %d transactions: state %d, was %d", kill, mid, before)
		}

		// The next owner takes over from what etcd holds.
		ns := openStore(t, storeClient(t, c), prefix)
		state, err := nsm.TakeOver(ctx, ns, nsm.NewCore(nsm.CoreConfig{}), now)
		if err != nil {
			t.Fatalf("kill after %d transactions: next takeover: %v", kill, err)
		}
		recorded, _ := ns.State()
		owed, _ := ns.Owed()
		regs, _ := ns.Registrations()
		if state%2 != 1 || state <= mid || recorded != state || len(regs) != n {
			t.Fatalf("kill after %d: next owner at state %d (etcd %d), was %d before and %d after the kill; %d registrations",
				kill, state, recorded, before, mid, len(regs))
		}
		if len(owed) != n {
			t.Fatalf("kill after %d: %d hosts owed, want all %d", kill, len(owed), n)
		}
		for _, o := range owed {
			if o.State != state {
				t.Fatalf("kill after %d: %s owed state %d, want the new owner's %d", kill, o.Host, o.State, state)
			}
		}
		if completed {
			if kill < 3 {
				t.Fatalf("a takeover of %d hosts in %d transactions: not more than one", n, kill)
			}
			t.Logf("takeover of %d hosts: %d transactions, killed after each of the first %d", n, kill, kill-1)
			return // killed after its last transaction: every point of death covered
		}
	}
}
