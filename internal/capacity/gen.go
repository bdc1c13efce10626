package capacity

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"golang.org/x/net/ipv4"

	"github.com/hoststat/hoststat/telemetry/wire"
)

// GenConfig says what a Generator plays.
type GenConfig struct {
	Target netip.AddrPort // where recvstats (or the bare receiver) listens
	Nodes  int            // node numbers FirstNode .. FirstNode+Nodes-1
	// FirstNode is the lowest node number played.
	FirstNode int
	Rate      float64 // samples a node sends a second
	Key       []byte  // shared key; packets are signed when it is set
	// Tick is how often the generator wakes to send what is due; default
	// 1 ms, so a burst is a millisecond of traffic.
	Tick time.Duration
	// Batch is the most datagrams one sendmmsg(2) sends; default 64.
	Batch int
	// Duration stops the generator after this long; 0 runs until the
	// context is done.
	Duration time.Duration
}

// Sent is what a generator sent, printed as JSON by loadgen.
type Sent struct {
	Nodes     int     `json:"nodes"`
	Rate      float64 `json:"rate"`
	Samples   uint64  `json:"samples"`   // samples handed to the kernel
	Datagrams uint64  `json:"datagrams"` // one a sample: the fleet's samples fit in one
	Bytes     uint64  `json:"bytes"`
	// Unsent counts datagrams the kernel refused (with the first error
	// in SendError), such as ECONNREFUSED before the receiver listened.
	Unsent    uint64  `json:"unsent"`
	SendError string  `json:"send_error,omitempty"`
	Seconds   float64 `json:"seconds"`
	// MaxLagMillis is the longest a due sample waited at a wake-up: far
	// above Tick means the generator could not keep the pace.
	MaxLagMillis float64 `json:"max_lag_ms"`
	Signed       bool    `json:"signed"`
}

// Generate plays cfg's nodes until ctx is done or cfg.Duration passed.
// Samples are due at even intervals: sample k (node k mod N, round
// k div N) at k/(N·Rate) seconds after the start. Each wake-up encodes
// what is due, into buffers that are reused, and sends it in batches.
func Generate(ctx context.Context, cfg GenConfig) (Sent, error) {
	if cfg.Nodes < 1 || cfg.Rate <= 0 {
		return Sent{}, fmt.Errorf("capacity: %d nodes at %v Hz: need at least one node and a positive rate", cfg.Nodes, cfg.Rate)
	}
	if cfg.FirstNode < 0 || uint64(cfg.FirstNode)+uint64(cfg.Nodes) > uint64(wire.NoNode) {
		return Sent{}, fmt.Errorf("capacity: node numbers %d..%d out of range", cfg.FirstNode, cfg.FirstNode+cfg.Nodes-1)
	}
	if cfg.Tick <= 0 {
		cfg.Tick = time.Millisecond
	}
	if cfg.Batch <= 0 {
		cfg.Batch = 64
	}
	conn, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(cfg.Target))
	if err != nil {
		return Sent{}, fmt.Errorf("capacity: %w", err)
	}
	defer conn.Close()
	g := &generator{
		pc:    ipv4.NewPacketConn(conn),
		enc:   wire.NewEncoder(cfg.Key),
		msgs:  make([]ipv4.Message, cfg.Batch),
		sent:  Sent{Nodes: cfg.Nodes, Rate: cfg.Rate, Signed: len(cfg.Key) > 0},
		batch: cfg.Batch,
	}
	for i := range g.msgs {
		g.msgs[i].Buffers = make([][]byte, 1)
	}
	start := time.Now()
	g.fleet = Fleet{Rate: cfg.Rate, Start: start}
	perSecond := float64(cfg.Nodes) * cfg.Rate
	limit := ^uint64(0)
	if cfg.Duration > 0 {
		limit = uint64(cfg.Duration.Seconds() * perSecond)
	}
	ticker := time.NewTicker(cfg.Tick)
	defer ticker.Stop()
	var k uint64 // the next sample to send
	for {
		now := time.Now()
		due := min(uint64(now.Sub(start).Seconds()*perSecond)+1, limit)
		if k < due {
			dueAt := start.Add(time.Duration(float64(k) / perSecond * float64(time.Second)))
			g.sent.MaxLagMillis = max(g.sent.MaxLagMillis, float64(now.Sub(dueAt))/float64(time.Millisecond))
		}
		for ; k < due; k++ {
			node, round := k%uint64(cfg.Nodes), k/uint64(cfg.Nodes)
			s := g.fleet.Sample(cfg.FirstNode+int(node), round, now)
			n := len(g.out)
			if g.out, err = g.enc.AppendStatus(g.out, uint32(cfg.FirstNode)+uint32(node), uint32(round+1), s); err != nil {
				return g.sent, fmt.Errorf("capacity: encode node %d: %w", cfg.FirstNode+int(node), err)
			}
			if len(g.out)-n != 1 {
				return g.sent, fmt.Errorf("capacity: node %d's sample took %d datagrams, the fleet's must take one", cfg.FirstNode+int(node), len(g.out)-n)
			}
			if len(g.out) >= g.batch {
				g.flush()
				// A generator behind its pace catches up in one long
				// loop, longer each round when the machine cannot keep
				// up: it still stops when told.
				if ctx.Err() != nil {
					g.sent.Seconds = time.Since(start).Seconds()
					return g.sent, nil
				}
			}
		}
		g.flush()
		if k >= limit {
			break
		}
		select {
		case <-ctx.Done():
			g.sent.Seconds = time.Since(start).Seconds()
			return g.sent, nil
		case <-ticker.C:
		}
	}
	g.sent.Seconds = time.Since(start).Seconds()
	return g.sent, nil
}

type generator struct {
	pc    *ipv4.PacketConn
	enc   *wire.Encoder
	fleet Fleet
	msgs  []ipv4.Message
	batch int
	out   [][]byte // encoded datagrams waiting, one a sample; their buffers are reused
	sent  Sent
}

// flush sends the datagrams in out, batch by batch.
func (g *generator) flush() {
	for done := 0; done < len(g.out); {
		n := min(len(g.out)-done, len(g.msgs))
		for i := 0; i < n; i++ {
			g.msgs[i].Buffers[0] = g.out[done+i]
		}
		w, err := g.pc.WriteBatch(g.msgs[:n], 0)
		for i := 0; i < max(w, 0); i++ {
			g.sent.Bytes += uint64(len(g.out[done+i]))
		}
		g.sent.Datagrams += uint64(max(w, 0))
		if err != nil || w <= 0 {
			// Skip the datagram the kernel refused and go on: a receiver
			// that is not listening yet must not stop the generator.
			if g.sent.SendError == "" {
				if err == nil {
					err = errors.New("sendmmsg sent nothing")
				}
				g.sent.SendError = err.Error()
			}
			g.sent.Unsent++
			w = max(w, 0) + 1
		}
		done += w
	}
	g.sent.Samples = g.sent.Datagrams // one datagram a sample
	g.out = g.out[:0]
}
