package recv

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// WindowFileName is the file, beside the table, that keeps every node's
// replay window (Freshness) across restarts of recvstats.
const WindowFileName = "beostat.window"

// Window file layout (docs/protocol.md, "Replays and restarts"):
// a 64-byte header, then one 48-byte slot per node number, little-endian.
const (
	winMagic      = "HSTSWIN1"
	winVersion    = 1
	winHeaderLen  = 64
	winSlotLen    = 48
	winFlagInUse  = 1
	winFlagHonest = 2
	winFlagByBoot = 4
)

var (
	winLE  = binary.LittleEndian
	winCRC = crc32.MakeTable(crc32.Castagnoli)
)

// Window is the persisted replay window: one slot per node number in a
// file of the writer's own, mapped shared, so what Store writes survives
// the process at once (the file lives with the table, so it is as durable
// as the table is). It is not safe for concurrent use.
type Window struct {
	path string
	f    *os.File
	m    []byte
	n    int
}

// OpenWindow opens (or creates, mode 0600) the window file in dir with room
// for slots node numbers. It never follows a symbolic link, and refuses a
// file that is not a regular file of our own, writable by nobody else,
// with a single link: in a shared directory someone else may have put it
// there. A damaged header is an error, never a guess.
func OpenWindow(dir string, slots int) (*Window, error) {
	path := filepath.Join(dir, WindowFileName)
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_CREAT|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("replay window %s: %w", path, err)
	}
	f := os.NewFile(uintptr(fd), path)
	w := &Window{path: path, f: f}
	if err := w.open(slots); err != nil {
		f.Close()
		return nil, fmt.Errorf("replay window %s: %w", path, err)
	}
	return w, nil
}

func (w *Window) open(slots int) error {
	var st unix.Stat_t
	if err := unix.Fstat(int(w.f.Fd()), &st); err != nil {
		return err
	}
	switch {
	case st.Mode&unix.S_IFMT != unix.S_IFREG:
		return errors.New("not a regular file")
	case int(st.Uid) != os.Geteuid():
		return fmt.Errorf("owned by uid %d, not by us (uid %d): remove it", st.Uid, os.Geteuid())
	case st.Mode&0o022 != 0:
		return fmt.Errorf("mode %04o lets others write it: remove it", st.Mode&0o7777)
	case st.Nlink != 1:
		return fmt.Errorf("has %d links: remove it", st.Nlink)
	}
	have := 0
	if st.Size > 0 {
		var h [winHeaderLen]byte
		if _, err := w.f.ReadAt(h[:], 0); err != nil {
			return fmt.Errorf("damaged: header: %w", err)
		}
		var err error
		if have, err = decodeWindowHeader(h[:], st.Size); err != nil {
			return err
		}
	}
	w.n = max(have, slots)
	size := winHeaderLen + w.n*winSlotLen
	if w.n != have {
		if err := w.f.Truncate(int64(size)); err != nil {
			return err
		}
		var h [winHeaderLen]byte
		copy(h[:], winMagic)
		winLE.PutUint32(h[8:], winVersion)
		winLE.PutUint32(h[12:], winSlotLen)
		winLE.PutUint32(h[16:], uint32(w.n))
		winLE.PutUint32(h[20:], crc32.Checksum(h[:20], winCRC))
		if _, err := w.f.WriteAt(h[:], 0); err != nil {
			return err
		}
	}
	m, err := unix.Mmap(int(w.f.Fd()), 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return fmt.Errorf("map: %w", err)
	}
	w.m = m
	return nil
}

// decodeWindowHeader checks a window file's header against the file's
// size and returns its slot count.
func decodeWindowHeader(h []byte, size int64) (int, error) {
	if len(h) < winHeaderLen || string(h[:8]) != winMagic || winLE.Uint32(h[8:]) != winVersion || winLE.Uint32(h[12:]) != winSlotLen ||
		winLE.Uint32(h[20:]) != crc32.Checksum(h[:20], winCRC) {
		return 0, errors.New("damaged: bad header (remove it to start with an empty window)")
	}
	n := int(winLE.Uint32(h[16:]))
	if n > MaxNodes || size != int64(winHeaderLen+n*winSlotLen) {
		return 0, fmt.Errorf("damaged: %d bytes for %d slots", size, n)
	}
	return n, nil
}

// Path is the window file.
func (w *Window) Path() string { return w.path }

func (w *Window) slot(node int) []byte {
	off := winHeaderLen + node*winSlotLen
	return w.m[off : off+winSlotLen : off+winSlotLen]
}

// Load returns the window of every node that has one, and how many slots
// were damaged (skipped: their nodes start with no window).
func (w *Window) Load() (map[int]Freshness, int) {
	return loadWindow(w.m[winHeaderLen:], w.n)
}

// loadWindow reads n slots from b.
func loadWindow(b []byte, n int) (map[int]Freshness, int) {
	out := map[int]Freshness{}
	bad := 0
	for node := range min(n, len(b)/winSlotLen) {
		b := b[node*winSlotLen : (node+1)*winSlotLen]
		flags := winLE.Uint32(b[36:])
		if flags == 0 && winLE.Uint32(b[40:]) == 0 {
			continue
		}
		if flags&winFlagInUse == 0 || winLE.Uint32(b[40:]) != crc32.Checksum(b[:40], winCRC) {
			bad++
			continue
		}
		var f Freshness
		copy(f.BootID[:], b[:16])
		f.BootTime = int64(winLE.Uint64(b[16:]))
		f.Epoch = winLE.Uint64(b[24:])
		f.Seq = winLE.Uint32(b[32:])
		f.Honest = flags&winFlagHonest != 0
		f.ByBoot = flags&winFlagByBoot != 0
		out[node] = f
	}
	return out, bad
}

// Store records node's window; nodes beyond the file's slots are ignored
// (the table never has them).
func (w *Window) Store(node int, f Freshness) {
	if node < 0 || node >= w.n || w.m == nil {
		return
	}
	b := w.slot(node)
	copy(b[:16], f.BootID[:])
	winLE.PutUint64(b[16:], uint64(f.BootTime))
	winLE.PutUint64(b[24:], f.Epoch)
	winLE.PutUint32(b[32:], f.Seq)
	flags := uint32(winFlagInUse)
	if f.Honest {
		flags |= winFlagHonest
	}
	if f.ByBoot {
		flags |= winFlagByBoot
	}
	winLE.PutUint32(b[36:], flags)
	winLE.PutUint32(b[40:], crc32.Checksum(b[:40], winCRC))
}

// Clear forgets node's window: the node was forgotten.
func (w *Window) Clear(node int) {
	if node < 0 || node >= w.n || w.m == nil {
		return
	}
	clear(w.slot(node))
}

// Close unmaps and closes the file; what was stored stays.
func (w *Window) Close() error {
	if w.m == nil {
		return nil
	}
	err := unix.Munmap(w.m)
	w.m = nil
	return errors.Join(err, w.f.Close())
}
