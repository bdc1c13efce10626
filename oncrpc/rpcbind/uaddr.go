package rpcbind

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// EncodeUniversalAddr writes ap as an RPC universal address (RFC 5665):
// the address in its usual text form, then the port's high and low bytes,
// dot-separated: "192.0.2.7.0.111", "::1.3.241". An IPv4-mapped IPv6
// address is written as IPv4.
func EncodeUniversalAddr(ap netip.AddrPort) string {
	p := ap.Port()
	return fmt.Sprintf("%s.%d.%d", ap.Addr().Unmap().WithZone(""), p>>8, p&0xff)
}

// ParseUniversalAddr reads a universal address written by
// EncodeUniversalAddr or by any rpcbind.
func ParseUniversalAddr(s string) (netip.AddrPort, error) {
	i := strings.LastIndexByte(s, '.')
	if i < 0 {
		return netip.AddrPort{}, fmt.Errorf("rpcbind: universal address %q has no port", s)
	}
	j := strings.LastIndexByte(s[:i], '.')
	if j < 0 {
		return netip.AddrPort{}, fmt.Errorf("rpcbind: universal address %q has no port", s)
	}
	hi, err1 := portByte(s[j+1 : i])
	lo, err2 := portByte(s[i+1:])
	if err1 != nil || err2 != nil {
		return netip.AddrPort{}, fmt.Errorf("rpcbind: universal address %q has a bad port", s)
	}
	a, err := netip.ParseAddr(s[:j])
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("rpcbind: universal address %q: %w", s, err)
	}
	return netip.AddrPortFrom(a.Unmap(), hi<<8|lo), nil
}

func portByte(s string) (uint16, error) {
	if len(s) == 0 || len(s) > 3 {
		return 0, strconv.ErrSyntax
	}
	n, err := strconv.ParseUint(s, 10, 8)
	return uint16(n), err
}
