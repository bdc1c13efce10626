package shm

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// The shm directory may be shared with other users (the seed advises a
// world-writable /var/shm). The writer therefore never follows a symlink
// there, creates its files exclusively, and trusts an existing file only
// when it is a regular file of its own that no one else can write.

// LockName is the writer's lock file in the shm directory: mode 0600, so
// readers cannot open it, let alone lock it.
const LockName = ".beostat.lock"

// errForeign says an existing file is not one the writer may trust.
var errForeign = errors.New("not a regular file of ours that only we can write")

// checkDir refuses a directory in which others could replace the writer's
// files: writable by group or others without the sticky bit.
func checkDir(dir string) error {
	st, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("shm: table directory %s: %w", dir, err)
	}
	if !st.IsDir() {
		return fmt.Errorf("shm: table directory %s is not a directory", dir)
	}
	if st.Mode().Perm()&0o022 != 0 && st.Mode()&fs.ModeSticky == 0 {
		return fmt.Errorf("shm: table directory %s is writable by others (mode %v) without the sticky bit: anyone could replace the table", dir, st.Mode().Perm())
	}
	return nil
}

// trusted reports whether st is a file the writer may reuse: regular,
// owned by the writer's user, writable by no one else, with one name.
func trusted(st *unix.Stat_t) error {
	switch {
	case st.Mode&unix.S_IFMT != unix.S_IFREG:
		return fmt.Errorf("%w: not a regular file", errForeign)
	case int(st.Uid) != os.Geteuid():
		return fmt.Errorf("%w: owned by uid %d", errForeign, st.Uid)
	case st.Mode&0o022 != 0:
		return fmt.Errorf("%w: mode %#o lets others write it", errForeign, st.Mode&0o7777)
	case st.Nlink != 1:
		return fmt.Errorf("%w: %d hard links", errForeign, st.Nlink)
	}
	return nil
}

// openOwned opens path for reading and writing only if it is a file the
// writer may trust, without following a symlink and without opening
// anything else (a device or FIFO named like our file is looked at
// through an O_PATH descriptor only). It returns fs.ErrNotExist when
// there is no file, and an error wrapping errForeign for an untrusted one.
func openOwned(path string) (*os.File, error) {
	pfd, err := unix.Open(path, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil, fs.ErrNotExist
		}
		return nil, err
	}
	var st unix.Stat_t
	err = unix.Fstat(pfd, &st)
	unix.Close(pfd)
	if err != nil {
		return nil, err
	}
	if err := trusted(&st); err != nil {
		return nil, err
	}
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	var st2 unix.Stat_t
	if err := unix.Fstat(fd, &st2); err != nil || st2.Dev != st.Dev || st2.Ino != st.Ino {
		unix.Close(fd)
		return nil, fmt.Errorf("%w: replaced while being opened", errForeign)
	}
	return os.NewFile(uintptr(fd), path), nil
}

// lockDir takes the writer's exclusive lock on dir: a non-blocking flock
// of the lock file, created 0600 if missing. A lock file that is not ours
// (another user's, a symlink, writable by others) is removed and made
// anew; if it cannot be, the error says so.
func lockDir(dir string) (*os.File, error) {
	path := filepath.Join(dir, LockName)
	for try := 0; ; try++ {
		fd, err := unix.Open(path, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		var f *os.File
		switch {
		case err == nil:
			f = os.NewFile(uintptr(fd), path)
			if err := f.Chmod(0o600); err != nil { // whatever the umask did
				f.Close()
				return nil, fmt.Errorf("shm: lock file %s: %w", path, err)
			}
		case errors.Is(err, unix.EEXIST):
			f, err = openOwned(path)
			if errors.Is(err, errForeign) {
				if rerr := os.Remove(path); rerr != nil {
					return nil, fmt.Errorf("shm: lock file %s is %v and cannot be removed: %w", path, err, rerr)
				}
				continue
			}
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("shm: open lock file %s: %w", path, err)
			}
			// Readable by others, someone may hold it open to lock it:
			// make a new one rather than trust it.
			if st, err := f.Stat(); err != nil || st.Mode().Perm()&0o077 != 0 {
				f.Close()
				if rerr := os.Remove(path); rerr != nil {
					return nil, fmt.Errorf("shm: lock file %s is readable by others and cannot be removed: %w", path, rerr)
				}
				continue
			}
		default:
			return nil, fmt.Errorf("shm: create lock file %s: %w", path, err)
		}
		if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
			f.Close()
			if errors.Is(err, unix.EWOULDBLOCK) {
				return nil, errBusy
			}
			return nil, fmt.Errorf("shm: lock %s: %w", path, err)
		}
		// The name may have been removed (by a writer replacing a foreign
		// lock file) between our open and our lock: then retry.
		var held, named unix.Stat_t
		if unix.Fstat(int(f.Fd()), &held) == nil && unix.Lstat(path, &named) == nil &&
			held.Dev == named.Dev && held.Ino == named.Ino {
			return f, nil
		}
		f.Close()
		if try == 8 {
			return nil, fmt.Errorf("shm: lock file %s keeps changing under us", path)
		}
	}
}

