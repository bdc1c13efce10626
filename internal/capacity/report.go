package capacity

import (
	"bytes"
	"fmt"
	"os"
	"runtime"
	"sort"
	"strings"
)

// Markers delimit the part of docs/benchmarks.md that WriteBetweenMarkers
// replaces.
const (
	BeginMarker = "<!-- capacity:begin -->"
	EndMarker   = "<!-- capacity:end -->"
)

// Table is the markdown table of points, one row per node count. Repeated
// points show as ranges.
func Table(points []Point) string {
	byN := map[int]map[Mode][]*Point{}
	var ns []int
	rate := 1.0
	for i := range points {
		p := &points[i]
		rate = p.Rate
		if byN[p.Nodes] == nil {
			byN[p.Nodes] = map[Mode][]*Point{}
			ns = append(ns, p.Nodes)
		}
		byN[p.Nodes][p.Mode] = append(byN[p.Nodes][p.Mode], p)
	}
	sort.Ints(ns)
	var b strings.Builder
	fmt.Fprintf(&b, "| nodes at %s Hz | bare receiver CPU | recvstats CPU | ratio per packet | recvstats -d CPU (÷ background) | lost: bare / recvstats / -d (kernel drops) | recvstats peak RSS | memory per node | generator CPU | load avg |\n", trimFloat(rate))
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|\n")
	for _, n := range ns {
		m := byN[n]
		bare, bg, dbg := m[ModeBare], m[ModeBackground], m[ModeDebug]
		cpu := func(ps []*Point) string {
			return spread(ps, func(p *Point) float64 { return 100 * p.ReceiverCPU }, "%.0f", " %")
		}
		ratio := "–"
		if len(bare) > 0 && len(bg) > 0 {
			var rs []float64
			for i := range min(len(bare), len(bg)) {
				if c := bare[i].CPUPerPacket(); c > 0 {
					rs = append(rs, float64(bg[i].CPUPerPacket())/float64(c))
				}
			}
			ratio = rangeOf(rs, "%.2f", "×")
		}
		dcpu := cpu(dbg)
		if len(bg) > 0 && len(dbg) > 0 {
			var rs []float64
			for i := range min(len(bg), len(dbg)) {
				if c := bg[i].CPUPerPacket(); c > 0 {
					rs = append(rs, float64(dbg[i].CPUPerPacket())/float64(c))
				}
			}
			dcpu += " (" + rangeOf(rs, "%.2f", "×") + ")"
		}
		var lost, drops []string
		for _, ps := range [][]*Point{bare, bg, dbg} {
			lost = append(lost, spread(ps, func(p *Point) float64 { return float64(p.Lost()) }, "%.0f", ""))
			drops = append(drops, spread(ps, func(p *Point) float64 { return float64(p.KernelDrops) }, "%.0f", ""))
		}
		all := append(append(append([]*Point(nil), bare...), bg...), dbg...)
		var loads []float64
		for _, p := range all {
			loads = append(loads, p.Load[0], p.Load[1])
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s (%s) | %s | %s | %s | %s |\n",
			group(n), cpu(bare), cpu(bg), ratio, dcpu,
			strings.Join(lost, " / "), strings.Join(drops, " / "),
			spread(bg, func(p *Point) float64 { return float64(p.Memory.Peak) / (1 << 20) }, "%.0f", " MiB"),
			spread(bg, func(p *Point) float64 { return float64(p.Memory.Peak) / float64(p.Nodes) / 1024 }, "%.1f", " KiB"),
			spread(all, func(p *Point) float64 { return 100 * p.GeneratorCPU }, "%.0f", " %"),
			rangeOf(loads, "%.1f", ""))
	}
	return b.String()
}

// Report is the whole block written between the markers: what was run,
// where and when, the table, and how to read it. version names the
// recvstats measured (its --version line).
func Report(points []Point, command, version string) string {
	var b strings.Builder
	host := machine()
	when := "no points"
	if len(points) > 0 {
		first, last := points[0].Start, points[len(points)-1].Start
		when = fmt.Sprintf("%s – %s UTC", first.UTC().Format("2006-01-02 15:04"), last.UTC().Format("15:04"))
	}
	if version != "" {
		version = ", " + version
	}
	fmt.Fprintf(&b, "Measured %s on %s, %s, with:\n\n```\n%s\n```\n\n", when, host+version, goVersion(), command)
	b.WriteString(Table(points))
	b.WriteString(verdict(points))
	b.WriteString(`
CPU is the share of one CPU each process used over the window, from the kernel's accounting
(utime+stime of /proc/PID/stat, all threads). On loopback the kernel's UDP input runs in the
sender's context, so it is charged to the generator, not to the receivers. "ratio per packet" is
recvstats' CPU per packet taken ÷ the bare receiver's, each from its own window. "lost" is
samples sent − datagrams counted (bare) or records written to the table (recvstats, the table
header's count), over the whole run, warm-up included; kernel drops are the socket's drop
counter of /proc/net/udp at the end. "memory per node" is recvstats' peak RSS (VmHWM, table
mapping included) ÷ nodes. The load average (1 minute) is taken at the start and end of each
window; figures taken with a load above the number of CPUs are not worth comparing.
`)
	return b.String()
}

