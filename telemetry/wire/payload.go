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

// ranges are what a status part says about itself.
type ranges struct {
	cpuCount, cpuFirst, cpuN int
	netCount, netFirst, netN int
}

// reader walks a payload. Errors stick: after the first, reads return 0.
type reader struct {
	b   []byte
	off int
	err error
}

func (r *reader) fail(base error, what string) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: %s at payload byte %d", base, what, r.off)
	}
}

func (r *reader) uvarint(what string) uint64 {
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
	if r.err != nil {
		return 0
	}
	if r.off >= len(r.b) {
		r.fail(ErrTruncated, what)
		return 0
	}
	c := r.b[r.off]
	r.off++
	return c
}

// bytes reads a string with a one-byte length.
func (r *reader) bytes(what string) []byte {
	if r.err != nil {
		return nil
	}
	if r.off >= len(r.b) || len(r.b)-r.off-1 < int(r.b[r.off]) {
		r.fail(ErrTruncated, what)
		return nil
	}
	n := int(r.b[r.off])
	s := r.b[r.off+1 : r.off+1+n]
	r.off += 1 + n
	return s
}

func (r *reader) ticks(t *sample.Ticks) {
	t.User = r.uvarint("ticks")
	t.Nice = r.uvarint("ticks")
	t.System = r.uvarint("ticks")
	t.Idle = r.uvarint("ticks")
	t.IOWait = r.uvarint("ticks")
	t.IRQ = r.uvarint("ticks")
	t.SoftIRQ = r.uvarint("ticks")
	t.Steal = r.uvarint("ticks")
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
		var total sample.Ticks
		var m sample.Memory
		var l sample.Load
		r.ticks(&total)
		for _, p := range [...]*uint64{&m.Total, &m.Free, &m.Available, &m.Buffers, &m.Cached, &m.Shared, &m.SwapTotal, &m.SwapFree} {
			*p = r.uvarint("memory")
		}
		l.One = float64(r.bounded("load", maxScaled)) / loadScale
		l.Five = float64(r.bounded("load", maxScaled)) / loadScale
		l.Fifteen = float64(r.bounded("load", maxScaled)) / loadScale
		l.Running = uint32(r.bounded("running", math.MaxUint32))
		l.Total = uint32(r.bounded("processes", math.MaxUint32))
		l.LastPID = uint32(r.bounded("last pid", math.MaxUint32))
		if s != nil && r.err == nil {
			s.Total, s.Memory, s.Load = total, m, l
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
			mhz := float64(r.bounded("MHz", maxScaled)) / mhzScale
			var t sample.Ticks
			r.ticks(&t)
			if s == nil || r.err != nil {
				continue
			}
			k := g.cpuFirst + i
			c := &s.CPUs[k]
			c.Ticks, c.MHz = t, mhz
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
		for j := range v {
			v[j] = r.uvarint("device counter")
		}
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
