// Package nfsutils reads the state directory of the nfs-utils rpc.statd
// (usually /var/lib/nfs) so hoststat's rpc.statd can take over from it
// without losing a monitored host, an owed notification or the state
// number:
//
//	sm/HOST      one line per SM_MON in force for HOST
//	sm.bak/HOST  the same lines for hosts still owed an SM_NOTIFY
//	state        the NSM state number, a native-endian 32-bit integer
//
// A monitor line is seven blank-separated fields:
//
//	ADDR PROG VERS PROC PRIV MON_NAME MY_NAME
//
// ADDR, PROG, VERS and PROC are 8 hexadecimal digits each (ADDR is the
// registrant's IPv4 address, always loopback in practice, and unused),
// PRIV is the 16-byte cookie as 32 hexadecimal digits. The file name is
// the host name statd resolved mon_name to; it is the host notified.
//
// Every name read is held to nsm's rules (no '/', printable, not starting
// with '.'): a state directory written by another program is input, not
// trust. Nothing here follows a symbolic link.
package nfsutils

import (
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/hoststat/hoststat/nsm"
)

// DefaultDir is where nfs-utils keeps its state.
const DefaultDir = "/var/lib/nfs"

// Bounds on what is read: a state directory is not trusted to be small.
const (
	// MaxFileSize bounds one sm/ or sm.bak/ file. A line is at most
	// 4×9+32+2×1024+2 bytes; 1,000 registrants per host is far beyond any
	// lock manager's use.
	MaxFileSize = 2 << 20
	// MaxHosts bounds the files read from one of sm/ and sm.bak/.
	MaxHosts = 1 << 20
)

// Monitor is one line of an sm/ or sm.bak/ file.
type Monitor struct {
	Host    string // the file's name
	MonName string
	MyID    nsm.MyID
	Priv    [nsm.PrivLen]byte
}

// Dir is what an nfs-utils state directory holds.
type Dir struct {
	Path     string
	State    int32 // 0 when there is no state file
	HasState bool
	Monitors []Monitor // sm/: registrations in force
	Notify   []string  // sm.bak/: hosts owed an SM_NOTIFY, sorted
	// Skipped lists what could not be taken, one reason each: unsafe
	// names, unreadable or malformed files. The rest is still imported.
	Skipped []string
}

// Exists reports whether dir looks like an nfs-utils state directory: it
// has a state file or an sm directory.
func Exists(dir string) bool {
	for _, n := range []string{"state", "sm"} {
		if _, err := os.Lstat(filepath.Join(dir, n)); err == nil {
			return true
		}
	}
	return false
}

// Read reads dir. A missing sm/ or sm.bak/ is empty; a missing or
// malformed state file leaves HasState false. Damaged records are listed
// in Skipped; only an unreadable sm/ or sm.bak/ is an error.
func Read(dir string) (*Dir, error) {
	d := &Dir{Path: dir}
	b, err := readNoFollow(filepath.Join(dir, "state"), 64)
	if err == nil {
		var st int32
		if st, err = ParseState(b); err == nil {
			d.State, d.HasState = st, true
		}
	}
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		// nfs-utils starts afresh from a state file it cannot read; so do
		// we, saying why.
		d.Skipped = append(d.Skipped, fmt.Sprintf("state: %v (ignored, as nfs-utils does)", err))
	}
	if err := d.readHosts("sm", func(host string, b []byte) {
		ms, err := ParseMonitorFile(host, b)
		if err != nil {
			d.Skipped = append(d.Skipped, fmt.Sprintf("sm/%s: %v", nsm.Quote(host), err))
		}
		d.Monitors = append(d.Monitors, ms...)
	}); err != nil {
		return nil, err
	}
	if err := d.readHosts("sm.bak", func(host string, b []byte) {
		// A host in sm.bak/ is owed a notification whatever its lines say;
		// they only name who had registered it.
		d.Notify = append(d.Notify, host)
	}); err != nil {
		return nil, err
	}
	slices.Sort(d.Notify)
	return d, nil
}

