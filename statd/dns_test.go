package statd

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"golang.org/x/net/dns/dnsmessage"
)

// loopbackDNS is a real DNS server on loopback answering A queries from a
// table, and a net.Resolver (Go's own, as the daemon uses by default) that
// asks it: matching runs against real lookups over real sockets, without
// touching the machine's resolver configuration.
type loopbackDNS struct {
	pc    net.PacketConn
	mu    sync.Mutex
	zone  map[string][]netip.Addr // lower-case name with trailing dot
	asked map[string]int
}

func newLoopbackDNS(t *testing.T, zone map[string][]string) (*loopbackDNS, *net.Resolver) {
	t.Helper()
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	d := &loopbackDNS{pc: pc, zone: map[string][]netip.Addr{}, asked: map[string]int{}}
	for name, as := range zone {
		for _, a := range as {
			d.zone[strings.ToLower(name)+"."] = append(d.zone[strings.ToLower(name)+"."], netip.MustParseAddr(a))
		}
	}
	go d.serve()
	t.Cleanup(func() { pc.Close() })
	addr := pc.LocalAddr().String()
	r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var dl net.Dialer
		return dl.DialContext(ctx, "udp", addr)
	}}
	return d, r
}

func (d *loopbackDNS) timesAsked(name string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.asked[strings.ToLower(name)+"."]
}

func (d *loopbackDNS) serve() {
	buf := make([]byte, 1500)
	for {
		n, from, err := d.pc.ReadFrom(buf)
		if err != nil {
			return
		}
		var p dnsmessage.Parser
		h, err := p.Start(buf[:n])
		if err != nil {
			continue
		}
		q, err := p.Question()
		if err != nil {
			continue
		}
		name := strings.ToLower(q.Name.String())
		d.mu.Lock()
		d.asked[name]++
		as, known := d.zone[name]
		d.mu.Unlock()
		rh := dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true, RecursionAvailable: true}
		if !known {
			rh.RCode = dnsmessage.RCodeNameError
		}
		b := dnsmessage.NewBuilder(nil, rh)
		b.EnableCompression()
		b.StartQuestions()
		b.Question(q)
		b.StartAnswers()
		for _, a := range as {
			if q.Type == dnsmessage.TypeA && a.Is4() {
				b.AResource(dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 60}, dnsmessage.AResource{A: a.As4()})
			}
		}
		msg, err := b.Finish()
		if err != nil {
			continue
		}
		d.pc.WriteTo(msg, from)
	}
}
