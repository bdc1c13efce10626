// Package identity is NSM identities served by one statd among several:
// a name plus the addresses it answers and notifies from
// (--identity NAME=ADDR[,ADDR]), and its ownership through an etcd lease
// and election, so that at most one statd serves an identity at a time.
package identity

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/hoststat/hoststat/nsm"
)

// Identity is one NSM identity: the name its notifications carry and the
// floating addresses they go from.
type Identity struct {
	Name  string
	Addrs []netip.Addr
}

// maxAddrs bounds the addresses of one identity.
const maxAddrs = 16

// Parse parses NAME=ADDR[,ADDR…]: a name valid as a mon_name and one or
// more distinct IPv4 or IPv6 addresses (no zones, no ports).
func Parse(s string) (Identity, error) {
	name, addrs, ok := strings.Cut(s, "=")
	if !ok || addrs == "" {
		return Identity{}, fmt.Errorf("--identity %s: want NAME=ADDR[,ADDR...]", nsm.Quote(s))
	}
	if err := nsm.ValidateMonName(name); err != nil {
		return Identity{}, fmt.Errorf("--identity %s: %w", nsm.Quote(s), err)
	}
	id := Identity{Name: name}
	for _, a := range strings.Split(addrs, ",") {
		ip, err := netip.ParseAddr(a)
		if err != nil || ip.Zone() != "" || !ip.IsValid() {
			return Identity{}, fmt.Errorf("--identity %s: %s is not an IP address", nsm.Quote(s), nsm.Quote(a))
		}
		ip = ip.Unmap()
		for _, have := range id.Addrs {
			if have == ip {
				return Identity{}, fmt.Errorf("--identity %s: address %s given twice", nsm.Quote(s), ip)
			}
		}
		if len(id.Addrs) == maxAddrs {
			return Identity{}, fmt.Errorf("--identity %s: more than %d addresses", nsm.Quote(s), maxAddrs)
		}
		id.Addrs = append(id.Addrs, ip)
	}
	return id, nil
}

// ParseAll parses every --identity value; names must differ.
func ParseAll(values []string) ([]Identity, error) {
	var out []Identity
	seen := map[string]bool{}
	for _, v := range values {
		id, err := Parse(v)
		if err != nil {
			return nil, err
		}
		if seen[id.Name] {
			return nil, fmt.Errorf("--identity %s given twice", nsm.Quote(id.Name))
		}
		seen[id.Name] = true
		out = append(out, id)
	}
	return out, nil
}

func (id Identity) String() string {
	a := make([]string, len(id.Addrs))
	for i, ip := range id.Addrs {
		a[i] = ip.String()
	}
	return id.Name + "=" + strings.Join(a, ",")
}
