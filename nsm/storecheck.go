package nsm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// DamageError says a store file cannot be used as it is: what is wrong
// with it, in words an admin can act on.
type DamageError struct {
	Path   string
	Reason string
}

func (e *DamageError) Error() string {
	return fmt.Sprintf("store %q is not a hoststat NSM store or is damaged: %s", e.Path, e.Reason)
}

// The bbolt file layout this checker knows (bbolt 1.x, file version 2):
// every page starts with a 16-byte header (id u64, flags u16, count u16,
// overflow u32); pages 0 and 1 are meta pages; branch and leaf elements
// are 16 bytes each, their key (and value) found at an offset relative to
// the element. All integers are in the host's byte order.
const (
	bPageHeader  = 16
	bElemSize    = 16
	bBranch      = 0x01
	bLeaf        = 0x02
	bMeta        = 0x04
	bFreelist    = 0x10
	bBucketLeaf  = 0x01
	bMagic       = 0xED0CDAED
	bVersion     = 2
	bMetaSize    = 64 // magic..checksum
	bMetaSummed  = 56 // bytes covered by the checksum
	bNoFreelist  = ^uint64(0)
	bBucketHdr   = 16 // root pgid u64, sequence u64
	bMaxDepth    = 64
	bMinPageSize = 512
	bMaxPageSize = 1 << 16
)

// CheckStoreFile checks that the bbolt file at path can be opened without
// bbolt reading outside the file or panicking: a valid meta page, every
// page reachable from it inside the file and the high-water mark, each
// page reached once, with a page type where one is expected and elements
// inside their page. It reads the file with pread (never mmap, so a
// truncated file cannot raise SIGBUS) and never follows a symbolic link.
// A missing file is os.ErrNotExist; a damaged one a *DamageError.
func CheckStoreFile(path string) error {
	f, size, err := openRegular(path)
	switch {
	case errors.Is(err, unix.ELOOP):
		return &DamageError{Path: path, Reason: "is a symbolic link, which rpc.statd does not follow"}
	case errors.Is(err, errNotRegular):
		return &DamageError{Path: path, Reason: err.Error()}
	case err != nil:
		return err
	}
	defer f.Close()
	if reason := checkBolt(f, size); reason != "" {
		return &DamageError{Path: path, Reason: reason}
	}
	return nil
}

// checkBolt returns what is wrong with the bbolt image read through r, of
// size bytes, or "".
func checkBolt(r io.ReaderAt, size int64) string {
	if size == 0 {
		return "is empty (0 bytes)"
	}
	read := boundedReader(r, size)
	m0, why0 := readMeta(read, 0, 0)
	psize := int64(os.Getpagesize())
	if why0 == "" {
		psize = int64(m0.pageSize)
	}
	m1, why1 := readMeta(read, psize, 1)
	if why0 != "" && why1 != "" {
		return fmt.Sprintf("no valid meta page (page 0: %s; page 1: %s)", why0, why1)
	}
	m := m0
	if why0 != "" || (why1 == "" && m1.txid > m0.txid) {
		m = m1
	}
	if int64(m.pageSize) != psize {
		return fmt.Sprintf("meta pages disagree on the page size (%d, %d)", m0.pageSize, m1.pageSize)
	}
	if m.hwm < 4 || m.hwm > uint64(size)/uint64(psize) {
		return fmt.Sprintf("is %d bytes, too short for its %d pages of %d bytes (truncated?)", size, m.hwm, psize)
	}
	c := &boltChecker{read: read, psize: psize, hwm: m.hwm, seen: map[uint64]bool{}}
	if m.freelist != bNoFreelist {
		if why := c.freelist(m.freelist); why != "" {
			return why
		}
	}
	_, why := c.tree(m.root, nil, nil, 0)
	return why
}

// boundedReader returns a reader of n bytes at off that answers nil for
// any range outside the size bytes of r, so a wild offset costs nothing.
func boundedReader(r io.ReaderAt, size int64) func(off int64, n int) []byte {
	return func(off int64, n int) []byte {
		if off < 0 || n < 0 || off > size || int64(n) > size-off {
			return nil
		}
		b := make([]byte, n)
		if _, err := r.ReadAt(b, off); err != nil {
			return nil
		}
		return b
	}
}

// openRegular opens path for reading without following a symbolic link
// (ELOOP then) and checks it is a regular file.
func openRegular(path string) (*os.File, int64, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, 0, &os.PathError{Op: "open", Path: path, Err: err}
	}
	f := os.NewFile(uintptr(fd), path)
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return nil, 0, errNotRegular
	}
	return f, st.Size(), nil
}

