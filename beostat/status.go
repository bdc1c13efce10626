package beostat

import (
	"encoding/hex"
	"errors"
	"math"
	"time"
	"unsafe"

	"github.com/hoststat/hoststat/shm"
	"github.com/hoststat/hoststat/telemetry/sample"
)

// Node states.
const (
	StateUp      = "up"
	StateDown    = "down"
	StateUnknown = "unknown" // the record cannot be read; see Status.Error
)

// Status is one node at a glance, as beostat --json prints it. Byte
// counts are bytes; rates are bytes per second; percents are 0-100.
// Fractions are rounded to what they mean (0.01 %, 0.01 B/s, 1 ms), so
// the JSON has no float noise. Its JSON (MarshalJSON, AppendJSON) holds
// only the fields the node has (see Has); the tags name them, so it
// decodes back into a Status with the absent fields zero.
type Status struct {
	Node  int    `json:"node"`
	State string `json:"state"` // StateUp, StateDown or StateUnknown
	// Error says why a node is StateUnknown: typically its record was
	// left half-written by a recvstats that died (until the next one
	// starts). Its figures are all zero.
	Error string `json:"error,omitempty"`
	// Stale means the figures are the last ones of a node that is down,
	// not current.
	Stale         bool      `json:"stale"`
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
	// Hostname is the node's (cut to 32 bytes), empty when its sendstats
	// sends none; it comes from the node: escape it before showing it.
	Hostname string `json:"hostname"`
	// UptimeSeconds is how long the node had been up at its last sample.
	UptimeSeconds float64 `json:"uptime_seconds"`
}

// Detail is one node in full, as beostat --node N --json prints it.
type Detail struct {
	Status
	PerCPU      []CPUStatus        `json:"per_cpu"`
	Net         []NetStatus        `json:"net"`
	Disks       []DiskStatus       `json:"disks"`
	Filesystems []FilesystemStatus `json:"filesystems"`
}

// DiskStatus is one whole disk of a node with its current rates.
type DiskStatus struct {
	Name             string  `json:"name"`
	Reads            uint64  `json:"reads"`
	Writes           uint64  `json:"writes"`
	ReadBytes        uint64  `json:"read_bytes"`
	WriteBytes       uint64  `json:"write_bytes"`
	ReadBytesPerSec  float64 `json:"read_bytes_per_sec"`
	WriteBytesPerSec float64 `json:"write_bytes_per_sec"`
	BusyPercent      float64 `json:"busy_percent"`
}

// FilesystemStatus is one mounted filesystem of a node and its use.
// NotAnswering is a mount whose statfs hung on the node (a dead NFS
// server): its figures are zero.
type FilesystemStatus struct {
	Mount        string `json:"mount"`
	Type         string `json:"type"`
	NotAnswering bool   `json:"not_answering"`
	Total        uint64 `json:"total"`
	Used         uint64 `json:"used"`
	Avail        uint64 `json:"avail"`
	Files        uint64 `json:"files"`
	FilesFree    uint64 `json:"files_free"`
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
func MemUsed(m sample.Memory) uint64 { return m.Used() }

// round is x to digits decimals, so that JSON shows 37.5, not
// 37.49999904632568 (a float32 widened).
func round(x float64, digits int) float64 {
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return 0 // JSON has no NaN or infinity
	}
	p := math.Pow10(digits)
	return math.Round(x*p) / p
}

// statusOf is the Status of a node's summary; its strings come from a
// (nil: each its own allocation).
func statusOf(st *Status, s *shm.Summary, info shm.Info, now time.Time, a *stringBlocks) {
	up := info.Up(s.LastSeen, now)
	*st = Status{
		Node:          s.Node,
		State:         StateDown,
		Stale:         !up && !s.LastSeen.IsZero() && !s.Repaired,
		Up:            up,
		LastSeen:      s.LastSeen,
		SampleTime:    s.Time,
		BootTime:      s.BootTime,
		CPUs:          s.CPUs,
		CPUPercent:    round(float64(s.TotalPercent), 2),
		MemTotal:      s.Memory.Total,
		MemUsed:       MemUsed(s.Memory),
		MemFree:       s.Memory.Free,
		MemAvailable:  s.Memory.Available,
		MemBuffers:    s.Memory.Buffers,
		MemCached:     s.Memory.Cached,
		MemShared:     s.Memory.Shared,
		SwapTotal:     s.Memory.SwapTotal,
		SwapFree:      s.Memory.SwapFree,
		Load1:         round(s.Load.One, 2),
		Load5:         round(s.Load.Five, 2),
		Load15:        round(s.Load.Fifteen, 2),
		Running:       s.Load.Running,
		Procs:         s.Load.Total,
		LastPID:       s.Load.LastPID,
		NetDevs:       s.NetDevs,
		RxBytesPerSec: round(s.RxBytesPerSec, 2),
		TxBytesPerSec: round(s.TxBytesPerSec, 2),
	}
	if host := s.HostBytes(); len(host) > 0 {
		st.Hostname = a.make(host)
	}
	if !s.Time.IsZero() && !s.BootTime.IsZero() && s.Time.After(s.BootTime) {
		st.UptimeSeconds = round(s.Time.Sub(s.BootTime).Seconds(), 3)
	}
	if up {
		st.State = StateUp
	}
	if s.Addr.IsValid() {
		st.Addr = a.make(s.Addr.AppendTo(a.scratch()))
	}
	if s.BootID != ([16]byte{}) {
		st.BootID = a.make(hex.AppendEncode(a.scratch(), s.BootID[:]))
	}
	if !s.LastSeen.IsZero() {
		st.AgeSeconds = round(now.Sub(s.LastSeen).Seconds(), 3)
	}
}