// verdict names the highest node count each recvstats mode took without
// loss (every count up to it too), and any point where the generator
// could not keep its pace, which makes that point's figures doubtful.
func verdict(points []Point) string {
	var b strings.Builder
	b.WriteString("\n")
	for _, m := range []Mode{ModeBackground, ModeDebug} {
		lossy := map[int]bool{}
		var ns []int
		for i := range points {
			p := &points[i]
			if p.Mode != m {
				continue
			}
			ns = append(ns, p.Nodes)
			if p.Lost() != 0 || p.KernelDrops != 0 {
				lossy[p.Nodes] = true
			}
		}
		sort.Ints(ns)
		best := 0
		for _, n := range ns {
			if lossy[n] {
				break
			}
			best = n
		}
		if len(ns) > 0 {
			if best == 0 {
				fmt.Fprintf(&b, "Highest node count with no loss, %s: none measured (loss at %s).\n", m, group(ns[0]))
			} else {
				fmt.Fprintf(&b, "Highest node count with no loss, %s: **%s**.\n", m, group(best))
			}
		}
	}
	// Memory per node net of the process's fixed part: the growth of peak
	// RSS between the smallest and the largest node count measured.
	var lo, hi *Point
	for i := range points {
		p := &points[i]
		if p.Mode != ModeBackground {
			continue
		}
		if lo == nil || p.Nodes < lo.Nodes {
			lo = p
		}
		if hi == nil || p.Nodes > hi.Nodes {
			hi = p
		}
	}
	if lo != nil && hi.Nodes > lo.Nodes {
		per := (float64(hi.Memory.Peak) - float64(lo.Memory.Peak)) / float64(hi.Nodes-lo.Nodes)
		fmt.Fprintf(&b, "Memory per node beyond the first %s (growth of recvstats' peak RSS from %s to %s nodes): **%.0f bytes**.\n",
			group(lo.Nodes), group(lo.Nodes), group(hi.Nodes), per)
	}
	bufs := map[Mode]int{}
	for _, p := range points {
		if p.ReadBuffer != 0 {
			bufs[p.Mode] = p.ReadBuffer
		}
	}
	if a, z := bufs[ModeBare], bufs[ModeBackground]; a != 0 && z != 0 && a != z {
		fmt.Fprintf(&b, "**The receive buffers differ**: bare %d bytes, recvstats %d (as SO_RCVBUF reports them): run again with --read-buffer %d.\n", a, z, z/2)
	}
	for i := range points {
		p := &points[i]
		if p.Sent.MaxLagMillis > 100 {
			fmt.Fprintf(&b, "The generator fell behind its pace by up to %.0f ms at %s nodes (%s): the machine was short of CPU.\n",
				p.Sent.MaxLagMillis, group(p.Nodes), p.Mode)
		}
	}
	return b.String()
}

func goVersion() string { return runtime.Version() }

func machine() string {
	cpus, model := 0, ""
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			k, v, _ := strings.Cut(line, ":")
			switch strings.TrimSpace(k) {
			case "processor":
				cpus++
			case "model name":
				model = strings.TrimSpace(v)
			}
		}
	}
	return fmt.Sprintf("%d CPUs (%s)", cpus, model)
}

// WriteBetweenMarkers replaces what lies between BeginMarker and
// EndMarker in the file at path with content.
func WriteBetweenMarkers(path, content string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	i := bytes.Index(b, []byte(BeginMarker))
	j := bytes.Index(b, []byte(EndMarker))
	if i < 0 || j < i {
		return fmt.Errorf("%s: no %s … %s section to write the table into", path, BeginMarker, EndMarker)
	}
	var out bytes.Buffer
	out.Write(b[:i+len(BeginMarker)])
	out.WriteString("\n")
	out.WriteString(strings.TrimRight(content, "\n"))
	out.WriteString("\n")
	out.Write(b[j:])
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	return os.WriteFile(path, out.Bytes(), fi.Mode().Perm())
}

// spread formats f over ps as "a" or "a–b", with unit after.
func spread(ps []*Point, f func(*Point) float64, format, unit string) string {
	var vs []float64
	for _, p := range ps {
		vs = append(vs, f(p))
	}
	return rangeOf(vs, format, unit)
}

func rangeOf(vs []float64, format, unit string) string {
	if len(vs) == 0 {
		return "–"
	}
	lo, hi := vs[0], vs[0]
	for _, v := range vs {
		lo, hi = min(lo, v), max(hi, v)
	}
	a, z := fmt.Sprintf(format, lo), fmt.Sprintf(format, hi)
	if a == z {
		return a + unit
	}
	return a + "–" + z + unit
}

// group writes n with thousands separators: 100,000.
func group(n int) string {
	s := fmt.Sprint(n)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

func trimFloat(f float64) string { return strings.TrimSuffix(fmt.Sprintf("%g", f), ".0") }
