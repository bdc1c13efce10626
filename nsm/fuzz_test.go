package nsm

import (
	"bytes"
	"testing"
	"time"

	"github.com/hoststat/hoststat/oncrpc/xdr"
)

// fuzzWire decodes arbitrary bytes into a fresh value: it must not panic,
// and whatever decodes must encode again and decode to the same value.
func fuzzWire[T any, P interface {
	*T
	wireType
}](f *testing.F, seeds ...P) {
	for _, s := range seeds {
		e := xdr.NewEncoder(nil)
		if err := s.Encode(e); err != nil {
			f.Fatal(err)
		}
		f.Add(e.Bytes())
	}
	f.Add([]byte{})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		var v T
		if err := P(&v).Decode(xdr.NewDecoder(b)); err != nil {
			return
		}
		e := xdr.NewEncoder(nil)
		if err := P(&v).Encode(e); err != nil {
			t.Fatalf("decoded %+v but cannot encode it: %v", v, err)
		}
		var again T
		if err := P(&again).Decode(xdr.NewDecoder(e.Bytes())); err != nil {
			t.Fatalf("re-encoded %+v does not decode: %v", v, err)
		}
		if !bytes.Equal(encodeBytes(t, P(&again)), e.Bytes()) {
			t.Fatalf("round trip changed %+v into %+v", v, again)
		}
	})
}

func encodeBytes(t *testing.T, v wireType) []byte {
	e := xdr.NewEncoder(nil)
	if err := v.Encode(e); err != nil {
		t.Fatal(err)
	}
	return e.Bytes()
}

var seedMyID = MyID{Name: "nfs-server-01", Prog: 100021, Vers: 3, Proc: 16}

func FuzzName(f *testing.F) { fuzzWire(f, &Name{MonName: "client-1.example.org"}) }
func FuzzMyID(f *testing.F) { fuzzWire(f, &seedMyID) }
func FuzzMonID(f *testing.F) {
	fuzzWire(f, &MonID{MonName: "10.0.0.7", MyID: seedMyID})
}
func FuzzMon(f *testing.F) {
	fuzzWire(f, &Mon{ID: MonID{MonName: "10.0.0.7", MyID: seedMyID}, Priv: testPriv})
}
func FuzzStatChange(f *testing.F) { fuzzWire(f, &StatChange{MonName: "peer", State: 3}) }
func FuzzStat(f *testing.F)       { fuzzWire(f, &Stat{State: 5}) }
func FuzzStatRes(f *testing.F)    { fuzzWire(f, &StatRes{Res: StatFail, State: 5}) }
func FuzzStatus(f *testing.F)     { fuzzWire(f, &Status{MonName: "peer", State: 9, Priv: testPriv}) }

// FuzzValidateName: validation never panics, and anything it accepts is
// safe as a single path element and a single log field.
func FuzzValidateName(f *testing.F) {
	for _, s := range []string{"host.example.org", "../x", "a/b", "", "h\n", "%n%n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if ValidateMonName(s) != nil {
			return
		}
		if s == "" || len(s) > MaxStrLen || s[0] == '.' || bytes.ContainsAny([]byte(s), "/ \n\x00") {
			t.Fatalf("accepted %q", s)
		}
	})
}

// The store's record decoders read bytes from a file that may be damaged.

func FuzzRegKey(f *testing.F) {
	f.Add(regKey("client-00042.cluster.example.org", 1))
	f.Add(regKey("h", 1<<40))
	f.Add([]byte{0})
	f.Fuzz(func(t *testing.T, k []byte) {
		name, id, err := parseRegKey(k)
		if err != nil {
			return
		}
		if !bytes.Equal(regKey(name, id), k) {
			t.Fatalf("key % x parsed as (%q, %d), which encodes differently", k, name, id)
		}
	})
}

func FuzzRegValue(f *testing.F) {
	f.Add(regValue(testPriv, time.UnixMilli(1700000000000)))
	f.Add(make([]byte, PrivLen))
	f.Fuzz(func(t *testing.T, v []byte) {
		priv, at, err := parseRegValue(v)
		if err != nil {
			return
		}
		if !bytes.Equal(regValue(priv, at), v) {
			t.Fatalf("value % x does not re-encode", v)
		}
	})
}

func FuzzMyIDKey(f *testing.F) {
	f.Add(myIDKey(seedMyID))
	f.Add(myIDKey(MyID{}))
	f.Fuzz(func(t *testing.T, k []byte) {
		m, err := parseMyIDKey(k)
		if err != nil {
			return
		}
		if !bytes.Equal(myIDKey(m), k) {
			t.Fatalf("key % x parsed as %+v, which encodes differently", k, m)
		}
	})
}

func FuzzOwedValue(f *testing.F) {
	f.Add(owedValue(Owed{State: 3, FirstOwed: time.UnixMilli(1700000000000), Attempts: 4, NextTry: time.UnixMilli(1700000009000)}))
	f.Add([]byte{0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, v []byte) {
		o, err := parseOwedValue("h", v)
		if err != nil {
			return
		}
		if !bytes.Equal(owedValue(o), v) {
			t.Fatalf("value % x parsed as %+v, which encodes differently", v, o)
		}
	})
}

func FuzzGaveUpValue(f *testing.F) {
	f.Add(gaveUpValue(7, time.UnixMilli(1700000000000)))
	f.Add([]byte{0x80})
	f.Fuzz(func(t *testing.T, v []byte) {
		g, err := parseGaveUpValue("h", v)
		if err == nil && !bytes.Equal(gaveUpValue(g.State, g.At), v) {
			t.Fatalf("value % x parsed as %+v, which encodes differently", v, g)
		}
	})
}

func FuzzState(f *testing.F) {
	f.Add(encodeState(7))
	f.Fuzz(func(t *testing.T, v []byte) {
		s, err := parseState(v)
		if err == nil && !bytes.Equal(encodeState(s), v) {
			t.Fatalf("state % x does not re-encode", v)
		}
	})
}
