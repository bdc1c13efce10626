package nsm

import (
	"net/netip"
	"testing"
	"time"
)

func TestSameHost(t *testing.T) {
	cases := []struct {
		a, b string
		want bool
	}{
		{"host", "host", true},
		{"HOST", "host", true},
		{"host", "host.example.org", true},
		{"Host.Example.Org", "host", true},
		{"host.example.org", "HOST.EXAMPLE.ORG", true},
		{"host.a", "host.b", false},
		{"host", "hostile.example.org", false},
		{"host", "other.host.org", false},
		{"host", "", false},
		{"10.0.0.5", "10.0.0.5", true},
		{"10.0.0.5", "::ffff:10.0.0.5", true},
		{"10", "10.0.0.5", false},
		{"10.0.0.5", "10", false},
		{"2001:db8::1", "2001:DB8:0::1", true},
		{"10.0.0.5", "10.0.0.6", false},
	}
	for _, c := range cases {
		if got := SameHost(c.a, c.b); got != c.want {
			t.Errorf("SameHost(%q, %q) = %v, want %v", c.a, c.b, got, c.want)
		}
		if got := SameHost(c.b, c.a); got != c.want {
			t.Errorf("SameHost(%q, %q) = %v, want %v (not symmetric)", c.b, c.a, got, c.want)
		}
	}
}

func TestRateLimiter(t *testing.T) {
	l := NewRateLimiter(2, 3, 100) // 3 at once, then 2 per second
	a := netip.MustParseAddr("192.0.2.1")
	b := netip.MustParseAddr("192.0.2.2")
	allowed := func(from netip.Addr, now time.Time, n int) int {
		k := 0
		for range n {
			if l.Allow(from, now) {
				k++
			}
		}
		return k
	}
	if got := allowed(a, t0, 10); got != 3 {
		t.Fatalf("burst: %d allowed, want 3", got)
	}
	if got := allowed(b, t0, 10); got != 3 {
		t.Fatalf("another sender is limited by the first: %d allowed", got)
	}
	if got := allowed(a, t0.Add(500*time.Millisecond), 10); got != 1 {
		t.Fatalf("after 0.5 s: %d allowed, want 1", got)
	}
	if got := allowed(a, t0.Add(time.Hour), 10); got != 3 {
		t.Fatalf("after an hour: %d allowed, want the burst of 3", got)
	}
	if got := allowed(netip.MustParseAddr("::ffff:192.0.2.2"), t0, 1); got != 0 {
		t.Fatal("an IPv4-mapped address escaped its IPv4 bucket")
	}
	// A clock going backwards grants nothing extra.
	if got := allowed(a, t0, 10); got != 0 {
		t.Fatalf("clock stepped back: %d allowed", got)
	}
}

func TestRateLimiterBoundsMemory(t *testing.T) {
	l := NewRateLimiter(1, 1, 10)
	for i := range 1000 {
		addr := netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)})
		if !l.Allow(addr, t0) {
			t.Fatalf("new sender %v refused", addr)
		}
	}
	if n := len(l.b.m); n > 10 {
		t.Fatalf("tracks %d senders, limit 10", n)
	}
}