var errNotRegular = errors.New("is not a regular file")

type boltMeta struct {
	pageSize      uint32
	root          uint64
	freelist, hwm uint64
	txid          uint64
}

func readMeta(read func(int64, int) []byte, off int64, id uint64) (boltMeta, string) {
	var m boltMeta
	p := read(off, bPageHeader+bMetaSize)
	if p == nil {
		return m, "beyond the end of the file"
	}
	ne := binary.NativeEndian
	if ne.Uint16(p[8:]) != bMeta {
		return m, fmt.Sprintf("page type 0x%02x, not meta", ne.Uint16(p[8:]))
	}
	b := p[bPageHeader:]
	switch {
	case ne.Uint32(b) != bMagic:
		return m, "not a bbolt file (bad magic)"
	case ne.Uint32(b[4:]) != bVersion:
		return m, fmt.Sprintf("bbolt file version %d, want %d", ne.Uint32(b[4:]), bVersion)
	}
	h := fnv.New64a()
	h.Write(b[:bMetaSummed])
	if h.Sum64() != ne.Uint64(b[bMetaSummed:]) {
		return m, "checksum mismatch"
	}
	m = boltMeta{pageSize: ne.Uint32(b[8:]), root: ne.Uint64(b[16:]), freelist: ne.Uint64(b[32:]),
		hwm: ne.Uint64(b[40:]), txid: ne.Uint64(b[48:])}
	if m.pageSize < bMinPageSize || m.pageSize > bMaxPageSize || m.pageSize&(m.pageSize-1) != 0 {
		return m, fmt.Sprintf("page size %d", m.pageSize)
	}
	if m.root >= m.hwm || (m.freelist != bNoFreelist && m.freelist >= m.hwm) {
		return m, "root or free list beyond the high-water mark"
	}
	_ = id
	return m, ""
}

type boltChecker struct {
	read  func(int64, int) []byte
	psize int64
	hwm   uint64
	seen  map[uint64]bool
}

// page reads page id with its overflow pages, marking them used.
func (c *boltChecker) page(id uint64, want uint16) ([]byte, string) {
	if id < 2 || id >= c.hwm {
		return nil, fmt.Sprintf("a reference to page %d, outside 2..%d", id, c.hwm-1)
	}
	h := c.read(int64(id)*c.psize, bPageHeader)
	if h == nil {
		return nil, fmt.Sprintf("page %d beyond the end of the file (truncated?)", id)
	}
	ne := binary.NativeEndian
	if got := ne.Uint64(h); got != id {
		return nil, fmt.Sprintf("page %d has the header of page %d", id, got)
	}
	flags, over := ne.Uint16(h[8:]), uint64(ne.Uint32(h[12:]))
	if flags&want == 0 || flags&(flags-1) != 0 {
		return nil, fmt.Sprintf("page %d has type 0x%02x where a %s page belongs", id, flags, pageKind(want))
	}
	if id+over >= c.hwm {
		return nil, fmt.Sprintf("page %d runs past the high-water mark", id)
	}
	for i := id; i <= id+over; i++ {
		if c.seen[i] {
			return nil, fmt.Sprintf("page %d is reached twice", i)
		}
		c.seen[i] = true
	}
	p := c.read(int64(id)*c.psize, int((over+1)*uint64(c.psize)))
	if p == nil {
		return nil, fmt.Sprintf("page %d beyond the end of the file (truncated?)", id)
	}
	return p, ""
}

func pageKind(f uint16) string {
	switch f {
	case bFreelist:
		return "free-list"
	case bLeaf:
		return "leaf"
	}
	return "branch or leaf"
}

func (c *boltChecker) freelist(id uint64) string {
	p, why := c.page(id, bFreelist)
	if why != "" {
		return why
	}
	ne := binary.NativeEndian
	n, start := uint64(ne.Uint16(p[10:])), uint64(bPageHeader)
	if n == 0xffff {
		if len(p) < bPageHeader+8 {
			return fmt.Sprintf("free-list page %d is cut short", id)
		}
		n, start = ne.Uint64(p[bPageHeader:]), bPageHeader+8
	}
	if n > (uint64(len(p))-start)/8 {
		return fmt.Sprintf("free-list page %d lists more pages than it holds", id)
	}
	for i := range n {
		if f := ne.Uint64(p[start+8*i:]); f < 2 || f >= c.hwm {
			return fmt.Sprintf("free-list page %d lists page %d, outside 2..%d", id, f, c.hwm-1)
		}
	}
	return ""
}

