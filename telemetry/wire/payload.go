package wire

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/bits"

	"github.com/hoststat/hoststat/telemetry/sample"
)

// A status payload, after the header (see docs/protocol.md):
//
//	uvarint cpuCount, cpuFirst, cpuN, netCount, netFirst, netN
//	part 0 only: 8 uvarint total ticks, 8 uvarint memory bytes,
//	             3 uvarint load×100, uvarint running, total, last pid
//	if cpuN > 0: byte models, models × (byte len, bytes),
//	             cpuN × (byte model, uvarint MHz×1000, 8 uvarint ticks)
//	netN × (byte len, name, 8 uvarint counters)

// Scales turn the fractional fields into integers that /proc's own
// decimals survive exactly: loadavg has 2 decimals, cpuinfo MHz 3.
const (
	loadScale = 100
	mhzScale  = 1000
	// maxScaled keeps a scaled value exact in a float64.
	maxScaled = 1 << 53
)

func scale(v, by float64) uint64 {
	v = math.Round(v * by)
	if !(v > 0) { // negative, zero or NaN
		return 0
	}
	if v >= maxScaled {
		return maxScaled
	}
	return uint64(v)
}

func uvarintLen(v uint64) int { return (bits.Len64(v|1) + 6) / 7 }

func ticksLen(t *sample.Ticks) int {
	return uvarintLen(t.User) + uvarintLen(t.Nice) + uvarintLen(t.System) + uvarintLen(t.Idle) +
		uvarintLen(t.IOWait) + uvarintLen(t.IRQ) + uvarintLen(t.SoftIRQ) + uvarintLen(t.Steal)
}

func appendTicks(b []byte, t *sample.Ticks) []byte {
	for _, v := range [...]uint64{t.User, t.Nice, t.System, t.Idle, t.IOWait, t.IRQ, t.SoftIRQ, t.Steal} {
		b = binary.AppendUvarint(b, v)
	}
	return b
}

// wholeNodeLen is the size of the part-0 block.
func wholeNodeLen(s *sample.Sample) int {
	m, l := &s.Memory, &s.Load
	n := ticksLen(&s.Total)
	for _, v := range [...]uint64{m.Total, m.Free, m.Available, m.Buffers, m.Cached, m.Shared, m.SwapTotal, m.SwapFree,
		scale(l.One, loadScale), scale(l.Five, loadScale), scale(l.Fifteen, loadScale),
		uint64(l.Running), uint64(l.Total), uint64(l.LastPID)} {
		n += uvarintLen(v)
	}
	return n
}

func appendWholeNode(b []byte, s *sample.Sample) []byte {
	m, l := &s.Memory, &s.Load
	b = appendTicks(b, &s.Total)
	for _, v := range [...]uint64{m.Total, m.Free, m.Available, m.Buffers, m.Cached, m.Shared, m.SwapTotal, m.SwapFree,
		scale(l.One, loadScale), scale(l.Five, loadScale), scale(l.Fifteen, loadScale),
		uint64(l.Running), uint64(l.Total), uint64(l.LastPID)} {
		b = binary.AppendUvarint(b, v)
	}
	return b
}

// cpuLen is the size of one CPU entry, without its model's table entry.
func cpuLen(c *sample.CPU) int { return 1 + uvarintLen(scale(c.MHz, mhzScale)) + ticksLen(&c.Ticks) }

func netLen(d *sample.NetDev) int {
	return 1 + len(clip(d.Name)) + uvarintLen(d.RxBytes) + uvarintLen(d.RxPackets) + uvarintLen(d.RxErrors) +
		uvarintLen(d.RxDrops) + uvarintLen(d.TxBytes) + uvarintLen(d.TxPackets) + uvarintLen(d.TxErrors) + uvarintLen(d.TxDrops)
}

func appendNet(b []byte, d *sample.NetDev) []byte {
	name := clip(d.Name)
	b = append(b, byte(len(name)))
	b = append(b, name...)
	for _, v := range [...]uint64{d.RxBytes, d.RxPackets, d.RxErrors, d.RxDrops, d.TxBytes, d.TxPackets, d.TxErrors, d.TxDrops} {
		b = binary.AppendUvarint(b, v)
	}
	return b
}

// clip cuts a string to what its one-byte length can tell.
func clip(s string) string {
	if len(s) > MaxStringLen {
		return s[:MaxStringLen]
	}
	return s
}

// ranges are what a status part says about itself, and where its body
// starts after them.
type ranges struct {
	cpuCount, cpuFirst, cpuN int
	netCount, netFirst, netN int
	body                     int
}