// readHosts calls fn for every regular file of dir/sub with a safe name.
func (d *Dir) readHosts(sub string, fn func(host string, b []byte)) error {
	path := filepath.Join(d.Path, sub)
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW, 0)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("nfs-utils directory %s: %w", path, err)
	}
	defer f.Close()
	names, err := f.Readdirnames(MaxHosts + 1)
	if err != nil && err != io.EOF {
		return fmt.Errorf("nfs-utils directory %s: %w", path, err)
	}
	if len(names) > MaxHosts {
		return fmt.Errorf("nfs-utils directory %s: more than %d files", path, MaxHosts)
	}
	slices.Sort(names)
	for _, host := range names {
		if strings.HasPrefix(host, ".") { // nfs-utils' own temporary files
			continue
		}
		if err := nsm.ValidateMonName(host); err != nil {
			d.Skipped = append(d.Skipped, fmt.Sprintf("%s/: file name: %v", sub, err))
			continue
		}
		b, err := readAt(int(f.Fd()), host, MaxFileSize)
		if err != nil {
			d.Skipped = append(d.Skipped, fmt.Sprintf("%s/%s: %v", sub, nsm.Quote(host), err))
			continue
		}
		fn(host, b)
	}
	return nil
}

// errNotRegular is what a symbolic link, directory or device gets.
var errNotRegular = errors.New("not a regular file")

// readNoFollow reads a regular file of at most limit bytes without
// following a symbolic link at its name.
func readNoFollow(path string, limit int64) ([]byte, error) {
	return readAt(unix.AT_FDCWD, path, limit)
}

func readAt(dirfd int, name string, limit int64) ([]byte, error) {
	fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ELOOP) {
			return nil, errNotRegular
		}
		return nil, &os.PathError{Op: "open", Path: name, Err: err}
	}
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, errNotRegular
	}
	if st.Size() > limit {
		return nil, fmt.Errorf("is %d bytes, more than %d", st.Size(), limit)
	}
	return io.ReadAll(io.LimitReader(f, limit+1))
}

// ParseState decodes nfs-utils' state file: exactly four bytes, the state
// number in the host's byte order (the format of nsm's state file too).
func ParseState(b []byte) (int32, error) { return nsm.ParseStateFile(b) }

// ParseMonitorFile decodes the lines of sm/HOST. It returns every line
// that parses, and an error describing the first that did not.
func ParseMonitorFile(host string, b []byte) ([]Monitor, error) {
	var out []Monitor
	var first error
	for i, line := range strings.Split(string(b), "\n") {
		if strings.TrimSpace(line) == "" {
			continue
		}
		m, err := ParseMonitorLine(line)
		if err != nil {
			if first == nil {
				first = fmt.Errorf("line %d: %w", i+1, err)
			}
			continue
		}
		m.Host = host
		out = append(out, m)
	}
	if first == nil && len(out) == 0 {
		first = errors.New("holds no monitor record")
	}
	return out, first
}

// ParseMonitorLine decodes one monitor line (without its newline).
func ParseMonitorLine(line string) (Monitor, error) {
	var m Monitor
	f := strings.Fields(line)
	if len(f) != 7 {
		return m, fmt.Errorf("has %d fields, want 7 (addr prog vers proc priv mon_name my_name)", len(f))
	}
	var nums [4]uint32
	for i, name := range []string{"address", "program", "version", "procedure"} {
		if len(f[i]) != 8 {
			return m, fmt.Errorf("%s %s is not 8 hexadecimal digits", name, nsm.Quote(f[i]))
		}
		n, err := strconv.ParseUint(f[i], 16, 32)
		if err != nil {
			return m, fmt.Errorf("%s %s is not 8 hexadecimal digits", name, nsm.Quote(f[i]))
		}
		nums[i] = uint32(n)
	}
	if len(f[4]) != 2*nsm.PrivLen {
		return m, fmt.Errorf("priv %s is not %d hexadecimal digits", nsm.Quote(f[4]), 2*nsm.PrivLen)
	}
	if _, err := hex.Decode(m.Priv[:], []byte(f[4])); err != nil {
		return m, fmt.Errorf("priv %s is not %d hexadecimal digits", nsm.Quote(f[4]), 2*nsm.PrivLen)
	}
	m.MonName = f[5]
	m.MyID = nsm.MyID{Name: f[6], Prog: nums[1], Vers: nums[2], Proc: nums[3]}
	id := nsm.MonID{MonName: m.MonName, MyID: m.MyID}
	if err := id.Validate(); err != nil {
		return m, err
	}
	return m, nil
}
