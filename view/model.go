// Package view is what beostatus shows: the view model of the node table
// (states, a figure per node mapped to a colour, sorting and filtering),
// the delta encoder of the live web view, the read-only HTTP server with
// its JSON API and Prometheus /metrics, and the terminal view. It reads
// the table through a Source (source.go), never recvstats' sockets.
package view

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Snapshot is the table at one moment.
type Snapshot struct {
	Time        time.Time
	DownAfter   time.Duration
	WriterAlive bool // false: recvstats has the table closed; figures are frozen
	Nodes       []Node
}

// State says how recently a node was heard from.
type State uint8

const (
	Up   State = iota // heard from within half the down-after time
	Late              // silent for half the down-after time or more: about to go down
	Down              // silent for the down-after time or more
)

// MarshalText writes the state's name.
func (s State) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText reads a state's name.
func (s *State) UnmarshalText(b []byte) error {
	for _, v := range []State{Up, Late, Down} {
		if string(b) == v.String() {
			*s = v
			return nil
		}
	}
	return fmt.Errorf("unknown node state %q", b)
}

func (s State) String() string {
	switch s {
	case Up:
		return "up"
	case Late:
		return "late"
	}
	return "down"
}

// stateOf refines the table's up/down with "late": a node that missed
// updates but is not down yet.
func stateOf(up bool, age float64, downAfter time.Duration) State {
	switch {
	case !up:
		return Down
	case age >= downAfter.Seconds()/2:
		return Late
	}
	return Up
}

// Node is one node at a glance. Bytes are bytes, rates bytes per second,
// percents 0-100.
type Node struct {
	Node          int       `json:"node"`
	Addr          string    `json:"addr"`
	Host          string    `json:"host,omitempty"` // not in the table yet
	State         State     `json:"state"`
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
	ProcsRunning  uint32    `json:"procs_running"`
	ProcsTotal    uint32    `json:"procs_total"`
	RxBytesPerSec float64   `json:"rx_bytes_per_sec"` // every device but lo
	TxBytesPerSec float64   `json:"tx_bytes_per_sec"`
}

// Detail is one node in full.
type Detail struct {
	Node
	PerCPU []CPU    `json:"per_cpu"`
	Net    []NetDev `json:"net"`
}

// CPU is one logical CPU of a node.
type CPU struct {
	CPU     int     `json:"cpu"`
	Percent float64 `json:"percent"`
	MHz     float64 `json:"mhz"`
	Model   string  `json:"model"`
	Ticks   Ticks   `json:"ticks"`
}

// Ticks are cumulative CPU time counters in USER_HZ (1/100 s).
type Ticks struct {
	User    uint64 `json:"user"`
	Nice    uint64 `json:"nice"`
	System  uint64 `json:"system"`
	Idle    uint64 `json:"idle"`
	IOWait  uint64 `json:"iowait"`
	IRQ     uint64 `json:"irq"`
	SoftIRQ uint64 `json:"softirq"`
	Steal   uint64 `json:"steal"`
}

