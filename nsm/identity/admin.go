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
	Name          string           `json:"name"`
	Holder        string           `json:"holder"` // the owning statd's holder name; "" when none
	Lease         clientv3.LeaseID `json:"lease"`
	State         int32            `json:"state"` // 0 before its first start
	Registrations int64            `json:"registrations"`
	Owed          int64            `json:"owed"` // notifications not yet acknowledged

	ownerKey string // the leader key, and its create revision: what Move deletes
	ownerRev int64
}

// maxIdentities bounds what Holdings lists.
const maxIdentities = 10_000

// Holdings lists every identity under prefix with its owner, if any (the
// election key with the lowest create revision, as concurrency.Election
// decides), its state and how many registrations and owed notifications
// it has. It hops from one identity's keys to the next and counts the
// rest in etcd, so its cost follows the identities, not their records.
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
		h, err := holding(ctx, cli, prefix, name)
		if err != nil {
			return nil, err
		}
		out = append(out, h)
	}
	return out, fmt.Errorf("identity: more than %d identities under %q", maxIdentities, root)
}

// holding reads one identity in one transaction.
func holding(ctx context.Context, cli *clientv3.Client, prefix, name string) (Holding, error) {
	at := prefix + "/id/" + name + "/"
	tr, err := cli.Txn(ctx).Then(
		clientv3.OpGet(at+"state"),
		clientv3.OpGet(ElectionPrefix(prefix, name)+"/", clientv3.WithFirstCreate()...),
		clientv3.OpGet(at+"r/", clientv3.WithPrefix(), clientv3.WithCountOnly()),
		clientv3.OpGet(at+"o/", clientv3.WithPrefix(), clientv3.WithCountOnly()),
	).Commit()
	if err != nil {
		return Holding{}, fmt.Errorf("identity %s: %w", name, err)
	}
	h := Holding{Name: name,
		Registrations: tr.Responses[2].GetResponseRange().Count,
		Owed:          tr.Responses[3].GetResponseRange().Count}
	if kvs := tr.Responses[0].GetResponseRange().Kvs; len(kvs) == 1 {
		n, err := strconv.ParseInt(string(kvs[0].Value), 10, 32)
		if err != nil {
			return Holding{}, fmt.Errorf("identity %s: state %q is not a number", name, kvs[0].Value)
		}
		h.State = int32(n)
	}
	if kvs := tr.Responses[1].GetResponseRange().Kvs; len(kvs) == 1 {
		h.Holder, h.Lease = string(kvs[0].Value), clientv3.LeaseID(kvs[0].Lease)
		h.ownerKey, h.ownerRev = string(kvs[0].Key), kvs[0].CreateRevision
	}
	return h, nil
}

// ErrNoOwner is returned by Move for an identity nobody owns.
var ErrNoOwner = errors.New("identity: nobody owns it")

// ErrNotTaken is returned by Move when no other statd took the identity
// over (owned it and moved its state) before ctx ended.
var ErrNotTaken = errors.New("no standby took it over")

// Move takes an identity from its owner (`statdctl move`) and waits until
// another statd has taken it over: owns it and has moved its state on, as
// a statd does before it serves. It returns the identity before and after.
// The owner's leader key is deleted, so the owner stops serving at once
// (it watches the key and its writes are fenced on it) and the next statd
// in the election takes over, without waiting out a lease. The delete
// holds only if the key is still the one read, so a move never deposes an
// owner that took over meanwhile. When ctx ends first, the error wraps
// ErrNotTaken and after is the identity as it was last seen.
func Move(ctx context.Context, cli *clientv3.Client, prefix, name string) (before, after Holding, err error) {
	before, err = holding(ctx, cli, prefix, name)
	if err != nil {
		return before, after, err
	}
	if before.ownerKey == "" {
		return before, before, fmt.Errorf("identity %s: %w", name, ErrNoOwner)
	}
	tr, err := cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(before.ownerKey), "=", before.ownerRev)).
		Then(clientv3.OpDelete(before.ownerKey)).Commit()
	if err != nil {
		return before, after, fmt.Errorf("identity %s: %w", name, err)
	}
	if !tr.Succeeded {
		return before, after, fmt.Errorf("identity %s: owner changed while moving it; look again", name)
	}
	// Watch the identity's keys from the delete on; each change may be
	// the takeover (a new leader key, then the state moved).
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	events := cli.Watch(wctx, prefix+"/id/"+name+"/", clientv3.WithPrefix(), clientv3.WithRev(tr.Header.Revision+1))
	after = before
	for {
		h, err := holding(ctx, cli, prefix, name)
		switch {
		case err == nil && h.Holder != "" && h.Holder != before.Holder && h.State > before.State:
			return before, h, nil
		case err == nil:
			after = h
		case ctx.Err() == nil:
			return before, after, err
		}
		select {
		case w, ok := <-events:
			if ok && w.Err() == nil {
				continue
			}
			if ctx.Err() == nil {
				return before, after, fmt.Errorf("identity %s: watching the takeover: %v", name, w.Err())
			}
		case <-ctx.Done():
		}
		return before, after, fmt.Errorf("identity %s: %w", name, ErrNotTaken)
	}
}
