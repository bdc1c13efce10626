package oncrpc

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/hoststat/hoststat/oncrpc/xdr"
)

func TestAuthSysRoundTrip(t *testing.T) {
	p := AuthSysParms{Stamp: 9, MachineName: "node-12.cluster", UID: 1000, GID: 100, GIDs: []uint32{1, 2, 3}}
	a, err := p.Auth()
	if err != nil || a.Flavor != AuthSys || len(a.Body) > MaxAuthBody {
		t.Fatalf("Auth = %v, %v", a, err)
	}
	got, err := ParseAuthSys(a.Body)
	if err != nil || !reflect.DeepEqual(got, p) {
		t.Fatalf("ParseAuthSys = %+v, %v", got, err)
	}
	// The largest legal credential still fits the 400-byte cap.
	big := AuthSysParms{MachineName: strings.Repeat("n", 255), GIDs: make([]uint32, 16)}
	if a, err := big.Auth(); err != nil || len(a.Body) > MaxAuthBody {
		t.Fatalf("largest AUTH_SYS: %d bytes, %v", len(a.Body), err)
	}
	if _, err := (AuthSysParms{GIDs: make([]uint32, 17)}).Auth(); err == nil {
		t.Error("17 gids accepted")
	}
	if _, err := (AuthSysParms{MachineName: strings.Repeat("n", 256)}).Auth(); err == nil {
		t.Error("256-byte machine name accepted")
	}
}

