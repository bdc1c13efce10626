package statd

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// dropPrivileges is what nfs-utils' statd does once it serves: become the
// owner of the state directory, keeping of root's powers only
// CAP_NET_BIND_SERVICE, which every callback to a lock manager needs (the
// kernel's lockd accepts SM_NOTIFY news only from a port below 1024, and
// callbacks bind one each). Sockets, the store and the admin socket are
// already open. A directory owned by root leaves the daemon root, with a
// warning, as nfs-utils does.
//
// Credentials and capabilities belong to each thread in Linux, and a Go
// program has many, so every change goes through syscall.AllThreadsSyscall.
// That needs a binary without cgo (CGO_ENABLED=0 or -tags netgo, as the
// Makefile builds); a cgo build cannot drop safely and says so.
func (d *daemon) dropPrivileges() error {
	if os.Geteuid() != 0 {
		return nil // not root: nothing to drop
	}
	var st unix.Stat_t
	if err := unix.Stat(d.cfg.StateDir, &st); err != nil {
		return fmt.Errorf("dropping root: %w", err)
	}
	if st.Uid == 0 {
		d.log.Warn("running as root; chown the state directory to choose the user rpc.statd runs as", "state_dir", d.cfg.StateDir)
		return nil
	}
	// Files created as root become the owner's, so a later start as that
	// user (or after the drop) can still replace them.
	for _, n := range []string{StoreFileName, StateFileName, AdminSocketName} {
		if err := unix.Fchownat(unix.AT_FDCWD, filepath.Join(d.cfg.StateDir, n), int(st.Uid), int(st.Gid), unix.AT_SYMLINK_NOFOLLOW); err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("dropping root: %w", err)
		}
	}
	if err := dropTo(int(st.Uid), int(st.Gid)); err != nil {
		return fmt.Errorf("dropping root to uid %d, gid %d (owner of %s): %w", st.Uid, st.Gid, d.cfg.StateDir, err)
	}
	d.log.Info("dropped root", "uid", st.Uid, "gid", st.Gid, "kept", "CAP_NET_BIND_SERVICE")
	return nil
}

// dropTo becomes uid/gid on every thread, keeping CAP_NET_BIND_SERVICE
// only, in its permitted, effective and bounding sets.
func dropTo(uid, gid int) error {
	all := func(what string, trap, a1, a2, a3 uintptr) error {
		if _, _, e := syscall.AllThreadsSyscall(trap, a1, a2, a3); e != 0 {
			if e == syscall.ENOTSUP {
				return fmt.Errorf("%s: this binary was built with cgo, where Go cannot change every thread's credentials; build rpc.statd with CGO_ENABLED=0, or leave the state directory owned by root", what)
			}
			return fmt.Errorf("%s: %w", what, e)
		}
		return nil
	}
	if err := all("keep capabilities", unix.SYS_PRCTL, unix.PR_SET_KEEPCAPS, 1, 0); err != nil {
		return err
	}
	for c := uintptr(0); c <= 63; c++ {
		if _, err := unix.PrctlRetInt(unix.PR_CAPBSET_READ, c, 0, 0, 0); err != nil {
			break // past the last capability this kernel knows
		}
		if c == unix.CAP_NET_BIND_SERVICE {
			continue
		}
		if err := all("drop capability from the bounding set", unix.SYS_PRCTL, unix.PR_CAPBSET_DROP, c, 0); err != nil {
			return err
		}
	}
	if err := all("setgroups", unix.SYS_SETGROUPS, 0, 0, 0); err != nil {
		return err
	}
	if err := all("setresgid", unix.SYS_SETRESGID, uintptr(gid), uintptr(gid), uintptr(gid)); err != nil {
		return err
	}
	if err := all("setresuid", unix.SYS_SETRESUID, uintptr(uid), uintptr(uid), uintptr(uid)); err != nil {
		return err
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	data[0].Permitted = 1 << unix.CAP_NET_BIND_SERVICE
	data[0].Effective = 1 << unix.CAP_NET_BIND_SERVICE
	err := all("capset", unix.SYS_CAPSET, uintptr(unsafe.Pointer(&hdr)), uintptr(unsafe.Pointer(&data[0])), 0)
	runtime.KeepAlive(&hdr)
	runtime.KeepAlive(&data)
	if err != nil {
		return err
	}
	return all("clear keep capabilities", unix.SYS_PRCTL, unix.PR_SET_KEEPCAPS, 0, 0)
}

// canBindReserved reports whether this process may bind a port below 1024:
// root, or (after dropPrivileges) CAP_NET_BIND_SERVICE in the effective set.
func canBindReserved() bool {
	if os.Geteuid() == 0 {
		return true
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return false
	}
	return data[0].Effective&(1<<unix.CAP_NET_BIND_SERVICE) != 0
}
