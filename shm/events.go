package shm

import (
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// The events file is a ring of the last node events recvstats decided
// (up, down, reboot, forgotten), beside the table, for readers that
// follow them (beostat --events) without talking to recvstats. Layout in
// docs/shm.md ("The events file"); keep the two in step.

// EventsFileName is the events file inside the shm directory.
const EventsFileName = "beostat.events"

// EventsVersion is the layout version of the events file.
const EventsVersion = 1

// DefaultEventsKept is how many events the ring holds by default.
const DefaultEventsKept = 1024

// MaxEventsKept bounds the ring (64 MiB of events).
const MaxEventsKept = 1 << 20

var eventsMagic = [8]byte{'H', 'S', 'T', 'A', 'T', 'E', 'V', 'T'}

// Events file header and slot offsets.
const (
	eMagic      = 0
	eVersion    = 8
	eHeaderSize = 12 // 64
	eGeneration = 16
	eRetired    = 24 // uint32, atomic; same offset as the table's
	eCapacity   = 28 // event slots
	eSlotSize   = 32 // 64
	eCRC        = 36 // CRC-32C of bytes [0,24) and [28,36)
	eHead       = 40 // uint64, atomic: events written; event k is in slot k mod capacity

	eventsHeaderSize = 64
	eventSlotSize    = 64

	// Slot offsets.
	vSeq  = 0  // uint64, atomic: 2k+1 while event k is written, 2k+2 once it is
	vTime = 8  // int64 Unix ns
	vNode = 16 // uint32
	vKind = 20 // uint8, EventKind
	vAddr = 21 // uint8: 0 no address, 4 IPv4, 6 IPv6
	vPort = 22 // uint16
	vIP   = 24 // 16 bytes: IPv4 in the first 4
)

// EventKind is what changed about a node.
type EventKind uint8

// Event kinds, in the words recvstats --on-event passes to its program.
const (
	EventUp        EventKind = iota + 1 // first heard, or heard again after being down
	EventDown                           // silent for the down-after time
	EventReboot                         // a new boot id (the node is up: it just sent)
	EventForgotten                      // silent for the forget-after time: its number is free again
)

var eventNames = [...]string{"", "up", "down", "reboot", "forgotten"}

func (k EventKind) String() string {
	if int(k) < len(eventNames) && k != 0 {
		return eventNames[k]
	}
	return fmt.Sprintf("event(%d)", k)
}

// Event is one change of a node.
type Event struct {
	Time time.Time
	Node int
	Addr netip.AddrPort // the address last heard as the node
	Kind EventKind
}

func eventsCRC(h []byte) uint32 {
	c := crc32.Update(0, castagnoli, h[:eRetired])
	return crc32.Update(c, castagnoli, h[eCapacity:eCRC])
}

// EventWriter appends to the events file. It belongs to the table's
// Writer (same directory, same lock). Safe for concurrent use.
type EventWriter struct {
	mu   sync.Mutex
	f    *os.File
	m    []byte
	cap  uint64
	head uint64
	buf  [eventSlotSize]byte
}

// OpenEvents lays out a new, empty events file of kept slots beside the
// table (default DefaultEventsKept), created exclusively and renamed into
// place; the file it replaces, when it is ours, is marked retired so its
// readers move to the new one.
func (w *Writer) OpenEvents(kept int) (*EventWriter, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.m == nil {
		return nil, ErrClosed
	}
	if kept <= 0 {
		kept = DefaultEventsKept
	}
	if kept > MaxEventsKept {
		return nil, fmt.Errorf("shm: %d events kept exceeds the limit %d", kept, MaxEventsKept)
	}
	path := filepath.Join(w.dir, EventsFileName)
	f, m, err := createMapped(w.dir, ".beostat-events-*.tmp", "events", int64(eventsHeaderSize+kept*eventSlotSize))
	if err != nil {
		return nil, err
	}
	copy(m[eMagic:], eventsMagic[:])
	le.PutUint32(m[eVersion:], EventsVersion)
	le.PutUint32(m[eHeaderSize:], eventsHeaderSize)
	le.PutUint64(m[eGeneration:], uint64(time.Now().UnixNano()))
	le.PutUint32(m[eCapacity:], uint32(kept))
	le.PutUint32(m[eSlotSize:], eventSlotSize)
	le.PutUint32(m[eCRC:], eventsCRC(m))
	old, oerr := openOwned(path)
	switch {
	case oerr == nil:
		defer old.Close()
		defer retireFile(old, eventsMagic) // after the rename: readers reopen the new one
	case errors.Is(oerr, errForeign):
		w.log.Warn("shm: replacing an events file the writer does not own", "path", path, "reason", oerr)
	case !errors.Is(oerr, fs.ErrNotExist):
		w.log.Warn("shm: replacing an events file that cannot be opened", "path", path, "err", oerr)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		unix.Munmap(m)
		f.Close()
		os.Remove(f.Name())
		return nil, fmt.Errorf("shm: install events %s: %w", path, err)
	}
	return &EventWriter{f: f, m: m, cap: uint64(kept)}, nil
}

// Append publishes e as the newest event, overwriting the oldest when
// the ring is full.
func (e *EventWriter) Append(ev Event) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.m == nil {
		return ErrClosed
	}
	if ev.Node < 0 || ev.Node >= MaxNodes {
		return fmt.Errorf("shm: event: node %d out of range", ev.Node)
	}
	k := e.head
	off := eventsHeaderSize + int(k%e.cap)*eventSlotSize
	b := e.buf[:]
	clear(b)
	le.PutUint64(b[vTime:], uint64(ev.Time.UnixNano()))
	le.PutUint32(b[vNode:], uint32(ev.Node))
	b[vKind] = byte(ev.Kind)
	if a := ev.Addr.Addr().Unmap(); a.IsValid() {
		b[vAddr] = 6
		if a.Is4() {
			b[vAddr] = 4
		}
		ip := a.As16()
		if a.Is4() {
			ip4 := a.As4()
			copy(ip[:], ip4[:])
			clear(ip[4:])
		}
		copy(b[vIP:], ip[:])
		le.PutUint16(b[vPort:], ev.Addr.Port())
	}
	store64(e.m, off+vSeq, 2*k+1)
	publish(e.m, off+8, b[8:])
	store64(e.m, off+vSeq, 2*k+2)
	e.head = k + 1
	store64(e.m, eHead, e.head)
	return nil
}