func TestParseAuthSysRejects(t *testing.T) {
	good, _ := AuthSysParms{MachineName: "h", GIDs: []uint32{7}}.Auth()
	gids17 := bytes.Clone(good.Body)
	binary.BigEndian.PutUint32(gids17[len(gids17)-8:], 17)
	for name, body := range map[string][]byte{
		"empty":     {},
		"truncated": good.Body[:len(good.Body)-1],
		"trailing":  append(bytes.Clone(good.Body), 0, 0, 0, 0),
		"17 gids":   gids17,
	} {
		if _, err := ParseAuthSys(body); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestParseCall(t *testing.T) {
	cred, _ := AuthSysParms{MachineName: "m", UID: 3}.Auth()
	h := CallHeader{XID: 1, RPCVersion: 2, Program: 100024, Version: 1, Procedure: 2, Cred: cred, Verf: OpaqueAuth{Body: []byte{}}}
	msg := callMessage(h, 0xdeadbeef)
	got, args, err := ParseCall(msg)
	if err != nil || !reflect.DeepEqual(got, h) || !bytes.Equal(args, []byte{0xde, 0xad, 0xbe, 0xef}) {
		t.Fatalf("ParseCall = %+v, % x, %v", got, args, err)
	}
	for n := range 24 { // shorter than xid+type+rpcvers+prog+vers+proc: no reply due
		if _, _, err := ParseCall(msg[:n]); !errors.Is(err, ErrMalformed) {
			t.Errorf("%d bytes: %v", n, err)
		}
	}
	if _, _, err := ParseCall(msg[:30]); !errors.Is(err, AuthError(AuthBadCred)) {
		t.Errorf("truncated credential: %v", err)
	}
	reply := bytes.Clone(msg)
	binary.BigEndian.PutUint32(reply[4:], 1)
	if _, _, err := ParseCall(reply); !errors.Is(err, ErrMalformed) {
		t.Errorf("reply parsed as call: %v", err)
	}
}

func TestReplyRoundTrip(t *testing.T) {
	for _, want := range []error{
		nil,
		&AcceptError{Stat: ProgUnavail},
		&AcceptError{Stat: ProgMismatch, Low: 2, High: 4},
		&AcceptError{Stat: ProcUnavail},
		&AcceptError{Stat: GarbageArgs},
		&AcceptError{Stat: SystemErr},
		&RejectError{Stat: RPCMismatch, Low: 2, High: 2},
		&RejectError{Stat: AuthErrorStat, Auth: AuthTooWeak},
	} {
		e := xdr.NewEncoder(nil)
		AppendReply(e, 42, want, []byte{0, 0, 0, 9})
		r, err := ParseReply(e.Bytes())
		if err != nil || r.XID != 42 || !reflect.DeepEqual(r.Err, want) {
			t.Errorf("%v: got %+v, %v", want, r, err)
		}
		if want == nil && !bytes.Equal(r.Results, []byte{0, 0, 0, 9}) {
			t.Errorf("results % x", r.Results)
		}
	}
	// A plain error is SYSTEM_ERR on the wire.
	e := xdr.NewEncoder(nil)
	AppendReply(e, 1, io.EOF, nil)
	if r, _ := ParseReply(e.Bytes()); !errors.Is(r.Err, ErrSystem) {
		t.Errorf("plain error became %v", r.Err)
	}
}

func TestParseReplyRejectsGarbage(t *testing.T) {
	for name, b := range map[string][]byte{
		"empty":          {},
		"call":           {0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2},
		"bad reply stat": {0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 7},
		"bad reject":     {0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 5},
		"short mismatch": {0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2},
	} {
		if _, err := ParseReply(b); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func record(frags ...[]byte) []byte {
	var out []byte
	for i, f := range frags {
		n := uint32(len(f))
		if i == len(frags)-1 {
			n |= lastFragment
		}
		out = binary.BigEndian.AppendUint32(out, n)
		out = append(out, f...)
	}
	return out
}

func TestRecordReader(t *testing.T) {
	stream := append(record([]byte("ab"), nil, []byte("cdef")), record([]byte("xyz!"))...)
	stream = append(stream, record(nil)...)
	// One byte at a time exercises every partial read.
	rr := NewRecordReader(iotest.OneByteReader(bytes.NewReader(stream)), 64)
	for _, want := range []string{"abcdef", "xyz!", ""} {
		got, err := rr.ReadRecord()
		if err != nil || string(got) != want {
			t.Fatalf("got %q, %v, want %q", got, err, want)
		}
		if !rr.Between() {
			t.Error("not between records after a whole one")
		}
	}
	if _, err := rr.ReadRecord(); err != io.EOF {
		t.Fatalf("at end: %v", err)
	}
	rr = NewRecordReader(bytes.NewReader(record([]byte("ab"), []byte("cd"))[:9]), 64)
	if _, err := rr.ReadRecord(); err != io.ErrUnexpectedEOF {
		t.Fatalf("cut record: %v", err)
	}
	// The cap counts headers: two 30-byte fragments plus headers exceed 64.
	rr = NewRecordReader(bytes.NewReader(record(make([]byte, 30), make([]byte, 30))), 64)
	if _, err := rr.ReadRecord(); !errors.Is(err, ErrRecordTooLarge) {
		t.Fatalf("over the cap: %v", err)
	}
	var buf bytes.Buffer
	WriteRecord(&buf, []byte("hello"))
	if got, err := NewRecordReader(&buf, 0).ReadRecord(); err != nil || string(got) != "hello" {
		t.Fatalf("WriteRecord round trip: %q %v", got, err)
	}
}

func FuzzParseCall(f *testing.F) {
	cred, _ := AuthSysParms{MachineName: "m", UID: 3, GIDs: []uint32{1}}.Auth()
	f.Add(callMessage(CallHeader{XID: 1, RPCVersion: 2, Program: 100024, Version: 1, Procedure: 2, Cred: cred}, 1, 2))
	f.Add(callMessage(CallHeader{XID: 1, RPCVersion: 3}))
	f.Add([]byte{0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		h, args, err := ParseCall(b)
		if err != nil {
			return
		}
		// A call that parses survives a re-encode (padding aside) unchanged.
		e := xdr.NewEncoder(nil)
		h.Encode(e)
		n := e.Len()
		h2, args2, err := ParseCall(append(e.Bytes(), args...))
		if err != nil || n+len(args) != len(b) || !bytes.Equal(args2, args) || h2.XID != h.XID ||
			h2.Procedure != h.Procedure || !bytes.Equal(h2.Cred.Body, h.Cred.Body) || !bytes.Equal(h2.Verf.Body, h.Verf.Body) {
			t.Fatalf("re-encoding changed the call: %v", err)
		}
		checkAuth(&h)
	})
}

func FuzzParseReply(f *testing.F) {
	for _, err := range []error{nil, &AcceptError{Stat: ProgMismatch, Low: 1, High: 2}, &RejectError{Stat: AuthErrorStat, Auth: AuthBadCred}, &RejectError{Stat: RPCMismatch, Low: 2, High: 2}} {
		e := xdr.NewEncoder(nil)
		AppendReply(e, 7, err, []byte{1, 2, 3, 4})
		f.Add(e.Bytes())
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseReply(b)
		if err != nil {
			return
		}
		_ = r.Err
		if r.Err != nil {
			_ = r.Err.Error()
		}
	})
}

func FuzzRecordReader(f *testing.F) {
	f.Add(record([]byte("abcd"), []byte("ef")), 64)
	f.Add(append(record(nil, nil), 0x80, 0, 0), 16)
	f.Add([]byte{0x7f, 0xff, 0xff, 0xff}, 1<<20)
	f.Fuzz(func(t *testing.T, b []byte, max int) {
		max = int(uint(max)%(1<<16)) + 1
		rr := NewRecordReader(bytes.NewReader(b), max)
		total := 0
		for {
			// As a server reads: wait for a record, then read it.
			if err := rr.Await(); err != nil {
				if err != io.EOF {
					t.Fatalf("Await: %v, want io.EOF", err)
				}
				break
			}
			rec, err := rr.ReadRecord()
			if err != nil {
				break
			}
			if len(rec) > max {
				t.Fatalf("%d-byte record over the %d cap", len(rec), max)
			}
			total += len(rec)
		}
		if total > len(b) {
			t.Fatalf("read %d bytes of records from %d of input", total, len(b))
		}
	})
}

func FuzzParseAuthSys(f *testing.F) {
	a, _ := AuthSysParms{Stamp: 1, MachineName: "node", UID: 2, GID: 3, GIDs: []uint32{4, 5}}.Auth()
	f.Add(a.Body)
	f.Add([]byte{0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := ParseAuthSys(b)
		if err != nil {
			return
		}
		a, err := p.Auth()
		if err != nil || len(a.Body) != len(b) {
			t.Fatalf("re-encoded to %d bytes from %d: %v", len(a.Body), len(b), err)
		}
		if p2, err := ParseAuthSys(a.Body); err != nil || !reflect.DeepEqual(p2, p) {
			t.Fatalf("round trip: %+v, %v", p2, err)
		}
	})
}
