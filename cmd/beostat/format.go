package main

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/hoststat/hoststat/beostat"
	"github.com/hoststat/hoststat/shm"
)

// writeTable prints one line per node under a line about the table.
func writeTable(w io.Writer, info shm.Info, st []beostat.Status, now time.Time) {
	up := 0
	for _, s := range st {
		if s.Up {
			up++
		}
	}
	writer := "no recvstats: figures are not being updated"
	switch {
	case info.WriterPID != 0 && info.WriterRunning():
		writer = fmt.Sprintf("recvstats pid %d running since %s", info.WriterPID, stamp(info.WriterStart))
	case info.WriterPID != 0:
		writer = fmt.Sprintf("recvstats pid %d is not running: figures are not being updated", info.WriterPID)
	}
	req := "never"
	if !info.LastUpdateRequest.IsZero() {
		req = age(now.Sub(info.LastUpdateRequest)) + " ago"
	}
	fmt.Fprintf(w, "%s: %d nodes, %d up (down after %v); %s; last update request %s\n",
		printable(info.Path), len(st), up, info.DownAfter, writer, req)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprint(tw, "NODE\tADDRESS\tSTATE\tAGE\tLOAD\tCPU%\tMEMORY USED/TOTAL\tRX/s\tTX/s\t\n")
	for _, s := range st {
		if s.State == beostat.StateUnknown {
			fmt.Fprintf(tw, "%d\t-\t%s\t-\t-\t-\t-\t-\t-\t  %s\n", s.Node, s.State, printable(s.Error))
			continue
		}
		note := ""
		if s.Stale {
			note = "  stale: last figures before it went down"
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%.2f\t%.1f\t%s / %s\t%s\t%s\t%s\n",
			s.Node, orDash(s.Addr), s.State, ageOf(s, now), s.Load1, s.CPUPercent,
			bytesIEC(s.MemUsed), bytesIEC(s.MemTotal), bytesIEC(uint64(s.RxBytesPerSec)), bytesIEC(uint64(s.TxBytesPerSec)), note)
	}
	tw.Flush()
}

// printable is s with every byte a terminal could act on escaped (control
// characters, ESC, invalid UTF-8, non-printing runes) as Go escapes: CPU
// models, device names and errors come from the nodes, and must not drive
// the reader's terminal.
func printable(s string) string {
	clean := true
	for _, r := range s {
		if r == utf8.RuneError || !unicode.IsPrint(r) {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	q := strconv.QuoteToGraphic(s)
	return strings.ReplaceAll(q[1:len(q)-1], `\"`, `"`)
}

// writeDetail prints everything about one node.
func writeDetail(w io.Writer, d beostat.Detail, now time.Time) {
	s := d.Status
	fmt.Fprintf(w, "node %d  %s  %s, last seen %s\n", s.Node, orDash(s.Addr), s.State, ageOf(s, now)+" ago")
	if s.Stale {
		fmt.Fprintf(w, "STALE: the node is down; these are its last figures, not current ones\n")
	}
	fmt.Fprintf(w, "booted   %s  (boot id %s)\n", stamp(s.BootTime), orDash(s.BootID))
	fmt.Fprintf(w, "sampled  %s  (node clock)\n", stamp(s.SampleTime))
	fmt.Fprintf(w, "load     %.2f %.2f %.2f  (%d running of %d, last pid %d)\n", s.Load1, s.Load5, s.Load15, s.Running, s.Procs, s.LastPID)
	fmt.Fprintf(w, "memory   %s used of %s; free %s, available %s, buffers %s, cached %s, shared %s\n",
		bytesIEC(s.MemUsed), bytesIEC(s.MemTotal), bytesIEC(s.MemFree), bytesIEC(s.MemAvailable),
		bytesIEC(s.MemBuffers), bytesIEC(s.MemCached), bytesIEC(s.MemShared))
	fmt.Fprintf(w, "swap     %s used of %s\n", bytesIEC(s.SwapTotal-min(s.SwapFree, s.SwapTotal)), bytesIEC(s.SwapTotal))
	fmt.Fprintf(w, "cpu      %.1f%% busy over %d CPUs\n\n", s.CPUPercent, s.CPUs)

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprint(tw, "CPU\tBUSY%\tMHZ\tMODEL\n")
	for _, c := range d.PerCPU {
		fmt.Fprintf(tw, "%d\t%5.1f\t%7.1f\t%s\n", c.CPU, c.Percent, c.MHz, printable(c.Model))
	}
	tw.Flush()
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprint(tw, "DEVICE\tRX/s\tTX/s\tRX BYTES\tTX BYTES\tRX PKTS\tTX PKTS\tERRS\tDROPS\t\n")
	for _, n := range d.Net {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t\n", printable(n.Name),
			bytesIEC(uint64(n.RxBytesPerSec)), bytesIEC(uint64(n.TxBytesPerSec)), bytesIEC(n.RxBytes), bytesIEC(n.TxBytes),
			n.RxPackets, n.TxPackets, n.RxErrors+n.TxErrors, n.RxDrops+n.TxDrops)
	}
	tw.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func stamp(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Format(time.RFC3339)
}

func ageOf(s beostat.Status, now time.Time) string {
	if s.LastSeen.IsZero() {
		return "never"
	}
	return age(now.Sub(s.LastSeen))
}

// age is a short duration: 0.4s, 12s, 3m04s, 2h05m, 3d04h.
func age(d time.Duration) string {
	switch {
	case d < 0:
		return "0s"
	case d < 10*time.Second:
		return fmt.Sprintf("%.1fs", d.Seconds())
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	case d < 24*time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd%02dh", int(d.Hours())/24, int(d.Hours())%24)
}

// bytesIEC is n bytes in binary units: 512B, 1.5KiB, 12.0GiB.
func bytesIEC(n uint64) string {
	if n < 1024 {
		return fmt.Sprintf("%dB", n)
	}
	f, units := float64(n), []string{"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"}
	for _, u := range units {
		f /= 1024
		if f < 1024 || u == units[len(units)-1] {
			return strings.TrimSuffix(fmt.Sprintf("%.1f", f), ".0") + u
		}
	}
	return ""
}