// Status lists every node in the table, ascending by node. A node whose
// record cannot be read (left half-written by a recvstats that died) is
// listed as StateUnknown with the reason; the others are unaffected.
func (t *Table) Status() ([]Status, error) {
	out := make([]Status, 0, t.Info().Nodes)
	err := t.Each(func(s *Status) error {
		out = append(out, *s)
		return nil
	})
	return out, err
}

// Each calls fn with every node's Status, ascending by node, as Status
// lists them, reading one node at a time: memory does not grow with the
// table. The *Status is reused for the next node; fn must copy what it
// keeps. Each stops at the first error fn returns and returns it. The
// table is locked for other callers meanwhile.
func (t *Table) Each(fn func(*Status) error) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	info, now := t.r.Info(), t.now()
	var st Status
	var a stringBlocks
	return t.r.EachNode(func(n int) error {
		s, ok, err := t.r.Summary(n)
		switch {
		case errors.Is(err, shm.ErrClosed):
			return err
		case errors.Is(err, shm.ErrWriterStuck):
			st = Status{Node: n, State: StateUnknown, Error: shm.ErrWriterStuck.Error()}
		case err != nil:
			st = Status{Node: n, State: StateUnknown, Error: err.Error()}
		case ok:
			statusOf(&st, &s, info, now, &a)
		default:
			return nil // forgotten since the index was read
		}
		return fn(&st)
	})
}

// Detail reads everything about node.
func (t *Table) Detail(node int) (Detail, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := t.record(node); err != nil {
		return Detail{}, err
	}
	rec := &t.rec
	d := Detail{
		PerCPU: make([]CPUStatus, len(rec.Sample.CPUs)),
		Net:    make([]NetStatus, len(rec.Sample.Net)),
	}
	statusOf(&d.Status, &rec.Summary, t.r.Info(), t.now(), nil)
	for i, c := range rec.Sample.CPUs {
		d.PerCPU[i] = CPUStatus{CPU: i, Percent: round(float64(rec.CPUPercent[i]), 2), MHz: round(c.MHz, 3), Model: c.Model, Ticks: c.Ticks}
	}
	for i, n := range rec.Sample.Net {
		d.Net[i] = NetStatus{
			Name: n.Name, RxBytes: n.RxBytes, RxPackets: n.RxPackets, RxErrors: n.RxErrors, RxDrops: n.RxDrops,
			TxBytes: n.TxBytes, TxPackets: n.TxPackets, TxErrors: n.TxErrors, TxDrops: n.TxDrops,
			RxBytesPerSec: round(rec.NetRates[i].RxBytesPerSec, 2), TxBytesPerSec: round(rec.NetRates[i].TxBytesPerSec, 2),
		}
	}
	d.Disks = make([]DiskStatus, len(rec.Sample.Disks))
	for i, k := range rec.Sample.Disks {
		r := rec.DiskRates[i]
		d.Disks[i] = DiskStatus{Name: k.Name, Reads: k.Reads, Writes: k.Writes, ReadBytes: k.ReadBytes, WriteBytes: k.WriteBytes,
			ReadBytesPerSec: round(r.ReadBytesPerSec, 2), WriteBytesPerSec: round(r.WriteBytesPerSec, 2), BusyPercent: round(float64(r.BusyPercent), 2)}
	}
	d.Filesystems = make([]FilesystemStatus, len(rec.Sample.Filesystems))
	for i, f := range rec.Sample.Filesystems {
		d.Filesystems[i] = FilesystemStatus{Mount: f.Mount, Type: f.Type, NotAnswering: f.NotAnswering,
			Total: f.Total, Used: f.Used(), Avail: f.Avail, Files: f.Files, FilesFree: f.FilesFree}
	}
	return d, nil
}

// stringBlocks makes the short strings of many Statuses out of shared blocks,
// one allocation per block instead of one per string. A block is never
// written again once a string points into it, so the strings stay
// immutable, and the garbage collector frees a block when no string
// points into it any more.
type stringBlocks struct {
	block []byte
	tmp   [64]byte
}

const stringBlock = 16 << 10

// scratch is a buffer to build the next string in.
func (a *stringBlocks) scratch() []byte {
	if a == nil {
		return nil
	}
	return a.tmp[:0]
}

// make returns b as a string.
func (a *stringBlocks) make(b []byte) string {
	if a == nil || len(b) > len(a.tmp) {
		return string(b)
	}
	if cap(a.block)-len(a.block) < len(b) {
		a.block = make([]byte, 0, stringBlock)
	}
	start := len(a.block)
	a.block = append(a.block, b...)
	return unsafe.String(&a.block[start], len(b))
}
