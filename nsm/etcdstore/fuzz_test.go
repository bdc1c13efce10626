package etcdstore

import "testing"

func FuzzParseRegKey(f *testing.F) {
	f.Add("host\x00lockd\x00100021\x003\x0016")
	f.Add("a\x00b\x00c\x00d\x00e")
	f.Fuzz(func(t *testing.T, k string) {
		name, my, err := parseRegKey(k)
		if err == nil && regKey(name, my) != k {
			t.Fatalf("parse(%q) does not round-trip", k)
		}
	})
}

func FuzzParseRecords(f *testing.F) {
	f.Add([]byte(`{"priv":"AAAAAAAAAAAAAAAAAAAAAA==","registered":"2026-01-01T00:00:00Z"}`))
	f.Add([]byte(`{"Host":"h","State":3}`))
	f.Fuzz(func(t *testing.T, v []byte) {
		parseRegValue("k", v)
		parseOwed("h", v)
		parseGaveUp("h", v)
		parseState(v)
	})
}
