package wire

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"hash"

	"github.com/hoststat/hoststat/telemetry/sample"
)

// Encoder writes datagrams. It is not safe for concurrent use.
type Encoder struct {
	// Epoch goes into every header. NewEncoder sets it to the time since
	// boot, so the process's packets rank after those of any earlier
	// process on this boot.
	Epoch uint64

	mac  hash.Hash // nil without a key
	plan []ranges
}

// NewEncoder returns an Encoder that authenticates with key, or does not
// when key is empty.
func NewEncoder(key []byte) *Encoder {
	e := &Encoder{Epoch: processEpoch()}
	if len(key) > 0 {
		e.mac = hmac.New(sha256.New, key)
	}
	return e
}

// budget is the payload room of one datagram.
func (e *Encoder) budget() int {
	if e.mac != nil {
		return MaxDatagram - HeaderLen - MACLen
	}
	return MaxDatagram - HeaderLen
}

// AppendStatus encodes s as one or more datagrams, appended to dst. It
// reuses the buffers of dst beyond its length, so a sender that passes
// the previous result as dst[:0] allocates nothing. A node with up to 4
// CPUs and a dozen devices fits in one datagram.
func (e *Encoder) AppendStatus(dst [][]byte, node, seq uint32, s *sample.Sample) ([][]byte, error) {
	if len(s.CPUs) > MaxCPUs || len(s.Net) > MaxNetDevs {
		return dst, fmt.Errorf("%w: %d CPUs and %d devices exceed %d and %d", ErrOversize, len(s.CPUs), len(s.Net), MaxCPUs, MaxNetDevs)
	}
	if err := e.planStatus(s); err != nil {
		return dst, err
	}
	h := Header{Kind: KindStatus, Node: node, BootID: s.BootID, Epoch: e.Epoch, Seq: seq,
		Parts: uint16(len(e.plan)), Time: s.Time, BootTime: s.BootTime}
	for i := range e.plan {
		var b []byte
		if n := len(dst); n < cap(dst) {
			b = dst[:n+1][n][:0]
		}
		if cap(b) < MaxDatagram {
			b = make([]byte, 0, MaxDatagram)
		}
		h.Part = uint16(i)
		b = e.appendPart(b, &h, &e.plan[i], s)
		if len(b) > MaxDatagram {
			return dst, fmt.Errorf("wire: part %d is %d bytes (encoder bug)", i, len(b))
		}
		dst = append(dst, b)
	}
	return dst, nil
}

// planStatus splits s into parts: part 0 holds the whole-node fields,
// then CPUs in order, then devices, each part filled as far as it goes.
func (e *Encoder) planStatus(s *sample.Sample) error {
	e.plan = e.plan[:0]
	budget := e.budget()
	cpus, nets := len(s.CPUs), len(s.Net)
	ci, ni := 0, 0
	for part := 0; ; part++ {
		g := ranges{cpuCount: cpus, cpuFirst: ci, netCount: nets, netFirst: ni}
		// The counts of this part are not known yet: reserve the most
		// they can take.
		size := 2*uvarintLen(uint64(cpus)) + uvarintLen(uint64(ci)) + 2*uvarintLen(uint64(nets)) + uvarintLen(uint64(ni))
		if part == 0 {
			size += wholeNodeLen(s)
		}
		var models [maxModelsPerPart]string
		nModels := 0
		for ; ci < cpus; ci++ {
			c := &s.CPUs[ci]
			add := cpuLen(c)
			m := clip(c.Model)
			known := false
			for _, have := range models[:nModels] {
				if have == m {
					known = true
					break
				}
			}
			if !known {
				if nModels == maxModelsPerPart {
					break
				}
				add += 1 + len(m)
				if nModels == 0 {
					add++ // the model count
				}
			}
			if size+add > budget {
				break
			}
			if !known {
				models[nModels] = m
				nModels++
			}
			size += add
			g.cpuN++
		}
		if ci == cpus {
			for ; ni < nets; ni++ {
				add := netLen(&s.Net[ni])
				if size+add > budget {
					break
				}
				size += add
				g.netN++
			}
		}
		if part > 0 && g.cpuN == 0 && g.netN == 0 {
			return fmt.Errorf("wire: a sample entry does not fit in a datagram (encoder bug)")
		}
		e.plan = append(e.plan, g)
		if ci == cpus && ni == nets {
			break
		}
		if len(e.plan) == MaxParts {
			return fmt.Errorf("%w: sample needs more than %d datagrams", ErrOversize, MaxParts)
		}
	}
	return nil
}

func (e *Encoder) appendPart(b []byte, h *Header, g *ranges, s *sample.Sample) []byte {
	start := len(b)
	b = e.startDatagram(b, h)
	for _, v := range [...]int{g.cpuCount, g.cpuFirst, g.cpuN, g.netCount, g.netFirst, g.netN} {
		b = binary.AppendUvarint(b, uint64(v))
	}
	if h.Part == 0 {
		b = appendWholeNode(b, s)
	}
	if g.cpuN > 0 {
		cpus := s.CPUs[g.cpuFirst : g.cpuFirst+g.cpuN]
		var models [maxModelsPerPart]string
		n := 0
		at := len(b)
		b = append(b, 0)
		index := func(m string) int {
			for i, have := range models[:n] {
				if have == m {
					return i
				}
			}
			return -1
		}
		for i := range cpus {
			if m := clip(cpus[i].Model); index(m) < 0 {
				models[n] = m
				n++
				b = append(b, byte(len(m)))
				b = append(b, m...)
			}
		}
		b[at] = byte(n)
		for i := range cpus {
			c := &cpus[i]
			b = append(b, byte(index(clip(c.Model))))
			b = binary.AppendUvarint(b, scale(c.MHz, mhzScale))
			b = appendTicks(b, &c.Ticks)
		}
	}
	for i := g.netFirst; i < g.netFirst+g.netN; i++ {
		b = appendNet(b, &s.Net[i])
	}
	return e.seal(b, start)
}

// AppendUpdateRequest appends an update request to dst. The caller sets
// Node (NoNode for every node), BootID and BootTime of the master, Seq
// (one more than the last request) and Time; Epoch defaults to the
// encoder's.
func (e *Encoder) AppendUpdateRequest(dst []byte, h Header) []byte {
	h.Kind, h.Part, h.Parts = KindUpdateRequest, 0, 1
	if h.Epoch == 0 {
		h.Epoch = e.Epoch
	}
	return e.seal(e.startDatagram(dst, &h), len(dst))
}

// startDatagram appends the header; a datagram is sealed by seal, which
// adds the MAC over everything from the header on.
func (e *Encoder) startDatagram(b []byte, h *Header) []byte {
	h.Flags = 0
	if e.mac != nil {
		h.Flags = FlagAuthenticated
	}
	n := len(b)
	b = append(b, zeroHeader[:]...)
	putHeader(b[n:], h)
	return b
}

var zeroHeader [HeaderLen]byte

func (e *Encoder) seal(b []byte, start int) []byte {
	if e.mac == nil {
		return b
	}
	e.mac.Reset()
	e.mac.Write(b[start:])
	return e.mac.Sum(b)
}
