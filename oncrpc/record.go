package oncrpc

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Record marking (RFC 5531 section 11): on a stream each message is a record
// of one or more fragments, each behind a 4-byte header whose top bit marks
// the last fragment and whose other 31 bits give the fragment's length.

const lastFragment = 1 << 31

// DefaultMaxRecordSize caps a record on a server's connection. The largest
// message of any protocol that also runs over UDP fits in a datagram, i.e.
// under 64 KiB, so no honest client of such a protocol sends more; at the
// default connection limits (256 local, 256 remote) the cap bounds
// reassembly memory to 32 MiB.
const DefaultMaxRecordSize = 64 << 10

// ErrRecordTooLarge means a record exceeded the reader's cap; the stream is
// then out of step and must be closed.
var ErrRecordTooLarge = errors.New("oncrpc: record exceeds size limit")

// readChunk bounds each growth of a record's buffer, so memory follows the
// bytes that actually arrive, not the lengths a peer claims.
const readChunk = 16 << 10

// RecordReader reassembles records from a stream.
type RecordReader struct {
	r   *bufio.Reader
	max int
	// inRecord is true once a record's first header has been consumed.
	inRecord bool
}

// NewRecordReader reads records of at most max bytes (headers included)
// from r; max <= 0 means DefaultMaxRecordSize.
func NewRecordReader(r io.Reader, max int) *RecordReader {
	if max <= 0 {
		max = DefaultMaxRecordSize
	}
	return &RecordReader{r: bufio.NewReaderSize(r, 4096), max: max}
}

// Between reports whether the reader stands between records, where an error
// of the underlying reader (a read deadline, say) loses nothing.
func (rr *RecordReader) Between() bool { return !rr.inRecord }

// Await waits for the first byte of the next record, so a server can time
// the wait between records apart from the reading of one. An error means
// no byte came: io.EOF when the stream ended between records.
func (rr *RecordReader) Await() error {
	_, err := rr.r.Peek(1)
	return err
}

// ReadRecord returns the next whole record in a fresh slice. io.EOF means the
// stream ended cleanly between records; io.ErrUnexpectedEOF that it ended
// inside one. Fragment headers count towards the cap so a stream of empty
// fragments cannot hold a record open forever.
func (rr *RecordReader) ReadRecord() ([]byte, error) {
	// Peek rather than read the first header: a deadline that expires while
	// waiting for a record then leaves the stream intact.
	hdr, err := rr.r.Peek(4)
	if err != nil {
		if err == io.EOF && len(hdr) > 0 {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	rr.inRecord = true
	var rec []byte
	total := 0
	for {
		if hdr == nil {
			var h [4]byte
			if _, err := io.ReadFull(rr.r, h[:]); err != nil {
				return nil, unexpected(err)
			}
			hdr = h[:]
		} else {
			rr.r.Discard(4)
		}
		word := binary.BigEndian.Uint32(hdr)
		hdr = nil
		n := int(word &^ lastFragment)
		total += 4
		if n > rr.max-total {
			return nil, fmt.Errorf("%w: fragment of %d bytes after %d bytes, limit %d", ErrRecordTooLarge, n, total-4, rr.max)
		}
		total += n
		for n > 0 {
			c := min(n, readChunk)
			off := len(rec)
			rec = append(rec, make([]byte, c)...)
			if _, err := io.ReadFull(rr.r, rec[off:]); err != nil {
				return nil, unexpected(err)
			}
			n -= c
		}
		if word&lastFragment != 0 {
			rr.inRecord = false
			if rec == nil {
				rec = []byte{}
			}
			return rec, nil
		}
	}
}

func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// WriteRecord writes msg as a single-fragment record in one write.
func WriteRecord(w io.Writer, msg []byte) error {
	if len(msg) >= lastFragment {
		return fmt.Errorf("oncrpc: %d-byte message too large for one fragment", len(msg))
	}
	buf := make([]byte, 4, 4+len(msg))
	binary.BigEndian.PutUint32(buf, uint32(len(msg))|lastFragment)
	_, err := w.Write(append(buf, msg...))
	return err
}

// markRecord fills the 4 bytes reserved at the front of buf with the header
// of a single-fragment record holding the rest of buf.
func markRecord(buf []byte) {
	binary.BigEndian.PutUint32(buf, uint32(len(buf)-4)|lastFragment)
}
