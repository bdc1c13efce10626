package xdr

import (
	"bytes"
	"errors"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	e := NewEncoder(nil)
	e.Uint32(7)
	e.Int32(-2)
	e.Uint64(1 << 40)
	e.Bool(true)
	e.String("abcde")
	e.Opaque([]byte{1, 2})
	e.FixedOpaque([]byte("0123456789abcdef"))
	if e.Len()%4 != 0 {
		t.Fatalf("encoded length %d is not a multiple of 4", e.Len())
	}
	d := NewDecoder(e.Bytes())
	if v := d.Uint32(); v != 7 {
		t.Errorf("Uint32 = %d", v)
	}
	if v := d.Int32(); v != -2 {
		t.Errorf("Int32 = %d", v)
	}
	if v := d.Uint64(); v != 1<<40 {
		t.Errorf("Uint64 = %d", v)
	}
	if !d.Bool() {
		t.Error("Bool = false")
	}
	if s := d.String("s", 10); s != "abcde" {
		t.Errorf("String = %q", s)
	}
	if b := d.Opaque("o", 2); !bytes.Equal(b, []byte{1, 2}) {
		t.Errorf("Opaque = %v", b)
	}
	if b := d.FixedOpaque(16); string(b) != "0123456789abcdef" {
		t.Errorf("FixedOpaque = %q", b)
	}
	if d.Err() != nil || d.Remaining() != 0 {
		t.Fatalf("err %v, %d bytes left", d.Err(), d.Remaining())
	}
}

func TestStringPaddingOnWire(t *testing.T) {
	e := NewEncoder(nil)
	e.String("abcde")
	want := []byte{0, 0, 0, 5, 'a', 'b', 'c', 'd', 'e', 0, 0, 0}
	if !bytes.Equal(e.Bytes(), want) {
		t.Fatalf("got % x, want % x", e.Bytes(), want)
	}
}

func TestOverlongStringNamesItem(t *testing.T) {
	e := NewEncoder(nil)
	e.String("toolong")
	d := NewDecoder(e.Bytes())
	d.String("mon_name", 3)
	var le *LengthError
	if !errors.As(d.Err(), &le) || le.What != "mon_name" || le.Len != 7 || le.Max != 3 {
		t.Fatalf("err = %v", d.Err())
	}
}

func TestHugeLengthDoesNotAllocate(t *testing.T) {
	d := NewDecoder([]byte{0x7f, 0xff, 0xff, 0xff})
	if b := d.Opaque("x", 1<<31); b != nil || !errors.Is(d.Err(), ErrTruncated) {
		t.Fatalf("got %v, %v", b, d.Err())
	}
}

func TestBadBool(t *testing.T) {
	d := NewDecoder([]byte{0, 0, 0, 2})
	d.Bool()
	if d.Err() == nil {
		t.Fatal("boolean 2 accepted")
	}
}

func FuzzDecoder(f *testing.F) {
	f.Add([]byte{0, 0, 0, 3, 'a', 'b', 'c', 0, 0, 0, 0, 1})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		d := NewDecoder(b)
		s := d.String("s", 1024)
		ok := d.Bool()
		o := d.Opaque("o", 64)
		fx := d.FixedOpaque(16)
		if d.Err() != nil {
			return
		}
		// What decoded must survive a re-encode and decode unchanged.
		e := NewEncoder(nil)
		e.String(s)
		e.Bool(ok)
		e.Opaque(o)
		e.FixedOpaque(fx)
		d2 := NewDecoder(e.Bytes())
		if d2.String("s", 1024) != s || d2.Bool() != ok || !bytes.Equal(d2.Opaque("o", 64), o) ||
			!bytes.Equal(d2.FixedOpaque(16), fx) || d2.Err() != nil || d2.Remaining() != 0 {
			t.Fatalf("round trip changed the value")
		}
	})
}
