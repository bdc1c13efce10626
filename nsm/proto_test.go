package nsm

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/hoststat/hoststat/oncrpc/xdr"
)

type wireType interface {
	Encode(*xdr.Encoder) error
	Decode(*xdr.Decoder) error
}

func encode(t *testing.T, v wireType) []byte {
	t.Helper()
	e := xdr.NewEncoder(nil)
	if err := v.Encode(e); err != nil {
		t.Fatal(err)
	}
	return e.Bytes()
}

var testPriv = [PrivLen]byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}

// TestMonWireBytes checks SM_MON's argument byte for byte: strings padded
// to four, numbers big-endian, and priv as 16 raw bytes with no length word.
func TestMonWireBytes(t *testing.T) {
	m := Mon{ID: MonID{MonName: "peer1", MyID: MyID{Name: "me", Prog: 100021, Vers: 3, Proc: 16}}, Priv: testPriv}
	want := []byte{
		0, 0, 0, 5, 'p', 'e', 'e', 'r', '1', 0, 0, 0, // mon_name
		0, 0, 0, 2, 'm', 'e', 0, 0, // my_name
		0, 1, 0x86, 0xb5, // my_prog 100021
		0, 0, 0, 3, // my_vers
		0, 0, 0, 16, // my_proc
	}
	want = append(want, testPriv[:]...)
	got := encode(t, &m)
	if !bytes.Equal(got, want) {
		t.Fatalf("Mon encodes as\n% x\nwant\n% x", got, want)
	}
	var back Mon
	d := xdr.NewDecoder(got)
	if err := back.Decode(d); err != nil || back != m || d.Remaining() != 0 {
		t.Fatalf("decoded %+v, err %v, %d left", back, err, d.Remaining())
	}
}

func TestStatusWireBytes(t *testing.T) {
	s := Status{MonName: "h", State: 7, Priv: testPriv}
	want := append([]byte{0, 0, 0, 1, 'h', 0, 0, 0, 0, 0, 0, 7}, testPriv[:]...)
	if got := encode(t, &s); !bytes.Equal(got, want) {
		t.Fatalf("Status encodes as % x, want % x", got, want)
	}
}

func TestRoundTrips(t *testing.T) {
	cases := []struct {
		in, out wireType
	}{
		{&Name{MonName: "client-1.example.org"}, &Name{}},
		{&MyID{Name: "localhost", Prog: 100021, Vers: 4, Proc: 16}, &MyID{}},
		{&MonID{MonName: "10.0.0.5", MyID: MyID{Name: "x", Prog: 1, Vers: 2, Proc: 3}}, &MonID{}},
		{&StatChange{MonName: "peer", State: -3}, &StatChange{}},
		{&Stat{State: 41}, &Stat{}},
		{&StatRes{Res: StatFail, State: 9}, &StatRes{}},
		{&Status{MonName: "p", State: 5, Priv: testPriv}, &Status{}},
	}
	for _, c := range cases {
		b := encode(t, c.in)
		if len(b)%4 != 0 {
			t.Errorf("%T encodes to %d bytes, not a multiple of 4", c.in, len(b))
		}
		d := xdr.NewDecoder(b)
		if err := c.out.Decode(d); err != nil {
			t.Errorf("%T: %v", c.in, err)
			continue
		}
		if d.Remaining() != 0 {
			t.Errorf("%T: %d bytes not consumed", c.in, d.Remaining())
		}
		if !bytes.Equal(encode(t, c.out), b) {
			t.Errorf("%T: round trip changed %+v into %+v", c.in, c.in, c.out)
		}
	}
}

func TestDecodeTruncatedEverywhere(t *testing.T) {
	m := Mon{ID: MonID{MonName: "peer1", MyID: MyID{Name: "me", Prog: 1, Vers: 1, Proc: 1}}, Priv: testPriv}
	full := encode(t, &m)
	for n := 0; n < len(full); n++ {
		var back Mon
		if err := back.Decode(xdr.NewDecoder(full[:n])); !errors.Is(err, xdr.ErrTruncated) {
			t.Fatalf("Mon cut to %d of %d bytes: err %v, want ErrTruncated", n, len(full), err)
		}
	}
}

