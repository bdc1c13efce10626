package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/hoststat/hoststat/beostat"
	"github.com/hoststat/hoststat/shm"
)

// summaryLine is the line about the table above its nodes.
func summaryLine(info shm.Info, now time.Time) string {
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
	return fmt.Sprintf("%s: %d nodes (down after %v); %s; last update request %s\n",
		printable(info.Path), info.Nodes, info.DownAfter, writer, req)
}

// tableWriter prints one line per node as it reads them, in columns of
// fixed width (no tabwriter: it would hold the whole table), then a line
// counting the states.
type tableWriter struct {
	w          *bufio.Writer
	now        time.Time
	width      [10]int
	line, cell []byte
	up, down   int
	unknown    int
}

// Column widths: an IPv4 address and port; "unknown"; "23h59m"; …
const (
	addrWidth = 21
	hostWidth = 12
	memWidth  = 17
	rateWidth = 9
)

func newTableWriter(w *bufio.Writer, info shm.Info, now time.Time) *tableWriter {
	node := max(4, len(strconv.Itoa(max(0, info.NodeLimit-1))))
	t := &tableWriter{w: w, now: now, width: [10]int{node, addrWidth, hostWidth, 7, 6, 6, 5, memWidth, rateWidth, rateWidth}}
	w.WriteString(summaryLine(info, now))
	t.row("NODE", "ADDRESS", "HOST", "STATE", "AGE", "LOAD", "CPU%", "MEMORY USED/TOTAL", "RX/s", "TX/s")
	w.Write(t.line)
	return t
}

// row sets t.line to the cells right-aligned in their columns.
func (t *tableWriter) row(cells ...string) {
	t.line = t.line[:0]
	for i, c := range cells {
		t.line = t.pad(t.width[i], len(c))
		t.line = append(t.line, c...)
	}
	t.line = append(t.line, '\n')
}

// pad appends the spaces that right-align a cell of n bytes in a column
// of width (two between columns).
func (t *tableWriter) pad(width, n int) []byte {
	if len(t.line) > 0 {
		t.line = append(t.line, "  "...)
	}
	if n < width {
		t.line = append(t.line, spaces[:min(width-n, len(spaces))]...)
	}
	return t.line
}

var spaces = []byte("                                        ")

// appendFixed appends x ≥ 0 with decimals (≤ 3) digits after the point:
// strconv.AppendFloat(dst, x, 'f', decimals, 64) but for the rounding of
// exact halves, at a fraction of its cost (the table prints two such
// numbers a node).
func appendFixed(dst []byte, x float64, decimals int) []byte {
	p := [...]float64{1, 10, 100, 1000}[decimals]
	if !(x >= 0 && x*p < 1<<53) {
		return strconv.AppendFloat(dst, x, 'f', decimals, 64)
	}
	v := int64(math.Round(x * p))
	dst = strconv.AppendInt(dst, v/int64(p), 10)
	if decimals == 0 {
		return dst
	}
	dst = append(dst, '.')
	frac := v % int64(p)
	for q := int64(p) / 10; q > 0; q /= 10 {
		dst = append(dst, byte('0'+frac/q))
		frac %= q
	}
	return dst
}

// put appends t.cell right-aligned in the column of width.
func (t *tableWriter) put(width int) {
	t.line = t.pad(width, utf8.RuneCount(t.cell))
	t.line = append(t.line, t.cell...)
}

// node prints one node.
func (t *tableWriter) node(s *beostat.Status) error {
	switch s.State {
	case beostat.StateUp:
		t.up++
	case beostat.StateDown:
		t.down++
	default:
		t.unknown++
	}
	w := &t.width
	t.line = t.line[:0]
	t.cell = strconv.AppendInt(t.cell[:0], int64(s.Node), 10)
	t.put(w[0])
	if s.State == beostat.StateUnknown {
		for i, c := range []string{"-", "-", s.State, "-", "-", "-", "-", "-", "-"} {
			t.cell = append(t.cell[:0], c...)
			t.put(w[i+1])
		}
		t.line = append(t.line, "  "+printable(s.Error)+"\n"...)
		_, err := t.w.Write(t.line)
		return err
	}
	t.cell = append(t.cell[:0], orDash(s.Addr)...)
	t.put(w[1])
	t.cell = append(t.cell[:0], orDash(printable(s.Hostname))...)
	t.put(w[2])
	t.cell = append(t.cell[:0], s.State...)
	t.put(w[3])
	t.cell = appendAgeOf(t.cell[:0], s, t.now)
	t.put(w[4])
	t.cell = appendFixed(t.cell[:0], s.Load1, 2)
	t.put(w[5])
	t.cell = appendFixed(t.cell[:0], s.CPUPercent, 1)
	t.put(w[6])
	t.cell = appendIEC(t.cell[:0], s.MemUsed)
	t.cell = appendIEC(append(t.cell, " / "...), s.MemTotal)
	t.put(w[7])
	t.cell = appendIEC(t.cell[:0], uint64(s.RxBytesPerSec))
	t.put(w[8])
	t.cell = appendIEC(t.cell[:0], uint64(s.TxBytesPerSec))
	t.put(w[9])
	if s.Stale {
		t.line = append(t.line, "  stale: last figures before it went down"...)
	}
	t.line = append(t.line, '\n')
	_, err := t.w.Write(t.line)
	return err
}

