package view

import (
	"math"
	"strings"
	"time"

	"github.com/hoststat/hoststat/shm"
)

// HistPoint is a node's summary figures at one time, as the history file
// keeps them. A point with Up false says the node was down; its figures
// are zero.
type HistPoint = shm.Point

// Series is one chart's data, columns of equal length, oldest first: only
// the times the node was up. Gaps are the spans [from, to] (Unix seconds)
// when it was down or not heard from, so a chart shows them as such
// instead of drawing a line across.
type Series struct {
	Resolution string     `json:"resolution"` // "full" or "1m"
	From       int64      `json:"from"`       // the window, Unix seconds
	To         int64      `json:"to"`
	Time       []int64    `json:"t"`
	CPU        []float64  `json:"cpu"` // percent
	Mem        []uint64   `json:"mem"` // bytes used
	Load1      []float64  `json:"load1"`
	Rx         []float64  `json:"rx"` // bytes/s
	Tx         []float64  `json:"tx"`
	Gaps       [][2]int64 `json:"gaps"`
}

// History is what the charts of a node draw: the fine window at full
// resolution and the long one at one point a minute.
type History struct {
	Node     int    `json:"node"`
	MemTotal uint64 `json:"mem_total"` // the table's, for the memory scale
	Fine     Series `json:"fine"`
	Minutes  Series `json:"minutes"`
}

// Chart windows: the last 15 minutes at full resolution, the last day at
// one point per minute.
const (
	FineWindow   = 15 * time.Minute
	MinuteWindow = 24 * time.Hour
)

// maxSeriesPoints bounds each series of a reply whatever sizes the
// history file was made with: the newest points are kept.
const maxSeriesPoints = 4096

// Charts shapes a node's history (one-minute points before the
// full-resolution ones, each oldest first, as shm's reader returns them)
// into the two chart series as of now. The one-minute series continues
// past the file's one-minute points with minutes averaged from the
// full-resolution points, as the writer will average them. A silence
// longer than downAfter between points, or up to now, is a gap.
func Charts(minutes, fine []HistPoint, now time.Time, downAfter time.Duration) (fineS, minS Series) {
	fineS = series("full", fine, now.Add(-FineWindow), now, downAfter)
	all := minutes[:len(minutes):len(minutes)]
	for _, p := range rollUp(fine) {
		// The file's minute of the oldest full-resolution point is whole;
		// the roll-up of it is not.
		if len(minutes) == 0 || p.Time.After(minutes[len(minutes)-1].Time) {
			all = append(all, p)
		}
	}
	// A minute point stands for the minute after its time: it is late by
	// up to a minute, and so is a silence between two of them.
	minS = series("1m", all, now.Add(-MinuteWindow), now, downAfter+time.Minute)
	return fineS, minS
}

// rollUp averages full-resolution points into one point per minute, over
// the points when the node was up; a minute with none is down.
func rollUp(fine []HistPoint) []HistPoint {
	var out []HistPoint
	var sum shm.FiguresSum
	cur := int64(math.MinInt64)
	for i, p := range fine {
		m := p.Time.Unix() / 60
		if m != cur {
			cur, sum = m, shm.FiguresSum{}
		}
		sum.Add(p.Figures)
		if i == len(fine)-1 || fine[i+1].Time.Unix()/60 != m {
			out = append(out, HistPoint{Time: time.Unix(m*60, 0), Figures: sum.Mean()})
		}
	}
	return out
}

