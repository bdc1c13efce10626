package sample

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// The parsers below read /proc text in place: no allocation unless a
// sample gains a CPU, a device or a device name.

var errSyntax = errors.New("unexpected syntax")

// nextLine splits b at the first newline.
func nextLine(b []byte) (line, rest []byte) {
	if i := bytes.IndexByte(b, '\n'); i >= 0 {
		return b[:i], b[i+1:]
	}
	return b, nil
}

// nextField returns the first run of non-blank bytes of b and what follows.
func nextField(b []byte) (field, rest []byte) {
	i := 0
	for i < len(b) && (b[i] == ' ' || b[i] == '\t') {
		i++
	}
	j := i
	for j < len(b) && b[j] != ' ' && b[j] != '\t' {
		j++
	}
	return b[i:j], b[j:]
}

// parseUint reads a decimal without allocating.
func parseUint(b []byte) (uint64, bool) {
	if len(b) == 0 || len(b) > 20 {
		return 0, false
	}
	var v uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		d := uint64(c - '0')
		if v > (^uint64(0)-d)/10 {
			return 0, false
		}
		v = v*10 + d
	}
	return v, true
}

// parseStat reads the cpu lines and btime of /proc/stat into s, and
// returns the CPU numbers in file order appended to ids.
func parseStat(b []byte, s *Sample, ids []int) ([]int, error) {
	s.CPUs = s.CPUs[:0]
	sawTotal, sawBtime := false, false
	for len(b) > 0 {
		var line []byte
		line, b = nextLine(b)
		name, rest := nextField(line)
		switch {
		case bytes.Equal(name, []byte("cpu")):
			if err := parseTicks(rest, &s.Total); err != nil {
				return ids, fmt.Errorf("cpu line: %w", err)
			}
			sawTotal = true
		case bytes.HasPrefix(name, []byte("cpu")):
			id, ok := parseUint(name[3:])
			if !ok || id >= maxCPUID {
				return ids, fmt.Errorf("%q: %w", name, errSyntax)
			}
			s.CPUs = append(s.CPUs, CPU{})
			if err := parseTicks(rest, &s.CPUs[len(s.CPUs)-1].Ticks); err != nil {
				return ids, fmt.Errorf("%s line: %w", name, err)
			}
			ids = append(ids, int(id))
		case bytes.Equal(name, []byte("btime")):
			f, _ := nextField(rest)
			v, ok := parseUint(f)
			if !ok || v > 1<<40 {
				return ids, fmt.Errorf("btime %q: %w", f, errSyntax)
			}
			s.BootTime = time.Unix(int64(v), 0)
			sawBtime = true
		}
	}
	if !sawTotal || !sawBtime {
		return ids, fmt.Errorf("no cpu or btime line: %w", errSyntax)
	}
	return ids, nil
}

// parseTicks reads user nice system idle [iowait irq softirq steal ...];
// kernels before 2.6 stop after idle, later fields count as zero. Guest
// time is already part of user and nice, so it is not read.
func parseTicks(b []byte, t *Ticks) error {
	dst := [...]*uint64{&t.User, &t.Nice, &t.System, &t.Idle, &t.IOWait, &t.IRQ, &t.SoftIRQ, &t.Steal}
	for i, p := range dst {
		var f []byte
		f, b = nextField(b)
		if len(f) == 0 && i >= 4 {
			*p = 0
			continue
		}
		v, ok := parseUint(f)
		if !ok {
			return fmt.Errorf("field %d %q: %w", i+1, f, errSyntax)
		}
		*p = v
	}
	return nil
}

// parseMeminfo reads the fields of Memory from /proc/meminfo, in bytes.
func parseMeminfo(b []byte, m *Memory) error {
	*m = Memory{}
	for len(b) > 0 {
		var line []byte
		line, b = nextLine(b)
		colon := bytes.IndexByte(line, ':')
		if colon < 0 {
			continue
		}
		var dst *uint64
		switch string(line[:colon]) {
		case "MemTotal":
			dst = &m.Total
		case "MemFree":
			dst = &m.Free
		case "MemAvailable":
			dst = &m.Available
		case "Buffers":
			dst = &m.Buffers
		case "Cached":
			dst = &m.Cached
		case "Shmem":
			dst = &m.Shared
		case "SwapTotal":
			dst = &m.SwapTotal
		case "SwapFree":
			dst = &m.SwapFree
		default:
			continue
		}
		f, rest := nextField(line[colon+1:])
		v, ok := parseUint(f)
		if !ok {
			return fmt.Errorf("%s %q: %w", line[:colon], f, errSyntax)
		}
		if unit, _ := nextField(rest); string(unit) == "kB" {
			if v > ^uint64(0)/1024 {
				return fmt.Errorf("%s %q: too large: %w", line[:colon], f, errSyntax)
			}
			v *= 1024
		}
		*dst = v
	}
	if m.Total == 0 {
		return fmt.Errorf("no MemTotal: %w", errSyntax)
	}
	return nil
}