// end prints the line counting the nodes listed by state.
func (t *tableWriter) end() error {
	_, err := fmt.Fprintf(t.w, "%d up, %d down, %d unknown\n", t.up, t.down, t.unknown)
	return err
}

// fieldsWriter prints the chosen fields of each node: as CSV, or as a
// text table with a column per field (an absent field is "-").
type fieldsWriter struct {
	w      *bufio.Writer
	fields []beostat.Field
	csv    bool
	line   []byte
}

func newFieldsWriter(w *bufio.Writer, fields []beostat.Field, csv bool) *fieldsWriter {
	f := &fieldsWriter{w: w, fields: fields, csv: csv}
	for i, fl := range fields {
		name := fl.String()
		if !csv {
			name = strings.ToUpper(name)
		}
		f.line = f.sep(i, len(name), fl)
		f.line = append(f.line, name...)
	}
	w.Write(append(f.line, '\n'))
	return f
}

// textWidth is a field's column width in the text form.
func textWidth(f beostat.Field) int {
	switch f {
	case beostat.FieldLastSeen, beostat.FieldSampleTime, beostat.FieldBootTime:
		return 24
	case beostat.FieldAddr:
		return addrWidth
	case beostat.FieldBootID:
		return 32
	}
	return 10
}

// sep starts field i of a line holding n bytes: a comma, or the spaces
// that right-align it.
func (f *fieldsWriter) sep(i, n int, fl beostat.Field) []byte {
	if i == 0 {
		f.line = f.line[:0]
	} else if f.csv {
		return append(f.line, ',')
	} else {
		f.line = append(f.line, "  "...)
	}
	if f.csv {
		return f.line
	}
	for w := max(textWidth(fl), len(fl.String())); n < w; n++ {
		f.line = append(f.line, ' ')
	}
	return f.line
}

func (f *fieldsWriter) node(s *beostat.Status) error {
	var cell [64]byte
	for i, fl := range f.fields {
		c := s.AppendField(cell[:0], fl)
		switch {
		case f.csv && bytes.ContainsAny(c, ",\"\r\n"):
			f.line = append(f.sep(i, 0, fl), csvQuote(c)...)
		case f.csv:
			f.line = append(f.sep(i, 0, fl), c...)
		case len(c) == 0:
			f.line = append(f.sep(i, 1, fl), '-')
		case isPrintable(c):
			f.line = append(f.sep(i, utf8.RuneCount(c), fl), c...)
		default:
			p := printable(string(c))
			f.line = append(f.sep(i, utf8.RuneCountInString(p), fl), p...)
		}
	}
	f.line = append(f.line, '\n')
	_, err := f.w.Write(f.line)
	return err
}

// csvQuote is c as an RFC 4180 quoted field.
func csvQuote(c []byte) string {
	return `"` + strings.ReplaceAll(string(c), `"`, `""`) + `"`
}

// printable is s with every byte a terminal could act on escaped (control
// characters, ESC, invalid UTF-8, non-printing runes) as Go escapes: CPU
// models, device names and errors come from the nodes, and must not drive
// the reader's terminal.
func printable(s string) string {
	if isPrintable([]byte(s)) {
		return s
	}
	q := strconv.QuoteToGraphic(s)
	return strings.ReplaceAll(q[1:len(q)-1], `\"`, `"`)
}

// isPrintable reports whether b is valid UTF-8 with no rune a terminal
// could act on.
func isPrintable(b []byte) bool {
	for len(b) > 0 {
		r, n := utf8.DecodeRune(b)
		if r == utf8.RuneError || !unicode.IsPrint(r) {
			return false
		}
		b = b[n:]
	}
	return true
}

