package oncrpc

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// reservedPortBlacklist is the set of ports bindresvport must not take, so a
// long-lived client socket never sits on a port a daemon (cups, imaps...)
// wants to listen on. Read once, as libtirpc does, not at every dial: statd
// dials from a privileged port for every callback. Callers must not modify it.
var reservedPortBlacklist = sync.OnceValue(readReservedPortBlacklist)

func readReservedPortBlacklist() map[int]bool {
	skip := map[int]bool{}
	f, err := os.Open(bindresvportBlacklist)
	if err != nil {
		return skip
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "#")
		if p, err := strconv.Atoi(strings.TrimSpace(line)); err == nil {
			skip[p] = true
		}
	}
	return skip
}

// dialPrivileged dials from a free port in 665..1023, starting at a random
// one so concurrent dialers rarely race for the same port.
func dialPrivileged(ctx context.Context, network, address string) (net.Conn, error) {
	skip := reservedPortBlacklist()
	n := privilegedPortHigh - privilegedPortLow + 1
	start := rand.IntN(n)
	var last error
	for i := range n {
		port := privilegedPortLow + (start+i)%n
		if skip[port] {
			continue
		}
		d := net.Dialer{}
		if strings.HasPrefix(network, "udp") {
			d.LocalAddr = &net.UDPAddr{Port: port}
		} else {
			d.LocalAddr = &net.TCPAddr{Port: port}
		}
		c, err := d.DialContext(ctx, network, address)
		if err == nil {
			return c, nil
		}
		switch {
		case errors.Is(err, syscall.EADDRINUSE), errors.Is(err, syscall.EADDRNOTAVAIL):
			last = err
			continue // busy, or this 4-tuple lingers in TIME_WAIT: try the next
		case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
			return nil, fmt.Errorf("oncrpc: binding a port below 1024 needs CAP_NET_BIND_SERVICE: %w", err)
		}
		return nil, err
	}
	return nil, fmt.Errorf("oncrpc: no free port in %d..%d: %w", privilegedPortLow, privilegedPortHigh, last)
}
