package memnet

import (
	"net/netip"
	"time"

	"github.com/hoststat/hoststat/telemetry/recv"
	"github.com/hoststat/hoststat/telemetry/send"
)

// RecvTransport adapts an endpoint to recv.Transport.
type RecvTransport struct{ *Endpoint }

var _ recv.Transport = RecvTransport{}

// ReadBatch blocks for one datagram, then takes whatever else is queued.
func (t RecvTransport) ReadBatch(ms []recv.Message) (int, error) {
	if len(ms) == 0 {
		return 0, nil
	}
	d, err := t.Read()
	if err != nil {
		return 0, err
	}
	n := 0
	for {
		m := &ms[n]
		m.N = copy(m.Buf, d.Data)
		m.Truncated = len(d.Data) > len(m.Buf)
		m.From, m.Multicast = d.From, d.Multicast
		n++
		if n == len(ms) {
			return n, nil
		}
		var ok bool
		if d, ok = t.TryRead(); !ok {
			return n, nil
		}
	}
}

// LocalAddr is the endpoint's address.
func (t RecvTransport) LocalAddr() netip.AddrPort { return t.Addr() }

// SetReadDeadline bounds the next ReadBatch.
func (t RecvTransport) SetReadDeadline(d time.Time) error { return t.Endpoint.SetReadDeadline(d) }

// SendTransport adapts an endpoint (and the group listener, when
// multicast) to send.Transport.
type SendTransport struct{ *Endpoint }

var _ send.Transport = SendTransport{}

// ReadFrom returns the next datagram.
func (t SendTransport) ReadFrom(b []byte) (int, netip.AddrPort, error) {
	d, err := t.Read()
	if err != nil {
		return 0, netip.AddrPort{}, err
	}
	return copy(b, d.Data), d.From, nil
}
