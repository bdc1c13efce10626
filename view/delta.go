package view

import (
	"math"
	"slices"
)

// Row is one node as the live web view draws it, small and quantised so
// that a node whose figures did not visibly change is not sent again:
// [node, state, cpu %, mem %, load1×100, cpus, net bytes/s (2 significant digits)].
type Row [7]int64

func rowOf(n *Node) Row {
	mem := int64(0)
	if n.MemTotal > 0 {
		mem = int64(math.Round(100 * float64(n.MemUsed) / float64(n.MemTotal)))
	}
	return Row{
		int64(n.Node), int64(n.State), int64(math.Round(n.CPUPercent)), mem,
		int64(math.Round(100 * n.Load1)), int64(n.CPUs), twoDigits(n.RxBytesPerSec + n.TxBytesPerSec),
	}
}

// twoDigits rounds v to two significant digits: the net colour is on a
// log scale, so finer changes do not show and need not be sent.
func twoDigits(v float64) int64 {
	if v < 100 {
		return int64(math.Round(max(v, 0)))
	}
	p := math.Pow(10, math.Floor(math.Log10(v))-1)
	return int64(math.Round(v/p) * p)
}

// Frame is one message of the live stream: the whole grid (Full) or
// what changed since the frame before (Seq-1).
type Frame struct {
	Seq         uint64  `json:"seq"`
	Full        bool    `json:"full,omitempty"`
	Time        int64   `json:"time"` // Unix milliseconds
	DownAfter   float64 `json:"down_after"`
	WriterAlive bool    `json:"writer_alive"`
	Rows        []Row   `json:"rows"`           // new or changed nodes
	Gone        []int   `json:"gone,omitempty"` // nodes no longer in the table
}

// Encoder turns successive snapshots into deltas. It holds one row per
// node of the last snapshot: its memory follows the table's size.
type Encoder struct {
	seq  uint64
	last Frame
	rows map[int]Row
}

// NewEncoder returns an encoder that has seen nothing yet.
func NewEncoder() *Encoder { return &Encoder{rows: map[int]Row{}} }

// Next is the delta from the previous snapshot to s (everything at first).
func (e *Encoder) Next(s *Snapshot) Frame {
	e.seq++
	f := Frame{Seq: e.seq, Time: s.Time.UnixMilli(), DownAfter: s.DownAfter.Seconds(), WriterAlive: s.WriterAlive, Rows: []Row{}}
	seen := make(map[int]bool, len(s.Nodes))
	for i := range s.Nodes {
		r := rowOf(&s.Nodes[i])
		seen[s.Nodes[i].Node] = true
		if old, ok := e.rows[s.Nodes[i].Node]; !ok || old != r {
			f.Rows = append(f.Rows, r)
			e.rows[s.Nodes[i].Node] = r
		}
	}
	for n := range e.rows {
		if !seen[n] {
			f.Gone = append(f.Gone, n)
			delete(e.rows, n)
		}
	}
	e.last = f
	return f
}

// Full is the whole grid as of the last Next, with its sequence number,
// for a viewer that starts now and applies the deltas after it.
func (e *Encoder) Full() Frame {
	f := e.last
	f.Full, f.Gone = true, nil
	f.Rows = make([]Row, 0, len(e.rows))
	for _, r := range e.rows {
		f.Rows = append(f.Rows, r)
	}
	slices.SortFunc(f.Rows, func(a, b Row) int { return int(a[0] - b[0]) })
	return f
}