// tree checks the B+tree under page id, whose keys must lie in
// [lo, hi) (nil: unbounded), and returns its largest key. The key order is
// checked as bbolt's own check does, since bbolt runs that check when it
// opens a file without a free list, and panics when it fails.
func (c *boltChecker) tree(id uint64, lo, hi []byte, depth int) ([]byte, string) {
	if depth > bMaxDepth {
		return nil, "tree deeper than any bbolt file's"
	}
	p, why := c.page(id, bBranch|bLeaf)
	if why != "" {
		return nil, why
	}
	return c.node(p, id, lo, hi, depth)
}

// keyOrder says what is wrong with key at index i of page id, given the
// key before it (or the lower bound) and the upper bound.
func keyOrder(id uint64, i uint64, key, prev, hi []byte) string {
	switch {
	case prev != nil && i == 0 && bytes.Compare(prev, key) > 0,
		prev != nil && i > 0 && bytes.Compare(prev, key) >= 0,
		hi != nil && bytes.Compare(key, hi) >= 0:
		return fmt.Sprintf("page %d key %d is out of order", id, i)
	}
	return ""
}

// node checks one branch or leaf page image p (a file page, or an inline
// bucket's page inside a value) and returns its largest key.
func (c *boltChecker) node(p []byte, id uint64, lo, hi []byte, depth int) ([]byte, string) {
	ne := binary.NativeEndian
	if len(p) < bPageHeader {
		return nil, fmt.Sprintf("inline bucket under page %d is cut short", id)
	}
	flags, n := ne.Uint16(p[8:]), uint64(ne.Uint16(p[10:]))
	size := uint64(len(p))
	if bPageHeader+n*bElemSize > size {
		return nil, fmt.Sprintf("page %d claims %d elements, more than fit", id, n)
	}
	var last []byte
	switch flags {
	case bBranch:
		if n == 0 {
			return nil, fmt.Sprintf("branch page %d is empty", id)
		}
		prev := lo
		for i := range n {
			e := bPageHeader + i*bElemSize
			pos, ks := uint64(ne.Uint32(p[e:])), uint64(ne.Uint32(p[e+4:]))
			if e+pos+ks > size {
				return nil, fmt.Sprintf("branch page %d element %d lies outside the page", id, i)
			}
			key := p[e+pos : e+pos+ks]
			if why := keyOrder(id, i, key, prev, hi); why != "" {
				return nil, why
			}
			next := hi
			if i+1 < n {
				f := e + bElemSize
				npos, nks := uint64(ne.Uint32(p[f:])), uint64(ne.Uint32(p[f+4:]))
				if f+npos+nks > size {
					return nil, fmt.Sprintf("branch page %d element %d lies outside the page", id, i+1)
				}
				next = p[f+npos : f+npos+nks]
			}
			max, why := c.tree(ne.Uint64(p[e+8:]), key, next, depth+1)
			if why != "" {
				return nil, why
			}
			prev, last = max, max
		}
	case bLeaf:
		prev := lo
		for i := range n {
			e := bPageHeader + i*bElemSize
			fl, pos := ne.Uint32(p[e:]), uint64(ne.Uint32(p[e+4:]))
			ks, vs := uint64(ne.Uint32(p[e+8:])), uint64(ne.Uint32(p[e+12:]))
			if e+pos+ks+vs > size {
				return nil, fmt.Sprintf("leaf page %d element %d lies outside the page", id, i)
			}
			key := p[e+pos : e+pos+ks]
			if why := keyOrder(id, i, key, prev, hi); why != "" {
				return nil, why
			}
			prev, last = key, key
			if fl&bBucketLeaf == 0 {
				continue
			}
			v := p[e+pos+ks : e+pos+ks+vs]
			if len(v) < bBucketHdr {
				return nil, fmt.Sprintf("leaf page %d element %d is a bucket with a short header", id, i)
			}
			if depth > bMaxDepth {
				return nil, "buckets nested deeper than any bbolt file's"
			}
			var why string
			if root := ne.Uint64(v); root == 0 {
				if len(v) < bBucketHdr+bPageHeader || ne.Uint16(v[bBucketHdr+8:]) != bLeaf {
					return nil, fmt.Sprintf("leaf page %d element %d is an inline bucket without a leaf page", id, i)
				}
				_, why = c.node(v[bBucketHdr:], id, nil, nil, depth+1)
			} else {
				_, why = c.tree(root, nil, nil, depth+1)
			}
			if why != "" {
				return nil, why
			}
		}
	default:
		return nil, fmt.Sprintf("page %d has type 0x%02x where a branch or leaf page belongs", id, flags)
	}
	return last, ""
}