// errBusy means another writer holds the lock.
var errBusy = errors.New("in use by another writer")

// processStart is the start time of process pid in clock ticks after
// boot (field 22 of /proc/PID/stat), which tells a live writer from an
// unrelated process that got its pid later.
func processStart(pid int) (uint64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// The command name may hold spaces and parentheses: fields resume
	// after the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := bytes.Fields(b[i+1:])
	const startField = 22 - 3 // fields after the name start at field 3
	if len(f) <= startField {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f)+2)
	}
	return strconv.ParseUint(string(f[startField]), 10, 64)
}

// writerRunning reports whether process pid exists and started at ticks
// (0: unknown, then existence alone counts).
func writerRunning(pid int, ticks uint64) bool {
	if pid <= 0 {
		return false
	}
	got, err := processStart(pid)
	if err != nil {
		// No /proc entry: gone, or /proc is not mounted, then ask kill.
		if errors.Is(err, fs.ErrNotExist) {
			if _, serr := os.Stat("/proc/self"); serr == nil {
				return false
			}
		}
		return unix.Kill(pid, 0) != unix.ESRCH
	}
	return ticks == 0 || got == ticks
}

// createMapped creates a file of size bytes in dir under a random name
// made from pattern, exclusively (never an existing file or a symlink),
// mode 0644 whatever the umask, its blocks reserved, and maps it
// read-write. what names the file in errors. The caller renames it into
// place.
func createMapped(dir, pattern, what string, size int64) (*os.File, []byte, error) {
	return createMappedSparse(dir, pattern, what, size, size)
}

// createMappedSparse is createMapped with only the first reserved bytes'
// blocks reserved; the rest of the file is a hole until reserved later
// (writing a page of a hole on a full tmpfs is a SIGBUS, so the writer
// never does: see reserveRange).
func createMappedSparse(dir, pattern, what string, size, reserved int64) (*os.File, []byte, error) {
	f, err := os.CreateTemp(dir, pattern)
	if err != nil {
		return nil, nil, fmt.Errorf("shm: create %s in %s: %w", what, dir, err)
	}
	tmp := f.Name()
	fail := func(err error) (*os.File, []byte, error) {
		f.Close()
		os.Remove(tmp)
		return nil, nil, err
	}
	if err := f.Chmod(0o644); err != nil {
		return fail(fmt.Errorf("shm: set mode 0644 on %s: %w", tmp, err))
	}
	if err := f.Truncate(size); err != nil {
		return fail(fmt.Errorf("shm: size %s to %d bytes: %w", tmp, size, err))
	}
	if err := reserve(f, reserved); err != nil {
		return fail(fmt.Errorf("shm: reserve %d bytes of %s: %w", reserved, tmp, err))
	}
	m, err := unix.Mmap(int(f.Fd()), 0, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return fail(fmt.Errorf("shm: map %s: %w", tmp, err))
	}
	return f, m, nil
}

// mapReadOnly maps the regular file at path read-only, whole, if it is
// at least minSize bytes; what names the file in errors.
func mapReadOnly(path, what string, minSize int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("shm: open %s: %w", what, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("shm: open %s: %w", what, err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("shm: %s %s is not a regular file", what, path)
	}
	size := st.Size()
	if size < minSize || size > math.MaxInt {
		return nil, fmt.Errorf("shm: %s %s: %w: %d bytes is shorter than a header", what, path, ErrNotTable, size)
	}
	m, err := unix.Mmap(int(f.Fd()), 0, int(size), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("shm: map %s %s: %w", what, path, err)
	}
	return m, nil
}
