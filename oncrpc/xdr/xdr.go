// Package xdr encodes and decodes the External Data Representation of
// RFC 4506: big-endian 4-byte units, strings and variable opaques prefixed by
// their length and padded to a multiple of four.
//
// The Decoder never panics and checks every length against both its declared
// maximum and the bytes actually left before it allocates anything.
package xdr

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// ErrTruncated means the input ended inside an item.
var ErrTruncated = errors.New("xdr: input truncated")

// LengthError reports a counted item longer than its declared maximum.
type LengthError struct {
	What     string // which item, e.g. "mon_name"
	Len, Max uint32
}

func (e *LengthError) Error() string {
	return fmt.Sprintf("xdr: %s length %d exceeds maximum %d", e.What, e.Len, e.Max)
}

func pad(n int) int { return (4 - n%4) % 4 }

// Encoder appends XDR items to a byte slice.
type Encoder struct {
	buf []byte
}

// NewEncoder returns an Encoder that appends to buf (which may be nil).
func NewEncoder(buf []byte) *Encoder { return &Encoder{buf: buf} }

// Bytes returns everything encoded so far.
func (e *Encoder) Bytes() []byte { return e.buf }

// Len is the number of bytes encoded so far.
func (e *Encoder) Len() int { return len(e.buf) }

// Reset empties the encoder, keeping its storage.
func (e *Encoder) Reset() { e.buf = e.buf[:0] }

func (e *Encoder) Uint32(v uint32) { e.buf = binary.BigEndian.AppendUint32(e.buf, v) }
func (e *Encoder) Int32(v int32)   { e.Uint32(uint32(v)) }
func (e *Encoder) Uint64(v uint64) { e.buf = binary.BigEndian.AppendUint64(e.buf, v) }
func (e *Encoder) Int64(v int64)   { e.Uint64(uint64(v)) }

// Bool encodes TRUE as 1 and FALSE as 0.
func (e *Encoder) Bool(v bool) {
	if v {
		e.Uint32(1)
	} else {
		e.Uint32(0)
	}
}

// FixedOpaque encodes b with no length word, padded.
func (e *Encoder) FixedOpaque(b []byte) {
	e.buf = append(e.buf, b...)
	e.buf = append(e.buf, make([]byte, pad(len(b)))...)
}

// Opaque encodes a variable-length opaque: length, bytes, padding.
func (e *Encoder) Opaque(b []byte) {
	e.Uint32(uint32(len(b)))
	e.FixedOpaque(b)
}

// String encodes s like a variable-length opaque.
func (e *Encoder) String(s string) {
	e.Uint32(uint32(len(s)))
	e.buf = append(e.buf, s...)
	e.buf = append(e.buf, make([]byte, pad(len(s)))...)
}

// Decoder reads XDR items from a byte slice. After the first error every
// further call returns the zero value, and Err reports that first error.
type Decoder struct {
	buf []byte
	off int
	err error
}

// NewDecoder reads from b; the returned slices of Opaque alias b.
func NewDecoder(b []byte) *Decoder { return &Decoder{buf: b} }

// Err is the first error met, or nil.
func (d *Decoder) Err() error { return d.err }

// Remaining is the number of bytes not yet consumed.
func (d *Decoder) Remaining() int { return len(d.buf) - d.off }

// Rest returns the unconsumed bytes and consumes them.
func (d *Decoder) Rest() []byte {
	b := d.buf[d.off:]
	d.off = len(d.buf)
	return b
}

// Fail records err as the decoder's error unless one is already recorded;
// callers use it for semantic checks (a bad enum value, say).
func (d *Decoder) Fail(err error) {
	if d.err == nil {
		d.err = err
	}
}

func (d *Decoder) take(n int) []byte {
	if d.err != nil {
		return nil
	}
	if n < 0 || n > len(d.buf)-d.off {
		d.err = ErrTruncated
		return nil
	}
	b := d.buf[d.off : d.off+n]
	d.off += n
	return b
}

func (d *Decoder) Uint32() uint32 {
	b := d.take(4)
	if b == nil {
		return 0
	}
	return binary.BigEndian.Uint32(b)
}

func (d *Decoder) Int32() int32 { return int32(d.Uint32()) }

func (d *Decoder) Uint64() uint64 {
	b := d.take(8)
	if b == nil {
		return 0
	}
	return binary.BigEndian.Uint64(b)
}

func (d *Decoder) Int64() int64 { return int64(d.Uint64()) }

// Bool accepts only 0 and 1, as RFC 4506 requires.
func (d *Decoder) Bool() bool {
	v := d.Uint32()
	if v > 1 {
		d.Fail(fmt.Errorf("xdr: boolean value %d is neither 0 nor 1", v))
		return false
	}
	return v == 1
}

// FixedOpaque reads exactly n bytes plus padding; the result aliases the input.
func (d *Decoder) FixedOpaque(n int) []byte {
	b := d.take(n)
	d.take(pad(n))
	if d.err != nil {
		return nil
	}
	return b
}

// Opaque reads a variable-length opaque of at most max bytes, naming the
// item what in any error. The result aliases the input.
func (d *Decoder) Opaque(what string, max uint32) []byte {
	n := d.Uint32()
	if d.err != nil {
		return nil
	}
	if n > max {
		d.Fail(&LengthError{What: what, Len: n, Max: max})
		return nil
	}
	return d.FixedOpaque(int(n))
}

// String reads a string of at most max bytes, naming the item what in any error.
func (d *Decoder) String(what string, max uint32) string {
	return string(d.Opaque(what, max))
}