// fits tells whether a payload of n bytes can hold the CPUs and devices g
// claims, at their smallest (a CPU: model index, MHz and 8 ticks of one
// byte each; a device: an empty name and 8 counters): a check before
// anything is sized by those counts.
func (g *ranges) fits(n int) bool {
	return n-g.body >= 10*g.cpuN+9*g.netN
}

// reader walks a payload. Errors stick: the first empties b, so every
// later read returns 0 through the slow path.
type reader struct {
	b   []byte
	off int
	err error
}

func (r *reader) fail(base error, what string) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: %s at payload byte %d", base, what, r.off)
	}
	r.b, r.off = nil, 0
}

// uvarint reads one uvarint.
func (r *reader) uvarint(what string) uint64 {
	var v [1]uint64
	r.uvarints(v[:], what)
	return v[0]
}

// uvarints reads len(dst) uvarints, the hot loop of a decoder: one-byte
// values (most of a payload) and values that end within the next eight
// bytes (nearly all others) are read without a call.
func (r *reader) uvarints(dst []uint64, what string) {
	b, off := r.b, r.off
	for i := range dst {
		if off < len(b) && b[off] < 0x80 {
			dst[i] = uint64(b[off])
			off++
			continue
		}
		if off >= 0 && len(b)-off >= 8 {
			// A value below 2^56 ends within these eight bytes; its
			// 7-bit groups are put together without a loop.
			x := binary.LittleEndian.Uint64(b[off:])
			if ends := ^x & 0x8080808080808080; ends != 0 {
				n := bits.TrailingZeros64(ends)/8 + 1
				x &= ^uint64(0) >> (64 - 8*n)
				off += n
				dst[i] = x&0x7f | x>>1&0x3f80 | x>>2&0x1fc000 | x>>3&0xfe00000 |
					x>>4&0x7f0000000 | x>>5&0x3f800000000 | x>>6&0x1fc0000000000 | x>>7&0xfe000000000000
				continue
			}
		}
		r.off = off
		dst[i] = r.uvarintSlow(what)
		b, off = r.b, r.off
	}
	r.off = off
}

func (r *reader) uvarintSlow(what string) uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b[r.off:])
	if n == 0 {
		r.fail(ErrTruncated, what)
		return 0
	}
	if n < 0 {
		r.fail(ErrMalformed, what+" overflows 64 bits")
		return 0
	}
	r.off += n
	return v
}

// bounded reads a uvarint that must not exceed max.
func (r *reader) bounded(what string, max uint64) uint64 {
	v := r.uvarint(what)
	if v > max {
		r.fail(ErrMalformed, fmt.Sprintf("%s %d exceeds %d", what, v, max))
		return 0
	}
	return v
}

func (r *reader) byte(what string) byte {
	if uint(r.off) < uint(len(r.b)) {
		c := r.b[r.off]
		r.off++
		return c
	}
	r.fail(ErrTruncated, what)
	return 0
}

// bytes reads a string with a one-byte length.
func (r *reader) bytes(what string) []byte {
	if uint(r.off) >= uint(len(r.b)) || len(r.b)-r.off-1 < int(r.b[r.off]) {
		r.fail(ErrTruncated, what)
		return nil
	}
	n := int(r.b[r.off])
	s := r.b[r.off+1 : r.off+1+n]
	r.off += 1 + n
	return s
}

func setTicks(t *sample.Ticks, v *[8]uint64) {
	*t = sample.Ticks{User: v[0], Nice: v[1], System: v[2], Idle: v[3], IOWait: v[4], IRQ: v[5], SoftIRQ: v[6], Steal: v[7]}
}

// readRanges reads the ranges that open a status payload and checks them
// against the header.
func readRanges(r *reader, h *Header) ranges {
	var g ranges
	g.cpuCount = int(r.bounded("cpu count", MaxCPUs))
	g.cpuFirst = int(r.bounded("first cpu", MaxCPUs))
	g.cpuN = int(r.bounded("cpus", MaxCPUs))
	g.netCount = int(r.bounded("device count", MaxNetDevs))
	g.netFirst = int(r.bounded("first device", MaxNetDevs))
	g.netN = int(r.bounded("devices", MaxNetDevs))
	g.body = r.off
	if r.err != nil {
		return g
	}
	switch {
	case g.cpuFirst+g.cpuN > g.cpuCount:
		r.fail(ErrMalformed, "cpu range beyond cpu count")
	case g.netFirst+g.netN > g.netCount:
		r.fail(ErrMalformed, "device range beyond device count")
	case h.Parts == 1 && (g.cpuN != g.cpuCount || g.netN != g.netCount):
		r.fail(ErrMalformed, "single part does not hold every cpu and device")
	}
	return g
}

