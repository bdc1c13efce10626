package nsm

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// Registration is one SM_MON that is in force: call MyID back with Priv when
// MonName reboots.
type Registration struct {
	MonName    string
	MyID       MyID
	Priv       [PrivLen]byte
	Registered time.Time // when the SM_MON (or the last one changing Priv) arrived
}

// Owed is an SM_NOTIFY still to deliver to Host.
type Owed struct {
	Host      string
	State     int32     // our state number to announce
	FirstOwed time.Time // start of the 24-hour schedule
	Attempts  int       // failed attempts so far
	NextTry   time.Time
}

// GaveUp records a host the notifier stopped trying to reach: the hint
// the originals never kept, that a host may have gone for good.
type GaveUp struct {
	Host  string
	State int32 // the state number it never heard
	At    time.Time
}

// StartResult reports the reboot-versus-restart step.
type StartResult struct {
	Rebooted  bool
	Reason    string
	PrevState int32
	State     int32
	Dropped   int // registrations dropped by a reboot
	Owed      int // notifications owed after the step
}

// ErrClosed is returned by a Store after Close.
var ErrClosed = errors.New("nsm: store closed")

// Store is the durable state of the daemon in one bbolt file: the state
// number, the boot id of the last start, registrations, owed notifications
// and hosts given up on. Every mutation is acknowledged only once fsynced;
// concurrent mutations share one transaction and one fsync (group commit).
//
// Key layout (all top-level buckets, no per-host buckets):
//
//	m  meta   "magic" → "hoststat-nsm-store 1"; "state" → int32 BE;
//	          "boot" → boot id of the last start
//	d  my_id  uvarint(len name) name uvarint(prog) uvarint(vers) uvarint(proc)
//	          → (bucket sequence) uvarint id
//	r  regs   mon_name 0x00 uvarint(id) → priv[16] varint(unix ms registered)
//	o  owed   host → varint(state) varint(first owed ms) uvarint(attempts)
//	          varint(next try ms)
//	g  gaveup host → varint(state) varint(unix ms)
type Store struct {
	path      string
	stateFile string // "" when the state is kept in the store only
	onState   func(int32)
	onCommit  func(time.Duration)
	db        *bolt.DB
	log       *slog.Logger

	mu      sync.RWMutex // guards closed against sends on ops
	closed  bool
	ops     chan *op
	stopped chan struct{}
}

var (
	bucketMeta   = []byte("m")
	bucketIDs    = []byte("d")
	bucketRegs   = []byte("r")
	bucketOwed   = []byte("o")
	bucketGaveUp = []byte("g")
	allBuckets   = [][]byte{bucketMeta, bucketIDs, bucketRegs, bucketOwed, bucketGaveUp}

	keyMagic = []byte("magic")
	keyState = []byte("state")
	keyBoot  = []byte("boot")
)

const storeMagic = "hoststat-nsm-store 1"

const (
	// maxBatch bounds one group commit: large enough for every lock-manager
	// thread at once, small enough that one transaction stays a few pages.
	maxBatch = 1024
	// owedFillPercent packs the owed bucket's pages full: it is written in
	// bulk, in key order, by a reboot, and afterwards only shrinks, so a full
	// page is never split again. The registrations bucket keeps bbolt's 0.5,
	// which suits keys arriving in random order: measured at 100,000 hosts,
	// 0.5 gives 117 bytes/host, 0.7 gives 128 and 1.0 gives 397, because a
	// full page splits into a full one and a nearly empty one.
	owedFillPercent = 1.0
	// allocSize is how far the file grows past what it needs once it is over
	// that size; bbolt's 16 MiB default would be 160 bytes of slack per host
	// at 100,000 hosts.
	allocSize = 1 << 20
)

// StoreOption changes how OpenStore opens a store.
type StoreOption func(*Store)

// WithStateFile keeps the state number in the file at path as well (see
// WriteStateFile): it is written before any transaction that raises the
// state commits, and read as a floor by every start, so the number never
// goes backwards even if the store is lost.
func WithStateFile(path string) StoreOption { return func(s *Store) { s.stateFile = path } }

// WithStateHook calls fn with the state number after every committed
// change of it (the daemon tells the kernel's lock manager).
func WithStateHook(fn func(state int32)) StoreOption { return func(s *Store) { s.onState = fn } }

// WithCommitHook calls fn with how long each group commit (one
// transaction and its fsync) took: the daemon's latency histogram.
func WithCommitHook(fn func(time.Duration)) StoreOption { return func(s *Store) { s.onCommit = fn } }

