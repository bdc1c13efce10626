package capacity

import (
	"encoding/binary"
	"time"

	"github.com/hoststat/hoststat/telemetry/sample"
)

// Fleet makes the samples of simulated nodes. Node n's sample in round r
// is a pure function of (n, r): the figures differ from node to node
// (CPU count, load, memory size, traffic), the gauges move every round and
// the cumulative counters only grow, so a generator keeps no state per node
// however many it plays. Every sample fits in one datagram.
type Fleet struct {
	// Rate is how many samples a node sends a second; it sets how many
	// CPU ticks (USER_HZ, 100 a second) pass between two rounds.
	Rate float64
	// Start is when the fleet started; nodes booted up to 30 days before.
	Start time.Time

	s    sample.Sample
	cpus [maxFleetCPUs]sample.CPU
	nets [len(fleetDevices)]sample.NetDev
}

const maxFleetCPUs = 8

// The CPU counts nodes have, picked by hash; most have 4.
var fleetCPUCounts = [...]int{2, 4, 4, 4, 8}

var fleetDevices = [...]string{"lo", "eth0", "ib0"}

var fleetModels = [...]string{
	"Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz",
	"AMD EPYC 7763 64-Core Processor",
}

// mix is SplitMix64's finaliser: a cheap hash good enough to spread figures.
func mix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// Sample returns node's sample of round r, taken at now. The result is
// overwritten by the next call.
func (f *Fleet) Sample(node int, r uint64, now time.Time) *sample.Sample {
	h := mix(uint64(node))
	s := &f.s
	s.Time = now
	s.BootTime = f.Start.Add(-time.Duration(1+h%(30*24*3600)) * time.Second).Truncate(time.Second)
	binary.LittleEndian.PutUint64(s.BootID[:8], h)
	binary.LittleEndian.PutUint64(s.BootID[8:], mix(h))

	ncpu := fleetCPUCounts[h%uint64(len(fleetCPUCounts))]
	perRound := 100 / f.Rate // USER_HZ ticks of one CPU between rounds
	rf := float64(r)
	model := fleetModels[(h>>8)%uint64(len(fleetModels))]
	s.Total = sample.Ticks{}
	var busy float64
	for i := 0; i < ncpu; i++ {
		hc := mix(h + uint64(i))
		// Shares of each round: user 5–85 %, system 1–9 %, a little
		// iowait and softirq, the rest idle.
		user := float64(5+hc%81) / 100
		sys := float64(1+(hc>>8)%9) / 100
		iow := float64((hc>>16)%3) / 100
		sirq := float64((hc>>24)%2) / 100
		idle := 1 - user - sys - iow - sirq
		busy += user + sys + sirq
		base := (h >> 20) % 1_000_000
		c := &f.cpus[i]
		c.Model = model
		c.MHz = float64(2000 + (hc>>32)%1200)
		c.Ticks = sample.Ticks{
			User:    base + uint64(rf*perRound*user),
			System:  base/8 + uint64(rf*perRound*sys),
			Idle:    base*2 + uint64(rf*perRound*idle),
			IOWait:  base/64 + uint64(rf*perRound*iow),
			SoftIRQ: base/128 + uint64(rf*perRound*sirq),
		}
		t := &c.Ticks
		s.Total.User += t.User
		s.Total.System += t.System
		s.Total.Idle += t.Idle
		s.Total.IOWait += t.IOWait
		s.Total.SoftIRQ += t.SoftIRQ
	}
	s.CPUs = f.cpus[:ncpu]

	hr := mix(h ^ r) // what moves from round to round
	total := uint64(4+h%253) << 30
	free := total / 100 * (10 + hr%50)
	s.Memory = sample.Memory{
		Total: total, Free: free, Available: free + total/10, Buffers: total / 64,
		Cached: total / 5, Shared: total / 200, SwapTotal: 8 << 30, SwapFree: 8<<30 - (h%64)<<20,
	}
	s.Load = sample.Load{
		One:     busy + float64(hr%50)/100,
		Five:    busy + float64((hr>>8)%20)/100,
		Fifteen: busy,
		Running: uint32(1 + hr%uint64(ncpu+1)),
		Total:   uint32(200 + h%400),
		LastPID: uint32(1000 + (h+r*7)%4_000_000),
	}
	for i, name := range fleetDevices {
		hd := mix(h + 100 + uint64(i))
		rate := uint64(float64(hd%10_000_000) / f.Rate) // bytes a round
		d := &f.nets[i]
		*d = sample.NetDev{
			Name:    name,
			RxBytes: hd%1_000_000_000 + r*rate, RxPackets: hd%1_000_000 + r*rate/900,
			TxBytes: hd%700_000_000 + r*rate/2, TxPackets: hd%800_000 + r*rate/1800,
			RxDrops: hd % 7,
		}
	}
	s.Net = f.nets[:]
	return s
}
