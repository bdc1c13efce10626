package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strconv"
	"time"

	"github.com/hoststat/hoststat/shm"
)

// historyPoint is one point of --history --json; a down node's point has
// only time, resolution and up.
type historyPoint struct {
	Time       time.Time `json:"time"`
	Resolution string    `json:"resolution"` // "1m" (averages of the minute) or "full"
	Up         bool      `json:"up"`
	CPUPercent *float64  `json:"cpu_percent,omitempty"`
	Load1      *float64  `json:"load1,omitempty"`
	MemUsed    *uint64   `json:"mem_used,omitempty"`
	SwapUsed   *uint64   `json:"swap_used,omitempty"`
	RxRate     *float64  `json:"rx_bytes_per_sec,omitempty"`
	TxRate     *float64  `json:"tx_bytes_per_sec,omitempty"`
}

func pointOf(p shm.Point, res string) historyPoint {
	h := historyPoint{Time: p.Time.UTC(), Resolution: res, Up: p.Up}
	if p.Up {
		f := p.Figures
		h.CPUPercent, h.Load1, h.MemUsed, h.SwapUsed, h.RxRate, h.TxRate = &f.CPUPercent, &f.Load1, &f.MemUsed, &f.SwapUsed, &f.RxBytesPerSec, &f.TxBytesPerSec
	}
	return h
}

// showHistory prints node's history since now-since, oldest first: the
// one-minute points, then the full-resolution ones.
func showHistory(w *bufio.Writer, dir string, node int, since time.Duration, asJSON bool, now time.Time) error {
	r, err := shm.OpenHistoryReader(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("no history at %s: recvstats keeps none (or uses another --shm-dir)", filepath.Join(dir, shm.HistoryFileName))
	}
	if err != nil {
		return err
	}
	defer r.Close()
	minutes, fine, ok, err := r.Read(node, now.Add(-since))
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("node %d: no history", node)
	}
	if asJSON {
		out := struct {
			Node   int            `json:"node"`
			Points []historyPoint `json:"points"`
		}{Node: node, Points: make([]historyPoint, 0, len(minutes)+len(fine))}
		for _, p := range minutes {
			out.Points = append(out.Points, pointOf(p, "1m"))
		}
		for _, p := range fine {
			out.Points = append(out.Points, pointOf(p, "full"))
		}
		b, err := json.Marshal(out)
		if err != nil {
			return err
		}
		w.Write(b)
		return w.WriteByte('\n')
	}
	fmt.Fprintf(w, "node %d since %s: %d one-minute points, %d full-resolution points\n", node, stamp(now.Add(-since)), len(minutes), len(fine))
	fmt.Fprintf(w, "%-20s  %4s  %5s  %6s  %6s  %9s  %9s  %9s  %9s\n", "TIME", "RES", "STATE", "CPU%", "LOAD1", "MEM USED", "SWAP USED", "RX/s", "TX/s")
	line := func(p shm.Point, res string) {
		fmt.Fprintf(w, "%-20s  %4s  ", p.Time.UTC().Format(time.RFC3339), res)
		if !p.Up {
			fmt.Fprintf(w, "%5s\n", "down")
			return
		}
		fmt.Fprintf(w, "%5s  %6s  %6s  %9s  %9s  %9s  %9s\n", "up", strconv.FormatFloat(p.CPUPercent, 'f', 1, 64),
			strconv.FormatFloat(p.Load1, 'f', 2, 64), bytesIEC(p.MemUsed), bytesIEC(p.SwapUsed),
			bytesIEC(uint64(p.RxBytesPerSec)), bytesIEC(uint64(p.TxBytesPerSec)))
	}
	for _, p := range minutes {
		line(p, "1m")
	}
	for _, p := range fine {
		line(p, "full")
	}
	return nil
}
