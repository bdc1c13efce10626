package view

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hoststat/hoststat/shm"
)

var histNow = time.Unix(1_800_000_000, 0) // a whole minute

// every gives up points, one per step over [from, to), with cpu by f.
func every(from, to time.Time, step time.Duration, cpu func(t time.Time) float64) []HistPoint {
	var out []HistPoint
	for t := from; t.Before(to); t = t.Add(step) {
		out = append(out, HistPoint{Time: t, Figures: shm.Figures{Up: true, CPUPercent: cpu(t), MemUsed: 1 << 30, Load1: 1, RxBytesPerSec: 100, TxBytesPerSec: 50}})
	}
	return out
}

func flat(v float64) func(time.Time) float64 { return func(time.Time) float64 { return v } }

func cpuOf(s *Series) func(int) float64 { return func(i int) float64 { return s.CPU[i] } }

func TestChartsEmptyHistory(t *testing.T) {
	fine, mins := Charts(nil, nil, histNow, 30*time.Second)
	for _, s := range []Series{fine, mins} {
		if len(s.Time) != 0 || len(s.Gaps) != 0 || s.To != histNow.Unix() {
			t.Errorf("%s: %+v", s.Resolution, s)
		}
		if got := Sparkline(&s, cpuOf(&s), 100, 10); got != strings.Repeat(" ", 10) {
			t.Errorf("%s sparkline %q", s.Resolution, got)
		}
	}
	if fine.From != histNow.Add(-15*time.Minute).Unix() || mins.From != histNow.Add(-24*time.Hour).Unix() {
		t.Errorf("windows %d, %d", fine.From, mins.From)
	}
}

func TestChartsOnePoint(t *testing.T) {
	pts := []HistPoint{{Time: histNow.Add(-10 * time.Second), Figures: shm.Figures{Up: true, CPUPercent: 100}}}
	fine, mins := Charts(nil, pts, histNow, 30*time.Second)
	if !slices.Equal(fine.Time, []int64{histNow.Unix() - 10}) || len(fine.Gaps) != 0 || fine.EndsDown() {
		t.Fatalf("fine %+v", fine)
	}
	if got := Sparkline(&fine, cpuOf(&fine), 100, 10); got != "         █" {
		t.Errorf("sparkline %q", got)
	}
	// Its minute, rolled up from the one point.
	if !slices.Equal(mins.Time, []int64{histNow.Unix() - 60}) || mins.CPU[0] != 100 {
		t.Errorf("minutes %+v", mins)
	}
	// Heard 10 s ago with a down-after time of 2 s: down since.
	fine, _ = Charts(nil, pts, histNow, 2*time.Second)
	if !slices.Equal(fine.Gaps, [][2]int64{{histNow.Unix() - 10, histNow.Unix()}}) || !fine.EndsDown() {
		t.Errorf("gaps %v", fine.Gaps)
	}
}

func TestChartsDownGaps(t *testing.T) {
	// Up until 6 minutes ago, silent for 3 minutes, up again; a point of
	// a node recorded down a minute ago.
	pts := every(histNow.Add(-20*time.Minute), histNow.Add(-6*time.Minute), time.Second, flat(20))
	pts = append(pts, every(histNow.Add(-3*time.Minute), histNow.Add(-time.Minute), time.Second, flat(80))...)
	pts = append(pts, HistPoint{Time: histNow.Add(-time.Minute)})
	pts = append(pts, every(histNow.Add(-50*time.Second), histNow, time.Second, flat(80))...)
	fine, mins := Charts(nil, pts, histNow, 5*time.Second)
	n := histNow.Unix()
	want := [][2]int64{{n - 6*60 - 1, n - 3*60}, {n - 61, n - 50}}
	if !slices.Equal(fine.Gaps, want) {
		t.Errorf("gaps %v, want %v", fine.Gaps, want)
	}
	if len(fine.Time) != 9*60+120+50 || fine.Time[0] != n-15*60 {
		t.Errorf("%d points from %d", len(fine.Time), fine.Time[0]-n)
	}
	// 15 cells of a minute: 9 at 20 %, the silence, 80 % after.
	if got := Sparkline(&fine, cpuOf(&fine), 100, 15); got != "▂▂▂▂▂▂▂▂▂···▇▇▇" {
		t.Errorf("sparkline %q", got)
	}
	// Per minute the silence is three minutes without a point.
	if len(mins.Gaps) != 1 || mins.Gaps[0] != [2]int64{n - 7*60, n - 3*60} {
		t.Errorf("minute gaps %v", mins.Gaps)
	}
}