// OpenStore opens or creates the store file at path. An existing file is
// checked first (CheckStoreFile): a file that is not a hoststat store, or
// is damaged, gives an error naming the path (a *DamageError when the
// file itself is damaged) and is left as it is; nothing in it can make
// bbolt panic or read past its end. A symbolic link at path is refused.
// Only one process may hold the store open.
func OpenStore(path string, opts ...StoreOption) (*Store, error) {
	if err := CheckStoreFile(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("nsm: %w", err)
	}
	db, err := openBolt(path)
	if err != nil {
		if errors.Is(err, berrors.ErrTimeout) {
			return nil, fmt.Errorf("nsm: store %q is locked by another process (is rpc.statd already running?)", path)
		}
		var de *DamageError
		if errors.As(err, &de) {
			return nil, fmt.Errorf("nsm: %w", err)
		}
		return nil, fmt.Errorf("nsm: store %q is not a hoststat NSM store or is damaged: %w", path, err)
	}
	db.AllocSize = allocSize
	if err := safeUpdate(db, initStore); err != nil {
		db.Close()
		return nil, fmt.Errorf("nsm: store %q: %w", path, err)
	}
	s := &Store{
		path:    path,
		db:      db,
		log:     slog.Default().With("store", path),
		ops:     make(chan *op, maxBatch),
		stopped: make(chan struct{}),
	}
	for _, o := range opts {
		o(s)
	}
	go s.commitLoop()
	return s, nil
}

// openBolt opens the bbolt file without following a symbolic link, and
// turns a panic of bbolt's (on damage the check did not foresee) into a
// *DamageError.
func openBolt(path string) (db *bolt.DB, err error) {
	defer func() {
		if r := recover(); r != nil {
			db, err = nil, &DamageError{Path: path, Reason: fmt.Sprint("bbolt cannot read it: ", r)}
		}
	}()
	return bolt.Open(path, 0o600, &bolt.Options{
		Timeout: time.Second,
		// The free list is rebuilt by a scan at open instead of rewritten at
		// every commit: one page less written per SM_MON.
		NoFreelistSync: true,
		FreelistType:   bolt.FreelistMapType,
		OpenFile: func(name string, flag int, mode os.FileMode) (*os.File, error) {
			return os.OpenFile(name, flag|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, mode)
		},
	})
}

// safeUpdate is db.Update for the first transaction on a file, where
// damage the check did not foresee shows up: a panic becomes an error.
func safeUpdate(db *bolt.DB, fn func(*bolt.Tx) error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("damaged: bbolt cannot read it: %v", r)
		}
	}()
	return db.Update(fn)
}

// initStore creates the buckets of a new store, or checks an existing one
// is ours.
func initStore(tx *bolt.Tx) error {
	meta := tx.Bucket(bucketMeta)
	if meta == nil {
		empty := true
		tx.ForEach(func([]byte, *bolt.Bucket) error { empty = false; return nil })
		if !empty {
			return errors.New("is a bbolt database but not a hoststat NSM store")
		}
		for _, b := range allBuckets {
			if _, err := tx.CreateBucket(b); err != nil {
				return err
			}
		}
		return tx.Bucket(bucketMeta).Put(keyMagic, []byte(storeMagic))
	}
	if m := meta.Get(keyMagic); string(m) != storeMagic {
		return fmt.Errorf("has store magic %s, want %q", Quote(string(m)), storeMagic)
	}
	for _, b := range allBuckets {
		if tx.Bucket(b) == nil {
			return fmt.Errorf("lacks bucket %q", b)
		}
	}
	if st := meta.Get(keyState); st != nil {
		if _, err := parseState(st); err != nil {
			return err
		}
	}
	return nil
}

// Path is the store file's path.
func (s *Store) Path() string { return s.path }

// Close waits for queued mutations to commit, then closes the file.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	s.closed = true
	close(s.ops)
	s.mu.Unlock()
	<-s.stopped
	return s.db.Close()
}

// op is one queued mutation. fn may run twice (once in a shared
// transaction that another op rolled back, then alone), so it must assign
// its results rather than accumulate them.
type op struct {
	fn   func(*bolt.Tx) error
	done chan error
}

