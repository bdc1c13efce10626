package identity

import (
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	id, err := Parse("nfs.example=192.0.2.10,2001:db8::10,::ffff:192.0.2.11")
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.Addr{netip.MustParseAddr("192.0.2.10"), netip.MustParseAddr("2001:db8::10"), netip.MustParseAddr("192.0.2.11")}
	if id.Name != "nfs.example" || len(id.Addrs) != 3 || id.Addrs[0] != want[0] || id.Addrs[1] != want[1] || id.Addrs[2] != want[2] {
		t.Fatalf("Parse = %+v", id)
	}
	if id.String() != "nfs.example=192.0.2.10,2001:db8::10,192.0.2.11" {
		t.Fatalf("String = %q", id.String())
	}
	bad := map[string]string{
		"nfs":                      "want NAME=ADDR",
		"nfs=":                     "want NAME=ADDR",
		"=192.0.2.1":               "mon_name",
		"a/b=192.0.2.1":            "mon_name",
		"nfs=host.example":         "not an IP address",
		"nfs=192.0.2.1:2049":       "not an IP address",
		"nfs=fe80::1%eth0":         "not an IP address",
		"nfs=192.0.2.1,192.0.2.1":  "given twice",
		"nfs=192.0.2.1,,192.0.2.2": "not an IP address",
		"nfs=" + strings.Repeat("10.0.0.1,", 16) + "10.0.0.2": "given twice",
	}
	for in, msg := range bad {
		if _, err := Parse(in); err == nil || !strings.Contains(err.Error(), msg) {
			t.Errorf("Parse(%q) error %v, want one saying %q", in, err, msg)
		}
	}
	many := "nfs="
	for i := range 17 {
		many += netip.AddrFrom4([4]byte{10, 0, 0, byte(i + 1)}).String() + ","
	}
	if _, err := Parse(strings.TrimSuffix(many, ",")); err == nil || !strings.Contains(err.Error(), "more than 16") {
		t.Errorf("17 addresses: %v", err)
	}
	if _, err := ParseAll([]string{"a=192.0.2.1", "a=192.0.2.2"}); err == nil || !strings.Contains(err.Error(), "twice") {
		t.Errorf("same name twice: %v", err)
	}
}

// The owner's own clock: a renewal sent at t with TTL keeps it serving
// until t+TTL-margin and no longer; a late answer never extends it past
// what its send time allows, and an older renewal never shortens it.
func TestLeaseClock(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	c := leaseClock{margin: time.Second}
	c.renewed(t0, 10*time.Second)
	if !c.valid(t0.Add(8999*time.Millisecond)) || c.valid(t0.Add(9*time.Second)) {
		t.Fatalf("valid until %v, want %v", c.validUntil, t0.Add(9*time.Second))
	}
	c.renewed(t0.Add(5*time.Second), 10*time.Second) // answered much later: counts from the send
	if c.validUntil != t0.Add(14*time.Second) {
		t.Fatalf("valid until %v after a renewal sent at +5s", c.validUntil)
	}
	c.renewed(t0.Add(time.Second), 10*time.Second)
	if c.validUntil != t0.Add(14*time.Second) {
		t.Fatalf("an older renewal moved the deadline to %v", c.validUntil)
	}
	var never leaseClock
	if never.valid(t0) {
		t.Fatal("an owner that never renewed may serve")
	}
}