// walkStatus reads the body of a status part after its ranges. With s
// nil it only checks; otherwise it stores into s, whose CPUs and Net the
// caller has sized to the counts. It reuses the strings s already holds
// when they are equal, so a steady sender costs no allocation.
func walkStatus(r *reader, h *Header, g *ranges, s *sample.Sample) {
	if h.Part == 0 {
		// 8 total ticks, 8 memory counters, 3 loads, running, processes,
		// last pid.
		var v [22]uint64
		r.uvarints(v[:], "whole-node field")
		for i, what := range [...]string{"load", "load", "load", "running", "processes", "last pid"} {
			limit := uint64(math.MaxUint32)
			if i < 3 {
				limit = maxScaled
			}
			if v[16+i] > limit {
				r.fail(ErrMalformed, fmt.Sprintf("%s %d exceeds %d", what, v[16+i], limit))
			}
		}
		if s != nil && r.err == nil {
			setTicks(&s.Total, (*[8]uint64)(v[0:8]))
			s.Memory = sample.Memory{Total: v[8], Free: v[9], Available: v[10], Buffers: v[11],
				Cached: v[12], Shared: v[13], SwapTotal: v[14], SwapFree: v[15]}
			s.Load = sample.Load{One: float64(v[16]) / loadScale, Five: float64(v[17]) / loadScale, Fifteen: float64(v[18]) / loadScale,
				Running: uint32(v[19]), Total: uint32(v[20]), LastPID: uint32(v[21])}
		}
	}
	if g.cpuN > 0 {
		var models [maxModelsPerPart][]byte
		n := int(r.byte("model count"))
		if r.err == nil && (n == 0 || n > maxModelsPerPart) {
			r.fail(ErrMalformed, fmt.Sprintf("%d models", n))
		}
		for i := 0; i < n && r.err == nil; i++ {
			models[i] = r.bytes("model")
		}
		for i := 0; i < g.cpuN && r.err == nil; i++ {
			m := int(r.byte("model index"))
			if m >= n {
				r.fail(ErrMalformed, fmt.Sprintf("model index %d of %d", m, n))
			}
			var v [9]uint64 // MHz, ticks
			r.uvarints(v[:], "cpu field")
			if v[0] > maxScaled {
				r.fail(ErrMalformed, fmt.Sprintf("MHz %d exceeds %d", v[0], uint64(maxScaled)))
			}
			if s == nil || r.err != nil {
				continue
			}
			k := g.cpuFirst + i
			c := &s.CPUs[k]
			setTicks(&c.Ticks, (*[8]uint64)(v[1:9]))
			c.MHz = float64(v[0]) / mhzScale
			if c.Model != string(models[m]) {
				if k > 0 && s.CPUs[k-1].Model == string(models[m]) {
					c.Model = s.CPUs[k-1].Model
				} else {
					c.Model = string(models[m])
				}
			}
		}
	}
	for i := 0; i < g.netN && r.err == nil; i++ {
		name := r.bytes("device name")
		var v [8]uint64
		r.uvarints(v[:], "device counter")
		if s == nil || r.err != nil {
			continue
		}
		d := &s.Net[g.netFirst+i]
		if d.Name != string(name) {
			d.Name = string(name)
		}
		d.RxBytes, d.RxPackets, d.RxErrors, d.RxDrops = v[0], v[1], v[2], v[3]
		d.TxBytes, d.TxPackets, d.TxErrors, d.TxDrops = v[4], v[5], v[6], v[7]
	}
	if r.err == nil && r.off != len(r.b) {
		r.fail(ErrMalformed, fmt.Sprintf("%d bytes after the last field", len(r.b)-r.off))
	}
}

// resize sets s's CPUs and Net to the given lengths, keeping what they
// held so equal strings are not allocated again.
func resize(s *sample.Sample, cpus, nets int) {
	if cap(s.CPUs) < cpus {
		s.CPUs = append(s.CPUs[:cap(s.CPUs)], make([]sample.CPU, cpus-cap(s.CPUs))...)
	}
	s.CPUs = s.CPUs[:cpus]
	if cap(s.Net) < nets {
		s.Net = append(s.Net[:cap(s.Net)], make([]sample.NetDev, nets-cap(s.Net))...)
	}
	s.Net = s.Net[:nets]
}