func TestDecodeRefusesOverlongName(t *testing.T) {
	e := xdr.NewEncoder(nil)
	e.Uint32(MaxStrLen + 1) // a length word claiming 1025 bytes, with none behind it
	var n Name
	err := n.Decode(xdr.NewDecoder(e.Bytes()))
	var le *xdr.LengthError
	if !errors.As(err, &le) || le.What != "mon_name" {
		t.Fatalf("err %v, want a LengthError naming mon_name", err)
	}
}

func TestEncodeRefusesOverlongName(t *testing.T) {
	long := strings.Repeat("a", MaxStrLen+1)
	for _, v := range []wireType{&Name{MonName: long}, &MyID{Name: long}, &StatChange{MonName: long}, &Status{MonName: long}} {
		if err := v.Encode(xdr.NewEncoder(nil)); err == nil {
			t.Errorf("%T with a %d-byte name encoded without error", v, len(long))
		}
	}
	if err := (&Name{MonName: long[:MaxStrLen]}).Encode(xdr.NewEncoder(nil)); err != nil {
		t.Errorf("a name of exactly SM_MAXSTRLEN bytes: %v", err)
	}
}

func TestStatResRefusesUnknownResult(t *testing.T) {
	e := xdr.NewEncoder(nil)
	e.Int32(2)
	e.Int32(1)
	var r StatRes
	if err := r.Decode(xdr.NewDecoder(e.Bytes())); err == nil {
		t.Fatal("res_stat 2 decoded without error")
	}
}

func TestValidateNames(t *testing.T) {
	cases := []struct {
		name, want string // want: substring of the error, "" for valid
	}{
		{"client-00042.cluster.example.org", ""},
		{"10.1.2.3", ""},
		{"fe80::1%eth0", ""},
		{strings.Repeat("a", MaxStrLen), ""},
		{"", "is empty"},
		{strings.Repeat("a", MaxStrLen+1), "is 1025 bytes"},
		{".hidden", "starts with '.'"},
		{"../../etc/passwd", "starts with '.'"},
		{"a/b", "contains '/' at byte 1"},
		{"host name", "byte 0x20"},
		{"host\nname", "byte 0x0a"},
		{"h\x00", "byte 0x00"},
		{"h\x7f", "byte 0x7f"},
		{"hé", "byte 0xc3"},
		{"%s%s%n", ""}, // printable; harmless once quoted in logs
	}
	for _, c := range cases {
		err := ValidateMonName(c.name)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("ValidateMonName(%q) = %v, want nil", c.name, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("ValidateMonName(%q) = %v, want an error containing %q", c.name, err, c.want)
		}
	}
}

// TestNameErrorIsSafeToLog checks a hostile value reaches the message
// escaped, shortened and recognisable.
func TestNameErrorIsSafeToLog(t *testing.T) {
	hostile := "x\n\x1b[31m/" + strings.Repeat("y", 2000)
	err := ValidateMyName(hostile)
	if err == nil {
		t.Fatal("accepted")
	}
	msg := err.Error()
	if strings.ContainsAny(msg, "\n\x1b") {
		t.Errorf("message carries raw control bytes: %q", msg)
	}
	if len(msg) > 200 {
		t.Errorf("message is %d bytes; the value should be cut", len(msg))
	}
	if !strings.HasPrefix(msg, `nsm: my_name "x\n\x1b[31m/`) || !strings.Contains(msg, "(2008 bytes)") {
		t.Errorf("message %q does not name the field, quote the value and give its length", msg)
	}
	if err := (&MonID{MonName: "ok", MyID: MyID{Name: "a/b"}}).Validate(); err == nil || !strings.Contains(err.Error(), "my_name") {
		t.Errorf("MonID.Validate = %v, want a my_name error", err)
	}
}