// series keeps the points of [from, to] and finds the gaps: spans when
// the node was down (its points say so) or silent longer than silent.
func series(res string, pts []HistPoint, from, to time.Time, silent time.Duration) Series {
	s := Series{Resolution: res, From: from.Unix(), To: to.Unix(), Time: []int64{}, CPU: []float64{},
		Mem: []uint64{}, Load1: []float64{}, Rx: []float64{}, Tx: []float64{}, Gaps: [][2]int64{}}
	const none = math.MinInt64
	last, downFrom := int64(none), int64(none) // the last time up; since when down
	first := 0
	for first < len(pts) && pts[first].Time.Unix() < s.From { // whole seconds, as the file and From are
		if pts[first].Up {
			last, downFrom = pts[first].Time.Unix(), none
		} else if downFrom == none {
			downFrom = pts[first].Time.Unix()
		}
		first++
	}
	pts = pts[first:]
	if len(pts) > maxSeriesPoints {
		pts = pts[len(pts)-maxSeriesPoints:]
	}
	gap := func(a, b int64) {
		a, b = max(a, s.From), min(b, s.To)
		if a >= b {
			return
		}
		if k := len(s.Gaps) - 1; k >= 0 && s.Gaps[k][1] >= a {
			s.Gaps[k][1] = max(s.Gaps[k][1], b)
			return
		}
		s.Gaps = append(s.Gaps, [2]int64{a, b})
	}
	for _, p := range pts {
		t := p.Time.Unix()
		if !p.Up {
			if downFrom == none {
				downFrom = t
				if last != none {
					downFrom = last
				}
			}
			continue
		}
		switch {
		case downFrom != none:
			gap(downFrom, t)
			downFrom = none
		case last != none && time.Duration(t-last)*time.Second > silent:
			gap(last, t)
		}
		last = t
		s.Time = append(s.Time, t)
		s.CPU = append(s.CPU, p.CPUPercent)
		s.Mem = append(s.Mem, p.MemUsed)
		s.Load1 = append(s.Load1, p.Load1)
		s.Rx = append(s.Rx, p.RxBytesPerSec)
		s.Tx = append(s.Tx, p.TxBytesPerSec)
	}
	switch {
	case downFrom != none:
		gap(downFrom, s.To)
	case last != none && time.Duration(s.To-last)*time.Second > silent:
		gap(last, s.To)
	}
	return s
}

// Sparkline draws the figure of s picked by value over s's window in
// width cells, each the mean of the points in its span on the scale
// [0, hi] as one of eight blocks; a cell in a gap is '·', a cell before
// the first point or without any is ' '.
func Sparkline(s *Series, value func(i int) float64, hi float64, width int) string {
	if width <= 0 {
		return ""
	}
	const blocks = "▁▂▃▄▅▆▇█"
	span := float64(s.To-s.From) / float64(width)
	sum := make([]float64, width)
	n := make([]int, width)
	cell := func(t int64) int {
		if span <= 0 {
			return width - 1
		}
		return min(max(int(float64(t-s.From)/span), 0), width-1)
	}
	for i, t := range s.Time {
		c := cell(t)
		sum[c] += value(i)
		n[c]++
	}
	down := make([]bool, width)
	for _, g := range s.Gaps {
		for c := cell(g[0]); c <= cell(g[1]); c++ {
			down[c] = true
		}
	}
	var b strings.Builder
	for c := range width {
		switch {
		case n[c] > 0:
			v := 0.0
			if hi > 0 {
				v = sum[c] / float64(n[c]) / hi
			}
			k := min(max(int(math.Round(v*7)), 0), 7)
			b.WriteRune([]rune(blocks)[k])
		case down[c]:
			b.WriteRune('·')
		default:
			b.WriteByte(' ')
		}
	}
	return b.String()
}

// Peak is the highest of n values, for a chart's scale: at least floor.
func Peak(n int, value func(i int) float64, floor float64) float64 {
	hi := floor
	for i := range n {
		hi = max(hi, value(i))
	}
	return hi
}

// trim drops what lies before from (Unix seconds).
func (s *Series) trim(from int64) {
	if from <= s.From {
		return
	}
	s.From = from
	k := 0
	for k < len(s.Time) && s.Time[k] < from {
		k++
	}
	s.Time, s.CPU, s.Mem, s.Load1, s.Rx, s.Tx = s.Time[k:], s.CPU[k:], s.Mem[k:], s.Load1[k:], s.Rx[k:], s.Tx[k:]
	gaps := s.Gaps[:0]
	for _, g := range s.Gaps {
		if g[1] > from {
			gaps = append(gaps, [2]int64{max(g[0], from), g[1]})
		}
	}
	s.Gaps = gaps
}

// EndsDown says the node is down or silent at the end of the window.
func (s *Series) EndsDown() bool { return len(s.Gaps) > 0 && s.Gaps[len(s.Gaps)-1][1] >= s.To }