// parseNetDev reads every device line of /proc/net/dev into devs, reusing
// its elements and names.
func parseNetDev(b []byte, devs []NetDev) ([]NetDev, error) {
	devs = devs[:0]
	for n := 0; len(b) > 0; n++ {
		var line []byte
		line, b = nextLine(b)
		if n < 2 || len(line) == 0 { // two header lines
			continue
		}
		colon := bytes.LastIndexByte(line, ':')
		if colon < 0 {
			return devs, fmt.Errorf("line %d has no colon: %w", n+1, errSyntax)
		}
		name := bytes.TrimSpace(line[:colon])
		if len(name) == 0 {
			return devs, fmt.Errorf("line %d has no device name: %w", n+1, errSyntax)
		}
		if len(devs) < cap(devs) {
			devs = devs[:len(devs)+1]
		} else {
			devs = append(devs, NetDev{})
		}
		d := &devs[len(devs)-1]
		if d.Name != string(name) {
			d.Name = string(name)
		}
		var v [16]uint64
		rest := line[colon+1:]
		for i := range v {
			var f []byte
			f, rest = nextField(rest)
			var ok bool
			if v[i], ok = parseUint(f); !ok {
				return devs, fmt.Errorf("%s field %d %q: %w", name, i+1, f, errSyntax)
			}
		}
		d.RxBytes, d.RxPackets, d.RxErrors, d.RxDrops = v[0], v[1], v[2], v[3]
		d.TxBytes, d.TxPackets, d.TxErrors, d.TxDrops = v[8], v[9], v[10], v[11]
	}
	return devs, nil
}

// parseLoadavg reads "1.00 0.50 0.25 2/345 6789". procfs's LoadAvg has
// only the first three fields.
func parseLoadavg(b []byte, l *Load) error {
	b = bytes.TrimSpace(b)
	var f [5][]byte
	rest := b
	for i := range f {
		f[i], rest = nextField(rest)
	}
	if len(rest) != 0 {
		return fmt.Errorf("%q: trailing fields: %w", b, errSyntax)
	}
	loads := [...]*float64{&l.One, &l.Five, &l.Fifteen}
	for i, p := range loads {
		v, err := strconv.ParseFloat(string(f[i]), 64)
		if err != nil || v < 0 || v > 1e9 {
			return fmt.Errorf("load %q: %w", f[i], errSyntax)
		}
		*p = v
	}
	slash := bytes.IndexByte(f[3], '/')
	if slash < 0 {
		return fmt.Errorf("%q has no slash: %w", f[3], errSyntax)
	}
	running, ok1 := parseUint(f[3][:slash])
	total, ok2 := parseUint(f[3][slash+1:])
	pid, ok3 := parseUint(f[4])
	if !ok1 || !ok2 || !ok3 || running > 1<<32-1 || total > 1<<32-1 || pid > 1<<32-1 {
		return fmt.Errorf("%q: %w", b, errSyntax)
	}
	l.Running, l.Total, l.LastPID = uint32(running), uint32(total), uint32(pid)
	return nil
}

// ReadBootID reads <procRoot>/sys/kernel/random/boot_id, which the kernel
// sets to a new random UUID at every boot.
func ReadBootID(procRoot string) ([16]byte, error) {
	path := filepath.Join(procRoot, "sys/kernel/random/boot_id")
	b, err := os.ReadFile(path)
	if err != nil {
		return [16]byte{}, err
	}
	id, err := ParseBootID(b)
	if err != nil {
		return id, fmt.Errorf("%s: %w", path, err)
	}
	return id, nil
}

// ParseBootID reads a UUID in its text form, "8-4-4-4-12" hex digits,
// with an optional trailing newline.
func ParseBootID(b []byte) ([16]byte, error) {
	var id [16]byte
	b = bytes.TrimSuffix(b, []byte("\n"))
	if len(b) != 36 || b[8] != '-' || b[13] != '-' || b[18] != '-' || b[23] != '-' {
		return id, fmt.Errorf("boot id %q is not a UUID: %w", b, errSyntax)
	}
	var digits [32]byte
	n := 0
	for i, c := range b {
		if i == 8 || i == 13 || i == 18 || i == 23 {
			continue
		}
		digits[n] = c
		n++
	}
	if _, err := hex.Decode(id[:], digits[:]); err != nil {
		return id, fmt.Errorf("boot id %q is not a UUID: %w", b, errSyntax)
	}
	return id, nil
}
