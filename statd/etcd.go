package statd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/hoststat/hoststat/nsm"
	"github.com/hoststat/hoststat/nsm/etcdstore"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// LockFileName is the file in the state directory an rpc.statd on etcd
// holds locked (flock) while it runs: the bbolt store's own lock does that
// job otherwise, so one state directory (its admin socket) has one daemon.
const LockFileName = "statd.lock"

// etcdStorage is the host's own identity in etcd (--store etcd://…),
// with the client and the state directory's lock it holds.
type etcdStorage struct {
	*etcdstore.Store
	cli  *clientv3.Client
	lock *os.File
}

func (s *etcdStorage) Close() error {
	err := s.Store.Close()
	s.cli.Close()
	s.lock.Close()
	return err
}

// openEtcd opens the identity cfg.Name under cfg.Etcd's prefix. The state
// directory keeps only the admin socket and the lock: the bbolt store, the
// state file and the nfs-utils import are not used.
func openEtcd(cfg Config, log *slog.Logger) (*etcdStorage, error) {
	if err := checkStateDir(cfg.StateDir); err != nil {
		return nil, err
	}
	lock, err := lockStateDir(cfg.StateDir)
	if err != nil {
		return nil, err
	}
	cli, err := cfg.Etcd.Client()
	if err != nil {
		lock.Close()
		return nil, err
	}
	kernel := func(state int32) { writeKernelState(cfg.KernelStatePath, state, log) }
	prefix := etcdstore.IdentityPrefix(cfg.Etcd.Prefix, cfg.Name)
	s, err := etcdstore.Open(context.Background(), cli, prefix, etcdstore.Options{OnState: kernel, Logger: log})
	if err != nil {
		cli.Close()
		lock.Close()
		return nil, fmt.Errorf("store etcd://%v%s: %w", cfg.Etcd.Endpoints, cfg.Etcd.Prefix, err)
	}
	return &etcdStorage{Store: s, cli: cli, lock: lock}, nil
}

func lockStateDir(dir string) (*os.File, error) {
	path := filepath.Join(dir, LockFileName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, fmt.Errorf("state directory lock: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("state directory %s is in use by another rpc.statd (%s is locked)", dir, path)
		}
		return nil, fmt.Errorf("state directory lock %s: %w", path, err)
	}
	return f, nil
}

var _ nsm.Storage = (*etcdStorage)(nil)
