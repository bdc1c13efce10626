package beostat

import (
	"encoding/hex"
	"time"

	"github.com/hoststat/hoststat/shm"
	"github.com/hoststat/hoststat/telemetry/sample"
)

// Status is one node at a glance, as beostat --json prints it. Byte
// counts are bytes; rates are bytes per second; percents are 0-100.
type Status struct {
	Node          int       `json:"node"`
	Addr          string    `json:"addr"`
	Up            bool      `json:"up"`
	LastSeen      time.Time `json:"last_seen"`
	AgeSeconds    float64   `json:"age_seconds"`
	SampleTime    time.Time `json:"sample_time"`
	BootTime      time.Time `json:"boot_time"`
	BootID        string    `json:"boot_id"`
	CPUs          int       `json:"cpus"`
	CPUPercent    float64   `json:"cpu_percent"`
	MemTotal      uint64    `json:"mem_total"`
	MemUsed       uint64    `json:"mem_used"`
	MemFree       uint64    `json:"mem_free"`
	MemAvailable  uint64    `json:"mem_available"`
	MemBuffers    uint64    `json:"mem_buffers"`
	MemCached     uint64    `json:"mem_cached"`
	MemShared     uint64    `json:"mem_shared"`
	SwapTotal     uint64    `json:"swap_total"`
	SwapFree      uint64    `json:"swap_free"`
	Load1         float64   `json:"load1"`
	Load5         float64   `json:"load5"`
	Load15        float64   `json:"load15"`
	Running       uint32    `json:"procs_running"`
	Procs         uint32    `json:"procs_total"`
	LastPID       uint32    `json:"last_pid"`
	NetDevs       int       `json:"net_devs"`
	RxBytesPerSec float64   `json:"rx_bytes_per_sec"` // every device but lo
	TxBytesPerSec float64   `json:"tx_bytes_per_sec"`
}

// Detail is one node in full, as beostat --node N --json prints it.
type Detail struct {
	Status
	PerCPU []CPUStatus `json:"per_cpu"`
	Net    []NetStatus `json:"net"`
}

// CPUStatus is one logical CPU.
type CPUStatus struct {
	CPU     int          `json:"cpu"`
	Percent float64      `json:"percent"`
	MHz     float64      `json:"mhz"`
	Model   string       `json:"model"`
	Ticks   sample.Ticks `json:"ticks"`
}

// NetStatus is one network device.
type NetStatus struct {
	Name          string  `json:"name"`
	RxBytes       uint64  `json:"rx_bytes"`
	RxPackets     uint64  `json:"rx_packets"`
	RxErrors      uint64  `json:"rx_errors"`
	RxDrops       uint64  `json:"rx_drops"`
	TxBytes       uint64  `json:"tx_bytes"`
	TxPackets     uint64  `json:"tx_packets"`
	TxErrors      uint64  `json:"tx_errors"`
	TxDrops       uint64  `json:"tx_drops"`
	RxBytesPerSec float64 `json:"rx_bytes_per_sec"`
	TxBytesPerSec float64 `json:"tx_bytes_per_sec"`
}

// MemUsed is memory in use: total less available when the kernel reports
// MemAvailable, else less free, buffers and cache.
func MemUsed(m sample.Memory) uint64 {
	free := m.Available
	if free == 0 {
		free = m.Free + m.Buffers + m.Cached
	}
	if free > m.Total {
		return 0
	}
	return m.Total - free
}

func statusOf(s *shm.Summary, info shm.Info, now time.Time) Status {
	st := Status{
		Node:          s.Node,
		Up:            info.Up(s.LastSeen, now),
		LastSeen:      s.LastSeen,
		SampleTime:    s.Time,
		BootTime:      s.BootTime,
		CPUs:          s.CPUs,
		CPUPercent:    float64(s.TotalPercent),
		MemTotal:      s.Memory.Total,
		MemUsed:       MemUsed(s.Memory),
		MemFree:       s.Memory.Free,
		MemAvailable:  s.Memory.Available,
		MemBuffers:    s.Memory.Buffers,
		MemCached:     s.Memory.Cached,
		MemShared:     s.Memory.Shared,
		SwapTotal:     s.Memory.SwapTotal,
		SwapFree:      s.Memory.SwapFree,
		Load1:         s.Load.One,
		Load5:         s.Load.Five,
		Load15:        s.Load.Fifteen,
		Running:       s.Load.Running,
		Procs:         s.Load.Total,
		LastPID:       s.Load.LastPID,
		NetDevs:       s.NetDevs,
		RxBytesPerSec: s.RxBytesPerSec,
		TxBytesPerSec: s.TxBytesPerSec,
	}
	if s.Addr.IsValid() {
		st.Addr = s.Addr.String()
	}
	if s.BootID != ([16]byte{}) {
		st.BootID = hex.EncodeToString(s.BootID[:])
	}
	if !s.LastSeen.IsZero() {
		st.AgeSeconds = now.Sub(s.LastSeen).Seconds()
	}
	return st
}

// Status lists every node the table has data for, ascending by node.
func (t *Table) Status() ([]Status, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	info, now := t.r.Info(), t.now()
	out := []Status{}
	for n := range info.NodeLimit {
		s, ok, err := t.r.Summary(n)
		if err != nil {
			return out, &NodeError{n, err}
		}
		if ok {
			out = append(out, statusOf(&s, info, now))
		}
	}
	return out, nil
}

// Detail reads everything about node.
func (t *Table) Detail(node int) (Detail, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := t.record(node); err != nil {
		return Detail{}, err
	}
	info := t.r.Info()
	rec := &t.rec
	s := shm.Summary{
		Node: node, Addr: rec.Addr, LastSeen: rec.LastSeen,
		Time: rec.Sample.Time, BootTime: rec.Sample.BootTime, BootID: rec.Sample.BootID,
		CPUs: len(rec.Sample.CPUs), NetDevs: len(rec.Sample.Net), Total: rec.Sample.Total,
		TotalPercent: rec.TotalPercent, Memory: rec.Sample.Memory, Load: rec.Sample.Load,
		RxBytesPerSec: rec.NetTotal.RxBytesPerSec, TxBytesPerSec: rec.NetTotal.TxBytesPerSec,
	}
	d := Detail{
		Status: statusOf(&s, info, t.now()),
		PerCPU: make([]CPUStatus, len(rec.Sample.CPUs)),
		Net:    make([]NetStatus, len(rec.Sample.Net)),
	}
	for i, c := range rec.Sample.CPUs {
		d.PerCPU[i] = CPUStatus{CPU: i, Percent: float64(rec.CPUPercent[i]), MHz: c.MHz, Model: c.Model, Ticks: c.Ticks}
	}
	for i, n := range rec.Sample.Net {
		d.Net[i] = NetStatus{
			Name: n.Name, RxBytes: n.RxBytes, RxPackets: n.RxPackets, RxErrors: n.RxErrors, RxDrops: n.RxDrops,
			TxBytes: n.TxBytes, TxPackets: n.TxPackets, TxErrors: n.TxErrors, TxDrops: n.TxDrops,
			RxBytesPerSec: rec.NetRates[i].RxBytesPerSec, TxBytesPerSec: rec.NetRates[i].TxBytesPerSec,
		}
	}
	return d, nil
}
