// Package etcdstore keeps an NSM identity's durable state in etcd: the
// state number, the boot id of the last start, registrations, owed
// notifications and hosts given up on, under one key prefix per identity.
// It implements nsm.Storage with the bbolt store's rules: a mutation
// returns only once etcd committed it, concurrent mutations share one etcd
// transaction (group commit), and the state number moves only forward, by
// a compare-and-swap transaction, so two writers can never hand out the
// same number or a lower one.
//
// Key layout under the prefix P (values are JSON so etcdctl shows them):
//
//	P magic        "hoststat-nsm-etcd 1"
//	P state        decimal state number
//	P boot         boot id of the last start
//	P r/ mon_name 0x00 my_name 0x00 prog 0x00 vers 0x00 proc → {"priv","registered"}
//	P o/ host      → nsm.Owed
//	P g/ host      → nsm.GaveUp
package etcdstore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hoststat/hoststat/nsm"
	clientv3 "go.etcd.io/etcd/client/v3"
)

const magic = "hoststat-nsm-etcd 1"

const (
	// DefaultMaxTxnOps is etcd's own default --max-txn-ops: no transaction
	// of ours carries more operations or more comparisons than this.
	DefaultMaxTxnOps = 128
	// maxConflicts bounds how often one batch is re-read and retried after
	// another writer changed a key it read.
	maxConflicts = 20
	// queueLen bounds the mutations waiting for the commit loop; callers
	// beyond it wait to enqueue.
	queueLen = 1024
)

// ErrClosed is returned after Close.
var ErrClosed = errors.New("etcdstore: store closed")

// ErrFenced means the identity is no longer ours: the write was refused by
// etcd because the ownership it was conditioned on is gone.
var ErrFenced = errors.New("etcdstore: identity no longer owned by this statd (fenced)")

// Fence conditions every write of a Store: Cmps are added to each etcd
// transaction, and a transaction that fails them is refused with ErrFenced.
// Err is the fence's own view (an owner whose lease ran out on its own
// clock): while it is non-nil, nothing is read or written. Identity
// ownership (an election's leader key) is one.
type Fence interface {
	Cmps() []clientv3.Cmp
	Err() error
}

// Options changes how Open opens a store.
type Options struct {
	Fence     Fence         // nil: writes are unconditional
	OnState   func(int32)   // called after every committed change of the state number
	Timeout   time.Duration // per etcd request; default 10s
	MaxTxnOps int           // the server's --max-txn-ops; default 128
	Logger    *slog.Logger
}

// Store is one identity's state in etcd.
type Store struct {
	cli    *clientv3.Client
	prefix string
	o      Options

	mu      sync.RWMutex // guards closed against sends on ops
	closed  bool
	ops     chan *op
	stopped chan struct{}

	txns atomic.Uint64 // write transactions committed
	// known is the state number this store last read (Boot) or wrote; -1
	// before either. A state change from another number is refused.
	known atomic.Int64
}

// Open uses the keys under prefix (normally IdentityPrefix) through cli,
// which the caller keeps and closes after the store. It reads the magic
// key: a prefix that holds something else is refused.
func Open(ctx context.Context, cli *clientv3.Client, prefix string, o Options) (*Store, error) {
	if prefix == "" {
		return nil, errors.New("etcdstore: empty key prefix")
	}
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
	}
	if o.MaxTxnOps <= 0 {
		o.MaxTxnOps = DefaultMaxTxnOps
	}
	if o.MaxTxnOps < 8 {
		return nil, fmt.Errorf("etcdstore: max txn ops %d is too small (at least 8)", o.MaxTxnOps)
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	s := &Store{cli: cli, prefix: prefix, o: o, ops: make(chan *op, queueLen), stopped: make(chan struct{})}
	s.known.Store(-1)
	s.o.Logger = o.Logger.With("store", "etcd", "prefix", prefix)
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	var resp *clientv3.GetResponse
	err := retry(ctx, func() (err error) { resp, err = cli.Get(ctx, prefix+"magic"); return err })
	if err != nil {
		return nil, fmt.Errorf("etcdstore: reading %q: %w", prefix+"magic", err)
	}
	if len(resp.Kvs) == 1 && string(resp.Kvs[0].Value) != magic {
		return nil, fmt.Errorf("etcdstore: prefix %q holds %s, not a hoststat NSM store", prefix, nsm.Quote(string(resp.Kvs[0].Value)))
	}
	go s.commitLoop()
	return s, nil
}

// IdentityPrefix is the key prefix of identity's state under the --store
// prefix: every identity's keys are apart from every other's.
func IdentityPrefix(prefix, identity string) string {
	return prefix + "/id/" + identity + "/"
}

// Prefix is the store's key prefix.
func (s *Store) Prefix() string { return s.prefix }

// Txns is how many write transactions the store committed.
func (s *Store) Txns() uint64 { return s.txns.Load() }

// Close waits for queued mutations to commit; the client stays open.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.ops)
	s.mu.Unlock()
	<-s.stopped
	return nil
}

func (s *Store) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), s.o.Timeout)
}

var _ nsm.Storage = (*Store)(nil)