// Close unmaps the events file, which stays for readers.
func (e *EventWriter) Close() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.m == nil {
		return ErrClosed
	}
	err := unix.Munmap(e.m)
	e.m = nil
	return errors.Join(err, e.f.Close())
}

// EventReader follows the events file that recvstats writes. It never
// blocks the writer and never returns a torn event. Not safe for
// concurrent use.
type EventReader struct {
	path string
	m    []byte
	cap  uint64
	next uint64 // the next event to read
	buf  [eventSlotSize]byte
}

// OpenEventReader maps the events file in dir (DefaultDir when empty)
// read-only; the first Poll returns the events written after it, and
// those of Back.
func OpenEventReader(dir string) (*EventReader, error) {
	if dir == "" {
		dir = DefaultDir
	}
	r := &EventReader{path: filepath.Join(dir, EventsFileName)}
	if err := r.open(); err != nil {
		return nil, err
	}
	r.next = load64(r.m, eHead)
	return r, nil
}

func (r *EventReader) open() error {
	m, err := mapReadOnly(r.path, "events", eventsHeaderSize)
	if err != nil {
		return err
	}
	fail := func(format string, a ...any) error {
		err := fmt.Errorf("shm: events %s: "+format, append([]any{r.path}, a...)...)
		unix.Munmap(m) // after formatting: a may point into m
		return err
	}
	if [8]byte(m[eMagic:eMagic+8]) != eventsMagic {
		return fail("%w: bad magic %q", ErrNotTable, string(m[eMagic:eMagic+8]))
	}
	if v := le.Uint32(m[eVersion:]); v != EventsVersion {
		return fail("%w %d (this program reads events %d)", ErrVersion, v, EventsVersion)
	}
	if got, want := le.Uint32(m[eCRC:]), eventsCRC(m); got != want {
		return fail("%w: header checksum %#08x, want %#08x", ErrCorrupt, got, want)
	}
	c := uint64(le.Uint32(m[eCapacity:]))
	if le.Uint32(m[eHeaderSize:]) != eventsHeaderSize || le.Uint32(m[eSlotSize:]) != eventSlotSize ||
		c < 1 || c > MaxEventsKept || uint64(len(m)) != eventsHeaderSize+c*eventSlotSize {
		return fail("%w: %d slots in %d bytes", ErrCorrupt, c, len(m))
	}
	if r.m != nil {
		unix.Munmap(r.m)
	}
	r.m, r.cap, r.next = m, c, 0 // a new file: every event in it is new
	return nil
}

