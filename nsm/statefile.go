package nsm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// The state file keeps the NSM state number outside the store, so losing
// or damaging the store can never send the number backwards. Its format is
// nfs-utils' "state" file: exactly four bytes, the number in the host's
// byte order. It is replaced atomically (write a temporary file, fsync,
// rename, fsync the directory), never written in place.

// ParseStateFile decodes a state file's contents.
func ParseStateFile(b []byte) (int32, error) {
	if len(b) != 4 {
		return 0, fmt.Errorf("is %d bytes, want 4", len(b))
	}
	st := int32(binary.NativeEndian.Uint32(b))
	if st < 0 {
		return 0, fmt.Errorf("holds negative state %d", st)
	}
	return st, nil
}

// ReadStateFile reads the state number at path; ok is false when there is
// no file. A symbolic link, a non-regular file or a malformed one is an
// error naming the path.
func ReadStateFile(path string) (state int32, ok bool, err error) {
	f, _, err := openRegular(path)
	switch {
	case errors.Is(err, unix.ENOENT):
		return 0, false, nil
	case errors.Is(err, unix.ELOOP):
		return 0, false, fmt.Errorf("state file %s is a symbolic link, which rpc.statd does not follow", path)
	case errors.Is(err, errNotRegular):
		return 0, false, fmt.Errorf("state file %s is not a regular file", path)
	case err != nil:
		return 0, false, fmt.Errorf("state file: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, 64))
	if err != nil {
		return 0, false, fmt.Errorf("state file %s: %w", path, err)
	}
	state, err = ParseStateFile(b)
	if err != nil {
		return 0, false, fmt.Errorf("state file %s %w", path, err)
	}
	return state, true, nil
}

// WriteStateFile replaces the state file at path with state, durably.
func WriteStateFile(path string, state int32) error {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	dfd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("state file: %w", &os.PathError{Op: "open", Path: dir, Err: err})
	}
	defer unix.Close(dfd)
	tmp := "." + base + ".new." + strconv.Itoa(os.Getpid())
	fail := func(op string, err error) error {
		unix.Unlinkat(dfd, tmp, 0)
		return fmt.Errorf("state file: %w", &os.PathError{Op: op, Path: filepath.Join(dir, tmp), Err: err})
	}
	unix.Unlinkat(dfd, tmp, 0) // a leftover of a crash with our pid
	fd, err := unix.Openat(dfd, tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return fail("create", err)
	}
	b := binary.NativeEndian.AppendUint32(nil, uint32(state))
	if n, err := unix.Write(fd, b); err != nil || n != len(b) {
		unix.Close(fd)
		if err == nil {
			err = io.ErrShortWrite
		}
		return fail("write", err)
	}
	if err := unix.Fsync(fd); err != nil {
		unix.Close(fd)
		return fail("fsync", err)
	}
	if err := unix.Close(fd); err != nil {
		return fail("close", err)
	}
	if err := unix.Renameat(dfd, tmp, dfd, base); err != nil {
		return fail("rename", err)
	}
	if err := unix.Fsync(dfd); err != nil {
		return fmt.Errorf("state file: %w", &os.PathError{Op: "fsync", Path: dir, Err: err})
	}
	return nil
}
