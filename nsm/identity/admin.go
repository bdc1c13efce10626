package identity

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Holding is one identity as etcd knows it, for `statdctl identities`.
type Holding struct {
	Name   string
	Holder string // the owning statd's holder name; "" when none
	Lease  clientv3.LeaseID
	State  int32 // the identity's state number (0 before its first start)
}

// maxListed bounds what Holdings reads.
const maxListed = 100_000

// Holdings lists every identity under prefix with its owner, if any.
// The owner is the election key with the lowest create revision, as
// concurrency.Election decides.
func Holdings(ctx context.Context, cli *clientv3.Client, prefix string) ([]Holding, error) {
	root := prefix + "/id/"
	resp, err := cli.Get(ctx, root, clientv3.WithPrefix(), clientv3.WithLimit(maxListed))
	if err != nil {
		return nil, fmt.Errorf("identity: listing %q: %w", root, err)
	}
	byName := map[string]*Holding{}
	leaderRev := map[string]int64{}
	var order []string
	for _, kv := range resp.Kvs {
		name, rest, ok := strings.Cut(strings.TrimPrefix(string(kv.Key), root), "/")
		if !ok {
			continue
		}
		h := byName[name]
		if h == nil {
			h = &Holding{Name: name}
			byName[name] = h
			order = append(order, name)
		}
		switch {
		case rest == "state":
			n, err := strconv.ParseInt(string(kv.Value), 10, 32)
			if err != nil {
				return nil, fmt.Errorf("identity %s: state %q is not a number", name, kv.Value)
			}
			h.State = int32(n)
		case strings.HasPrefix(rest, "owner/"):
			if r, seen := leaderRev[name]; !seen || kv.CreateRevision < r {
				leaderRev[name] = kv.CreateRevision
				h.Holder, h.Lease = string(kv.Value), clientv3.LeaseID(kv.Lease)
			}
		}
	}
	out := make([]Holding, 0, len(order))
	for _, n := range order {
		out = append(out, *byName[n])
	}
	return out, nil
}

// ErrNoOwner is returned by Move for an identity nobody owns.
var ErrNoOwner = errors.New("identity: nobody owns it")

// Move takes an identity from its owner (`statdctl move`): its leader key
// is deleted, so the owner stops serving at once (it watches the key and
// its writes are fenced on it) and the next statd in the election takes
// over. The delete holds only if the key is still the one read, so a
// move never deposes an owner that took over meanwhile.
func Move(ctx context.Context, cli *clientv3.Client, prefix, name string) error {
	resp, err := cli.Get(ctx, ElectionPrefix(prefix, name)+"/", clientv3.WithFirstCreate()...)
	if err != nil {
		return fmt.Errorf("identity %s: %w", name, err)
	}
	if len(resp.Kvs) == 0 {
		return fmt.Errorf("identity %s: %w", name, ErrNoOwner)
	}
	kv := resp.Kvs[0]
	key := string(kv.Key)
	tr, err := cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(key), "=", kv.CreateRevision)).
		Then(clientv3.OpDelete(key)).Commit()
	if err != nil {
		return fmt.Errorf("identity %s: %w", name, err)
	}
	if !tr.Succeeded {
		return fmt.Errorf("identity %s: owner changed while moving it; look again", name)
	}
	return nil
}
