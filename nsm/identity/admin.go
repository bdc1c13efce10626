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

// maxIdentities bounds what Holdings lists.
const maxIdentities = 10_000

// Holdings lists every identity under prefix with its owner, if any (the
// election key with the lowest create revision, as concurrency.Election
// decides) and its state. It hops from one identity's keys to the next,
// so its cost follows the identities, not their registrations.
func Holdings(ctx context.Context, cli *clientv3.Client, prefix string) ([]Holding, error) {
	root := prefix + "/id/"
	var out []Holding
	from := root
	for len(out) < maxIdentities {
		resp, err := cli.Get(ctx, from, clientv3.WithRange(clientv3.GetPrefixRangeEnd(root)), clientv3.WithKeysOnly(), clientv3.WithLimit(1))
		if err != nil {
			return nil, fmt.Errorf("identity: listing %q: %w", root, err)
		}
		if len(resp.Kvs) == 0 {
			return out, nil
		}
		name, _, ok := strings.Cut(strings.TrimPrefix(string(resp.Kvs[0].Key), root), "/")
		if !ok {
			return nil, fmt.Errorf("identity: stray key %q under %q", resp.Kvs[0].Key, root)
		}
		from = root + name + "0" // '0' follows '/': the first key after this identity's
		h := Holding{Name: name}
		tr, err := cli.Txn(ctx).Then(
			clientv3.OpGet(root+name+"/state"),
			clientv3.OpGet(ElectionPrefix(prefix, name)+"/", clientv3.WithFirstCreate()...),
		).Commit()
		if err != nil {
			return nil, fmt.Errorf("identity %s: %w", name, err)
		}
		if kvs := tr.Responses[0].GetResponseRange().Kvs; len(kvs) == 1 {
			n, err := strconv.ParseInt(string(kvs[0].Value), 10, 32)
			if err != nil {
				return nil, fmt.Errorf("identity %s: state %q is not a number", name, kvs[0].Value)
			}
			h.State = int32(n)
		}
		if kvs := tr.Responses[1].GetResponseRange().Kvs; len(kvs) == 1 {
			h.Holder, h.Lease = string(kvs[0].Value), clientv3.LeaseID(kvs[0].Lease)
		}
		out = append(out, h)
	}
	return out, fmt.Errorf("identity: more than %d identities under %q", maxIdentities, root)
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
