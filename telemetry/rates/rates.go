// Package rates derives what two samples of one node tell beyond either
// alone: each CPU's busy share and each network device's byte rates over
// the interval between them. It is a pure function of the two samples;
// recvstats computes it once per stored sample and the shared-memory
// table stores the result as given.
package rates

import (
	"time"

	"github.com/hoststat/hoststat/telemetry/sample"
)

// Net is one network device's byte rates.
type Net struct {
	RxBytesPerSec, TxBytesPerSec float64
}

// Rates are the figures derived from a sample and the one before it.
type Rates struct {
	// TotalPercent and CPUPercent are busy shares, 0 to 100, of the
	// aggregate and of each CPU (in the sample's CPU order).
	TotalPercent float32
	CPUPercent   []float32
	// Net holds each device's rates, in the sample's device order.
	Net []Net
	// RxBytesPerSec and TxBytesPerSec add up every device but "lo".
	RxBytesPerSec, TxBytesPerSec float64
	// Disk holds each disk's rates, in the sample's disk order;
	// ReadBytesPerSec and WriteBytesPerSec add them up.
	Disk                              []Disk
	ReadBytesPerSec, WriteBytesPerSec float64
}

// Disk is one disk's byte rates and busy share: the part of the interval,
// 0 to 100, during which it had I/O in flight.
type Disk struct {
	ReadBytesPerSec, WriteBytesPerSec float64
	BusyPercent                       float32
}

// Between sets r to the figures of cur since prev, reusing r's slices.
//
// prev is nil when there is no earlier sample of the same boot (a new
// node, or one that rebooted: the node table decides). Then, and for each
// counter that went backwards (reset or wrapped), CPU shares are the
// average since boot and byte rates are zero: nothing is ever derived
// across a reset. With no time or no ticks between the two samples,
// shares are the average since boot and rates zero. A device is matched
// by name (devices come and go); a new device has zero rates, and one
// that disappeared is simply absent.
func (r *Rates) Between(prev, cur *sample.Sample) {
	r.CPUPercent = resize(r.CPUPercent, len(cur.CPUs))
	for i := range cur.CPUs {
		var p *sample.Ticks
		if prev != nil && i < len(prev.CPUs) {
			p = &prev.CPUs[i].Ticks
		}
		r.CPUPercent[i] = Percent(p, &cur.CPUs[i].Ticks)
	}
	var pt *sample.Ticks
	if prev != nil {
		pt = &prev.Total
	}
	r.TotalPercent = Percent(pt, &cur.Total)

	r.Net = resize(r.Net, len(cur.Net))
	r.RxBytesPerSec, r.TxBytesPerSec = 0, 0
	var dt float64
	if prev != nil && !prev.Time.IsZero() && !cur.Time.IsZero() {
		dt = cur.Time.Sub(prev.Time).Seconds()
	}
	for i := range cur.Net {
		d := &cur.Net[i]
		r.Net[i] = Net{}
		if dt <= 0 {
			continue
		}
		j := find(prev.Net, i, d.Name, netName)
		if j < 0 {
			continue
		}
		p := &prev.Net[j]
		if d.RxBytes < p.RxBytes || d.TxBytes < p.TxBytes {
			continue // reset or wrapped: no rate spans it
		}
		r.Net[i] = Net{RxBytesPerSec: float64(d.RxBytes-p.RxBytes) / dt, TxBytesPerSec: float64(d.TxBytes-p.TxBytes) / dt}
		if d.Name != "lo" {
			r.RxBytesPerSec += r.Net[i].RxBytesPerSec
			r.TxBytesPerSec += r.Net[i].TxBytesPerSec
		}
	}
	r.disks(prev, cur, dt)
}

// DisksSince sets r's disk figures (Disk, ReadBytesPerSec,
// WriteBytesPerSec) to those of cur's disks since prev's, which were read
// at since rather than at prev.Time: a sender sends its disks with only
// every few samples, so the disks a master holds may be older than the
// sample before. prev nil or a zero since: no rates.
func (r *Rates) DisksSince(prev *sample.Sample, since time.Time, cur *sample.Sample) {
	var dt float64
	if prev != nil && !since.IsZero() && !cur.Time.IsZero() {
		dt = cur.Time.Sub(since).Seconds()
	}
	r.disks(prev, cur, dt)
}

// disks sets the disk rates by the same rules as the devices': matched by
// name, nothing across a counter that went back.
func (r *Rates) disks(prev, cur *sample.Sample, dt float64) {
	r.Disk = resize(r.Disk, len(cur.Disks))
	r.ReadBytesPerSec, r.WriteBytesPerSec = 0, 0
	for i := range cur.Disks {
		d := &cur.Disks[i]
		r.Disk[i] = Disk{}
		if dt <= 0 {
			continue
		}
		j := find(prev.Disks, i, d.Name, diskName)
		if j < 0 {
			continue
		}
		p := &prev.Disks[j]
		if d.ReadBytes < p.ReadBytes || d.WriteBytes < p.WriteBytes || d.IOMillis < p.IOMillis {
			continue
		}
		busy := float64(d.IOMillis-p.IOMillis) / 10 / dt // ms per s → percent
		r.Disk[i] = Disk{ReadBytesPerSec: float64(d.ReadBytes-p.ReadBytes) / dt,
			WriteBytesPerSec: float64(d.WriteBytes-p.WriteBytes) / dt, BusyPercent: float32(min(100, busy))}
		r.ReadBytesPerSec += r.Disk[i].ReadBytesPerSec
		r.WriteBytesPerSec += r.Disk[i].WriteBytesPerSec
	}
}

// Percent is the busy share, 0 to 100, of the ticks from prev to cur. With
// no usable prev (nil or zero, counters that went back, or no ticks in
// between) it is the average since boot.
func Percent(prev, cur *sample.Ticks) float32 {
	cb := cur.Busy()
	ca := cb + cur.Idle + cur.IOWait
	var pb, pa uint64
	if prev != nil && *prev != (sample.Ticks{}) {
		pb = prev.Busy()
		pa = pb + prev.Idle + prev.IOWait
	}
	if cb < pb || ca-cb < pa-pb || ca == pa { // busy or idle went back, or no time passed
		pa, pb = 0, 0 // since boot
	}
	if ca == pa {
		return 0
	}
	return float32(min(100, 100*float64(cb-pb)/float64(ca-pa)))
}

// find is the index of the entry named name in xs, trying position hint
// first since devices and disks rarely move; -1 when it is not there.
func find[T any](xs []T, hint int, name string, nameOf func(*T) string) int {
	if hint < len(xs) && nameOf(&xs[hint]) == name {
		return hint
	}
	for j := range xs {
		if nameOf(&xs[j]) == name {
			return j
		}
	}
	return -1
}

func netName(d *sample.NetDev) string { return d.Name }
func diskName(d *sample.Disk) string  { return d.Name }

// resize returns s with length n, reusing its array when large enough.
func resize[T any](s []T, n int) []T {
	if cap(s) < n {
		return make([]T, n)
	}
	return s[:n]
}