// writeDetail prints everything about one node.
func writeDetail(w io.Writer, d beostat.Detail, now time.Time) {
	s := d.Status
	fmt.Fprintf(w, "node %d  %s  %s  %s, last seen %s\n", s.Node, orDash(printable(s.Hostname)), orDash(s.Addr), s.State, ageOf(s, now)+" ago")
	if s.Stale {
		fmt.Fprintf(w, "STALE: the node is down; these are its last figures, not current ones\n")
	}
	fmt.Fprintf(w, "booted   %s  (boot id %s), up %s\n", stamp(s.BootTime), orDash(s.BootID), age(time.Duration(s.UptimeSeconds*float64(time.Second))))
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
	if len(d.Disks) > 0 {
		fmt.Fprintln(w)
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprint(tw, "DISK\tREAD/s\tWRITE/s\tBUSY%\tREAD\tWRITTEN\t\n")
		for _, k := range d.Disks {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%.1f\t%s\t%s\t\n", printable(k.Name), bytesIEC(uint64(k.ReadBytesPerSec)),
				bytesIEC(uint64(k.WriteBytesPerSec)), k.BusyPercent, bytesIEC(k.ReadBytes), bytesIEC(k.WriteBytes))
		}
		tw.Flush()
	}
	if len(d.Filesystems) > 0 {
		fmt.Fprintln(w)
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprint(tw, "MOUNT\tTYPE\tUSED\tSIZE\tAVAIL\tUSE%\tINODES USED\n")
		for _, f := range d.Filesystems {
			if f.NotAnswering {
				fmt.Fprintf(tw, "%s\t%s\t-\t-\t-\t-\tnot answering (statfs hung on the node)\n", printable(f.Mount), printable(f.Type))
				continue
			}
			pct := 0.0
			if f.Total > 0 {
				pct = 100 * float64(f.Used) / float64(f.Total)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%.0f%%\t%d of %d\n", printable(f.Mount), printable(f.Type),
				bytesIEC(f.Used), bytesIEC(f.Total), bytesIEC(f.Avail), pct, f.Files-min(f.FilesFree, f.Files), f.Files)
		}
		tw.Flush()
	}
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

func ageOf(s beostat.Status, now time.Time) string { return string(appendAgeOf(nil, &s, now)) }

func appendAgeOf(dst []byte, s *beostat.Status, now time.Time) []byte {
	if s.LastSeen.IsZero() {
		return append(dst, "never"...)
	}
	return appendAge(dst, now.Sub(s.LastSeen))
}

func age(d time.Duration) string { return string(appendAge(nil, d)) }

// appendAge appends a short duration: 0.4s, 12s, 3m04s, 2h05m, 3d04h.
func appendAge(dst []byte, d time.Duration) []byte {
	two := func(dst []byte, n int) []byte {
		if n < 10 {
			dst = append(dst, '0')
		}
		return strconv.AppendInt(dst, int64(n), 10)
	}
	switch {
	case d < 0:
		return append(dst, "0s"...)
	case d < 10*time.Second:
		return append(strconv.AppendFloat(dst, d.Seconds(), 'f', 1, 64), 's')
	case d < time.Minute:
		return append(strconv.AppendInt(dst, int64(d.Seconds()), 10), 's')
	case d < time.Hour:
		return append(two(append(strconv.AppendInt(dst, int64(d.Minutes()), 10), 'm'), int(d.Seconds())%60), 's')
	case d < 24*time.Hour:
		return append(two(append(strconv.AppendInt(dst, int64(d.Hours()), 10), 'h'), int(d.Minutes())%60), 'm')
	}
	return append(two(append(strconv.AppendInt(dst, int64(d.Hours())/24, 10), 'd'), int(d.Hours())%24), 'h')
}

func bytesIEC(n uint64) string { return string(appendIEC(nil, n)) }

// appendIEC appends n bytes in binary units: 512B, 1.5KiB, 12GiB.
func appendIEC(dst []byte, n uint64) []byte {
	if n < 1024 {
		return append(strconv.AppendUint(dst, n, 10), 'B')
	}
	f, units := float64(n), [...]string{"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"}
	for _, u := range units {
		f /= 1024
		if f < 1024 || u == units[len(units)-1] {
			dst = appendFixed(dst, f, 1)
			if len(dst) >= 2 && string(dst[len(dst)-2:]) == ".0" {
				dst = dst[:len(dst)-2]
			}
			return append(dst, u...)
		}
	}
	return dst
}