// Back makes the next Poll start up to n events before the newest.
func (r *EventReader) Back(n int) {
	if r.m == nil || n <= 0 {
		return
	}
	head := load64(r.m, eHead)
	r.next = head - min(head, uint64(n), r.cap)
}

// Poll appends the events written since the last Poll to dst, oldest
// first. missed counts those overwritten before they could be read.
func (r *EventReader) Poll(dst []Event) (_ []Event, missed uint64, err error) {
	if r.m == nil {
		return dst, 0, ErrClosed
	}
	if load32(r.m, eRetired) != 0 {
		if err := r.open(); err != nil {
			return dst, 0, err
		}
	}
	head := load64(r.m, eHead)
	if head < r.next { // cannot go back: a damaged file
		return dst, 0, fmt.Errorf("shm: events %s: %w: head %d before %d", r.path, ErrCorrupt, head, r.next)
	}
	if head-r.next > r.cap {
		missed = head - r.next - r.cap
		r.next = head - r.cap
	}
	for ; r.next < head; r.next++ {
		k := r.next
		off := eventsHeaderSize + int(k%r.cap)*eventSlotSize
		if load64(r.m, off+vSeq) != 2*k+2 {
			missed++ // overwritten (or being overwritten) already
			continue
		}
		copyAtomic(r.buf[:], r.m, off)
		if le.Uint64(r.buf[vSeq:]) != 2*k+2 || load64(r.m, off+vSeq) != 2*k+2 {
			missed++
			continue
		}
		ev, err := decodeEvent(r.buf[:])
		if err != nil {
			return dst, missed, fmt.Errorf("shm: events %s: event %d: %w", r.path, k, err)
		}
		dst = append(dst, ev)
	}
	return dst, missed, nil
}

func decodeEvent(b []byte) (Event, error) {
	ev := Event{Time: time.Unix(0, int64(le.Uint64(b[vTime:]))), Node: int(le.Uint32(b[vNode:])), Kind: EventKind(b[vKind])}
	if ev.Kind < EventUp || ev.Kind > EventForgotten || ev.Node >= MaxNodes {
		return Event{}, fmt.Errorf("%w: kind %d node %d", ErrCorrupt, b[vKind], ev.Node)
	}
	port := le.Uint16(b[vPort:])
	switch b[vAddr] {
	case 0:
	case 4:
		ev.Addr = netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[vIP:vIP+4])), port)
	case 6:
		ev.Addr = netip.AddrPortFrom(netip.AddrFrom16([16]byte(b[vIP:vIP+16])), port)
	default:
		return Event{}, fmt.Errorf("%w: address family %d", ErrCorrupt, b[vAddr])
	}
	return ev, nil
}

// Close unmaps the events file.
func (r *EventReader) Close() error {
	if r.m == nil {
		return ErrClosed
	}
	err := unix.Munmap(r.m)
	r.m = nil
	return err
}