// NetDev is one network device of a node.
type NetDev struct {
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

// Figure is what the grid colours nodes by.
type Figure uint8

const (
	FigCPU  Figure = iota // busy percent of all CPUs
	FigMem                // memory used of total
	FigLoad               // 1-minute load per CPU
	FigNet                // bytes in and out per second, log scale up to 10 Gbit/s both ways
)

// Figures lists every figure in the order the views cycle through them.
var Figures = []Figure{FigCPU, FigMem, FigLoad, FigNet}

func (f Figure) String() string {
	return [...]string{"cpu", "mem", "load", "net"}[f]
}

// ParseFigure reads a figure's name.
func ParseFigure(s string) (Figure, error) {
	for _, f := range Figures {
		if strings.EqualFold(s, f.String()) {
			return f, nil
		}
	}
	return 0, fmt.Errorf("unknown figure %q (cpu, mem, load or net)", s)
}

// netScale is the top of the net figure's scale: 10 Gbit/s each way.
const netScale = 2 * 10e9 / 8

// Level is f of n on a 0..1 scale, the position of its colour.
func (n *Node) Level(f Figure) float64 {
	var v float64
	switch f {
	case FigCPU:
		v = n.CPUPercent / 100
	case FigMem:
		if n.MemTotal > 0 {
			v = float64(n.MemUsed) / float64(n.MemTotal)
		}
	case FigLoad:
		v = n.Load1 / float64(max(n.CPUs, 1))
	case FigNet:
		if b := n.RxBytesPerSec + n.TxBytesPerSec; b > 1 {
			v = math.Log10(b) / math.Log10(netScale)
		}
	}
	return min(max(v, 0), 1)
}

// Value is f of n as people read it: "37%", "1.50", "1.2M".
func (n *Node) Value(f Figure) string {
	switch f {
	case FigCPU:
		return fmt.Sprintf("%.0f%%", n.CPUPercent)
	case FigMem:
		return fmt.Sprintf("%.0f%%", 100*n.Level(FigMem))
	case FigLoad:
		return fmt.Sprintf("%.2f", n.Load1)
	}
	return Bytes(n.RxBytesPerSec+n.TxBytesPerSec) + "/s"
}

// RGB is the colour of level v on the green-yellow-red ramp all views use.
func RGB(v float64) (r, g, b uint8) {
	v = min(max(v, 0), 1)
	if v < 0.5 {
		return uint8(40 + 400*v), 170, 60 // green to yellow
	}
	return 240, uint8(170 - 260*(v-0.5)), 60 // yellow to red
}

// Bytes is n in IEC units, short: "512", "1.5K", "16G".
func Bytes(n float64) string {
	const units = "KMGTPE"
	if n < 1024 {
		return strconv.FormatFloat(n, 'f', 0, 64)
	}
	i := -1
	for n >= 1024 && i < len(units)-1 {
		n /= 1024
		i++
	}
	if n < 10 {
		return fmt.Sprintf("%.1f%c", n, units[i])
	}
	return fmt.Sprintf("%.0f%c", n, units[i])
}

// Order is how the grid is sorted.
type Order uint8

const (
	ByNode   Order = iota // ascending node number
	ByFigure              // highest level of the chosen figure first
	ByState               // down first, then late, then up; by node within each
)

// Orders lists every order in the order the views cycle through them.
var Orders = []Order{ByNode, ByFigure, ByState}

func (o Order) String() string { return [...]string{"node", "figure", "state"}[o] }

// Sort orders nodes in place.
func Sort(nodes []Node, o Order, f Figure) {
	slices.SortStableFunc(nodes, func(a, b Node) int {
		switch o {
		case ByFigure:
			if c := cmp.Compare(b.Level(f), a.Level(f)); c != 0 {
				return c
			}
		case ByState:
			if c := cmp.Compare(b.State, a.State); c != 0 {
				return c
			}
		}
		return cmp.Compare(a.Node, b.Node)
	})
}

// Filter keeps the nodes matching query, in place: every word of the
// query must match. A word is a state ("up", "late", "down"), a node
// number or range ("12", "10-19"), or text found in the address or host.
func Filter(nodes []Node, query string) []Node {
	words := strings.Fields(strings.ToLower(query))
	if len(words) == 0 {
		return nodes
	}
	return slices.DeleteFunc(nodes, func(n Node) bool {
		for _, w := range words {
			if !matches(&n, w) {
				return true
			}
		}
		return false
	})
}

func matches(n *Node, w string) bool {
	switch w {
	case "up", "late", "down":
		return n.State.String() == w
	}
	if lo, hi, ok := strings.Cut(w, "-"); ok {
		a, err1 := strconv.Atoi(lo)
		b, err2 := strconv.Atoi(hi)
		if err1 == nil && err2 == nil {
			return n.Node >= a && n.Node <= b
		}
	}
	if v, err := strconv.Atoi(w); err == nil {
		return n.Node == v
	}
	return strings.Contains(strings.ToLower(n.Addr), w) || strings.Contains(strings.ToLower(n.Host), w)
}

// Counts are how many nodes are in each state.
func Counts(nodes []Node) (up, late, down int) {
	for i := range nodes {
		switch nodes[i].State {
		case Up:
			up++
		case Late:
			late++
		default:
			down++
		}
	}
	return
}