// update queues fn and waits until it is committed and fsynced. If ctx ends
// first the mutation may still commit later; every mutation is idempotent,
// so a caller that retries is safe.
func (s *Store) update(ctx context.Context, fn func(*bolt.Tx) error) error {
	o := &op{fn: fn, done: make(chan error, 1)}
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return ErrClosed
	}
	select {
	case s.ops <- o:
	case <-ctx.Done():
		s.mu.RUnlock()
		return ctx.Err()
	}
	s.mu.RUnlock()
	select {
	case err := <-o.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// commitLoop is the group commit: it takes whatever queued up while the
// previous transaction was being fsynced and commits it as one. An idle
// store commits a lone request at once (bbolt's DB.Batch would hold it for
// MaxBatchDelay); a busy one batches as many as arrive during one fsync.
func (s *Store) commitLoop() {
	defer close(s.stopped)
	batch := make([]*op, 0, maxBatch)
	for o := range s.ops {
		batch = append(batch[:0], o)
	fill:
		for len(batch) < maxBatch {
			select {
			case o, ok := <-s.ops:
				if !ok {
					break fill
				}
				batch = append(batch, o)
			default:
				break fill
			}
		}
		s.commit(batch)
	}
}

func (s *Store) commit(batch []*op) {
	failed := false
	start := time.Now()
	err := s.db.Update(func(tx *bolt.Tx) error {
		for _, o := range batch {
			if err := o.fn(tx); err != nil {
				failed = true
				return err
			}
		}
		return nil
	})
	if s.onCommit != nil {
		s.onCommit(time.Since(start))
	}
	if !failed || len(batch) == 1 {
		if err != nil {
			s.log.Error("store commit failed", "ops", len(batch), "err", err)
		}
		for _, o := range batch {
			o.done <- err
		}
		return
	}
	// One op failed and took the others' work down with it: give each its
	// own transaction so a bad request cannot fail the rest.
	for _, o := range batch {
		o.done <- s.db.Update(o.fn)
	}
}

// myIDNumber finds the dictionary number of a my_id key, adding it if asked.
func myIDNumber(tx *bolt.Tx, key []byte, add bool) (uint64, bool, error) {
	d := tx.Bucket(bucketIDs)
	if v := d.Get(key); v != nil {
		n, l := uvarint(v)
		if l <= 0 || l != len(v) {
			return 0, false, fmt.Errorf("%w: my_id number", errRecord)
		}
		return n, true, nil
	}
	if !add {
		return 0, false, nil
	}
	n, err := d.NextSequence()
	if err != nil {
		return 0, false, err
	}
	return n, true, d.Put(key, binary.AppendUvarint(nil, n))
}

func regsBucket(tx *bolt.Tx) *bolt.Bucket { return tx.Bucket(bucketRegs) }

// Monitor records an SM_MON and returns once it is durable. Repeating a
// registration (same mon_name and my_id) with the same priv changes nothing;
// with a different priv it replaces priv. The names are validated here too,
// so nothing unsafe reaches the file whatever the caller checked.
func (s *Store) Monitor(ctx context.Context, r Registration) error {
	return s.Apply(ctx, []Change{{Reg: r}})
}

// putRegistration is Monitor inside a transaction; r is valid.
func putRegistration(tx *bolt.Tx, r Registration) error {
	val := regValue(r.Priv, r.Registered)
	monName := []byte(r.MonName)
	n, _, err := myIDNumber(tx, myIDKey(r.MyID), true)
	if err != nil {
		return err
	}
	regs := regsBucket(tx)
	k := regKey(r.MonName, n)
	if old := regs.Get(k); len(old) >= PrivLen && bytes.Equal(old[:PrivLen], val[:PrivLen]) {
		return nil // idempotent: keep the first registration time
	}
	if g := tx.Bucket(bucketGaveUp); g.Get(monName) != nil {
		if err := g.Delete(monName); err != nil {
			return err
		}
	}
	return regs.Put(k, val)
}

// Unmonitor removes one registration (SM_UNMON) and reports whether it
// existed; durable on return.
func (s *Store) Unmonitor(ctx context.Context, monName string, my MyID) (bool, error) {
	idKey := myIDKey(my)
	var found bool
	err := s.update(ctx, func(tx *bolt.Tx) error {
		found = false
		n, ok, err := myIDNumber(tx, idKey, false)
		if err != nil || !ok {
			return err
		}
		regs := regsBucket(tx)
		k := regKey(monName, n)
		if regs.Get(k) == nil {
			return nil
		}
		found = true
		return regs.Delete(k)
	})
	return found && err == nil, err
}

// UnmonitorAll removes every registration of my (SM_UNMON_ALL) and says
// how many there were; durable on return.
func (s *Store) UnmonitorAll(ctx context.Context, my MyID) (int, error) {
	idKey := myIDKey(my)
	var removed int
	err := s.update(ctx, func(tx *bolt.Tx) error {
		removed = 0
		n, ok, err := myIDNumber(tx, idKey, false)
		if err != nil || !ok {
			return err
		}
		regs := regsBucket(tx)
		var doomed [][]byte
		c := regs.Cursor()
		for k, _ := c.First(); k != nil; k, _ = c.Next() {
			if _, id, err := parseRegKey(k); err == nil && id == n {
				doomed = append(doomed, bytes.Clone(k))
			}
		}
		for _, k := range doomed {
			if err := regs.Delete(k); err != nil {
				return err
			}
		}
		removed = len(doomed)
		return nil
	})
	if err != nil {
		return 0, err
	}
	return removed, nil
}

// Registrations lists every registration, ordered by mon_name.
func (s *Store) Registrations() ([]Registration, error) {
	var out []Registration
	err := s.db.View(func(tx *bolt.Tx) error {
		ids := map[uint64]MyID{}
		err := tx.Bucket(bucketIDs).ForEach(func(k, v []byte) error {
			m, err := parseMyIDKey(k)
			if err != nil {
				return err
			}
			n, l := uvarint(v)
			if l <= 0 {
				return fmt.Errorf("%w: my_id number", errRecord)
			}
			ids[n] = m
			return nil
		})
		if err != nil {
			return err
		}
		return tx.Bucket(bucketRegs).ForEach(func(k, v []byte) error {
			name, n, err := parseRegKey(k)
			if err != nil {
				return err
			}
			my, ok := ids[n]
			if !ok {
				return fmt.Errorf("%w: registration of %s names unknown my_id %d", errRecord, Quote(name), n)
			}
			priv, at, err := parseRegValue(v)
			if err != nil {
				return err
			}
			out = append(out, Registration{MonName: name, MyID: my, Priv: priv, Registered: at})
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("nsm: store %q: %w", s.path, err)
	}
	return out, nil
}

// State is the current state number (0 before the first Start).
func (s *Store) State() (int32, error) {
	b, err := s.Boot()
	return b.State, err
}

// Boot reports what the store remembers of the last start, the state
// raised to the state file's when that is higher (a commit that failed
// after the file was written): the Core starts from it (Core.Restore).
func (s *Store) Boot() (Boot, error) {
	var b Boot
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		b, err = s.readBootFloor(tx)
		return err
	})
	return b, err
}

func readBoot(tx *bolt.Tx) (Boot, error) {
	meta := tx.Bucket(bucketMeta)
	boot := meta.Get(keyBoot)
	b := Boot{New: boot == nil, BootID: string(boot)}
	if st := meta.Get(keyState); st != nil {
		var err error
		if b.State, err = parseState(st); err != nil {
			return b, err
		}
	}
	return b, nil
}

// readBootFloor is readBoot with the state raised to the state file's
// when that is higher (a commit that failed after the file was written).
func (s *Store) readBootFloor(tx *bolt.Tx) (Boot, error) {
	b, err := readBoot(tx)
	if err != nil || s.stateFile == "" {
		return b, err
	}
	st, ok, err := ReadStateFile(s.stateFile)
	if err != nil {
		return b, err
	}
	if ok && st > b.State {
		b.State = st
	}
	return b, nil
}

// putState records state in the transaction, writing the state file first:
// the number announced can then never be above the one on disk outside
// the store.
func (s *Store) putState(tx *bolt.Tx, state int32) error {
	if s.stateFile != "" {
		if cur, ok, err := ReadStateFile(s.stateFile); err != nil || !ok || cur != state {
			if err := WriteStateFile(s.stateFile, state); err != nil {
				return err
			}
		}
	}
	return tx.Bucket(bucketMeta).Put(keyState, encodeState(state))
}

// Owed lists the notifications still owed, ordered by host.
func (s *Store) Owed() ([]Owed, error) { return listBucket(s, bucketOwed, parseOwedValue) }

// GaveUp lists the hosts the notifier gave up on and has not heard from
// since (a new SM_MON for the host, or a reboot that owes it again, clears
// the entry).
func (s *Store) GaveUp() ([]GaveUp, error) { return listBucket(s, bucketGaveUp, parseGaveUpValue) }

// listBucket decodes every record of a bucket keyed by host, in key order.
func listBucket[T any](s *Store, bucket []byte, parse func(host string, v []byte) (T, error)) ([]T, error) {
	var out []T
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucket).ForEach(func(k, v []byte) error {
			r, err := parse(string(k), v)
			if err != nil {
				return err
			}
			out = append(out, r)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("nsm: store %q: %w", s.path, err)
	}
	return out, nil
}