func TestChartsResolutionSwitch(t *testing.T) {
	// The file's one-minute points cover up to the oldest full-resolution
	// point's minute; the one-minute series goes on with minutes averaged
	// from the full-resolution points.
	minutes := every(histNow.Add(-3*time.Hour), histNow.Add(-10*time.Minute), time.Minute, flat(10))
	fine := every(histNow.Add(-10*time.Minute).Add(30*time.Second), histNow, 10*time.Second, func(t time.Time) float64 {
		return float64(t.Unix() % 60) // 0, 10, …, 50 in every minute: 25 on average
	})
	fs, ms := Charts(minutes, fine, histNow, 30*time.Second)
	if len(fs.Time) != len(fine) {
		t.Errorf("fine series %d points of %d", len(fs.Time), len(fine))
	}
	if len(ms.Time) != 180 || len(ms.Gaps) != 0 {
		t.Fatalf("minutes: %d points, gaps %v", len(ms.Time), ms.Gaps)
	}
	for i, tm := range ms.Time {
		if tm != histNow.Unix()-int64(180-i)*60 {
			t.Fatalf("minute %d at %d", i, tm-histNow.Unix())
		}
	}
	if ms.CPU[169] != 10 || ms.CPU[170] != 40 || ms.CPU[171] != 25 || ms.CPU[179] != 25 {
		t.Errorf("minutes' CPU around the switch %v", ms.CPU[168:])
	}
	// A rising day draws rising blocks.
	rise := every(histNow.Add(-24*time.Hour), histNow.Add(-time.Minute), time.Minute, func(t time.Time) float64 {
		return 100 * float64(t.Sub(histNow.Add(-24*time.Hour))) / float64(24*time.Hour)
	})
	_, ms = Charts(rise, nil, histNow, 30*time.Second)
	if got := Sparkline(&ms, cpuOf(&ms), 100, 8); got != "▁▂▃▄▅▆▇█" && got != "▁▂▃▄▄▅▆▇" {
		t.Errorf("rising day %q", got)
	}
}

func TestSeriesTrimAndBound(t *testing.T) {
	pts := every(histNow.Add(-10*time.Minute), histNow.Add(-5*time.Minute), time.Second, flat(1))
	pts = append(pts, every(histNow.Add(-2*time.Minute), histNow, time.Second, flat(2))...)
	fine, _ := Charts(nil, pts, histNow, 5*time.Second)
	fine.trim(histNow.Unix() - 4*60)
	if len(fine.Time) != 120 || fine.From != histNow.Unix()-240 || !slices.Equal(fine.Gaps, [][2]int64{{histNow.Unix() - 240, histNow.Unix() - 120}}) {
		t.Errorf("trimmed: %d points from %d, gaps %v", len(fine.Time), fine.From, fine.Gaps)
	}
	many := every(histNow.Add(-time.Hour), histNow, 100*time.Millisecond, flat(3))
	s := series("full", many, histNow.Add(-time.Hour), histNow, time.Minute)
	if len(s.Time) != maxSeriesPoints || s.Time[len(s.Time)-1] != histNow.Unix()-1 {
		t.Errorf("%d points, last %d", len(s.Time), s.Time[len(s.Time)-1]-histNow.Unix())
	}
}
