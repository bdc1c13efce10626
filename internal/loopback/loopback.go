// Package loopback keeps the HTTP endpoints meant for this machine
// (beostatus --http, rpc.statd --metrics) on it: a listen address must be
// loopback unless the user chose otherwise, and a request must name this
// machine by a loopback address or as localhost.
package loopback

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// Endpoint names an endpoint's options for its error messages.
type Endpoint struct {
	Flag       string // "--http"
	PublicFlag string // "--http-public"
	Shows      string // what the network would see: "the cluster's status"
	Example    string // "127.0.0.1:8040"
}

// CheckListen refuses an address that is not a loopback HOST:PORT unless
// public. A host name other than "localhost" is refused too, as its
// addresses may change after the check.
func (e Endpoint) CheckListen(addr string, public bool) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%s %q: %v (want HOST:PORT, e.g. %s)", e.Flag, addr, err, e.Example)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return fmt.Errorf("%s %q: port %q is not a number in 0..65535", e.Flag, addr, port)
	}
	if public || host == "localhost" {
		return nil
	}
	if ip, err := netip.ParseAddr(host); err != nil || !ip.IsLoopback() {
		return fmt.Errorf("%s %q: not a loopback address; give %s to serve %s to the network", e.Flag, addr, e.PublicFlag, e.Shows)
	}
	return nil
}

// Host reports whether a request's Host names this machine by a loopback
// address or as localhost: a page elsewhere cannot then read the endpoint
// through a name it rebinds to 127.0.0.1.
func Host(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(strings.Trim(host, "[]"))
	return err == nil && ip.IsLoopback()
}
