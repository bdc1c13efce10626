package beostat

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Field is one figure of a Status, named as in its JSON. Scripts choose
// fields by name (beostat --fields node,state,cpu_percent).
type Field uint8

// The fields of a Status, in the order beostat prints them.
const (
	FieldNode Field = iota
	FieldState
	FieldError
	FieldStale
	FieldAddr
	FieldUp
	FieldLastSeen
	FieldAge
	FieldSampleTime
	FieldBootTime
	FieldBootID
	FieldCPUs
	FieldCPUPercent
	FieldMemTotal
	FieldMemUsed
	FieldMemFree
	FieldMemAvailable
	FieldMemBuffers
	FieldMemCached
	FieldMemShared
	FieldSwapTotal
	FieldSwapFree
	FieldLoad1
	FieldLoad5
	FieldLoad15
	FieldRunning
	FieldProcs
	FieldLastPID
	FieldNetDevs
	FieldRxRate
	FieldTxRate
	FieldHostname
	FieldUptime
	numFields
)

var fieldNames = [numFields]string{
	"node", "state", "error", "stale", "addr", "up", "last_seen", "age_seconds", "sample_time", "boot_time", "boot_id",
	"cpus", "cpu_percent", "mem_total", "mem_used", "mem_free", "mem_available", "mem_buffers", "mem_cached", "mem_shared",
	"swap_total", "swap_free", "load1", "load5", "load15", "procs_running", "procs_total", "last_pid", "net_devs",
	"rx_bytes_per_sec", "tx_bytes_per_sec", "hostname", "uptime_seconds",
}

// fieldAliases are short names scripts may use for the common fields.
var fieldAliases = map[string]Field{"cpu": FieldCPUPercent, "rx": FieldRxRate, "tx": FieldTxRate}

// String is the field's JSON name.
func (f Field) String() string {
	if f < numFields {
		return fieldNames[f]
	}
	return "field(" + strconv.Itoa(int(f)) + ")"
}

// AllFields is every field of a Status, in order.
func AllFields() []Field {
	all := make([]Field, numFields)
	for i := range all {
		all[i] = Field(i)
	}
	return all
}

// ParseFields reads a comma-separated list of field names (JSON names,
// or cpu, rx and tx for cpu_percent and the byte rates).
func ParseFields(list string) ([]Field, error) {
	var out []Field
	for name := range strings.SplitSeq(list, ",") {
		name = strings.TrimSpace(name)
		f, ok := fieldAliases[name]
		if !ok {
			i := 0
			for i < len(fieldNames) && fieldNames[i] != name {
				i++
			}
			if i == len(fieldNames) {
				return nil, fmt.Errorf("unknown field %q (fields: %s)", name, strings.Join(fieldNames[:], ","))
			}
			f = Field(i)
		}
		out = append(out, f)
	}
	return out, nil
}

// isReading tells the figures that are present whenever a node has been
// heard from, zero or not: a 0 % CPU or an idle network is a reading.
func isReading(f Field) bool {
	switch f {
	case FieldCPUPercent, FieldMemUsed, FieldLoad1, FieldLoad5, FieldLoad15, FieldRxRate, FieldTxRate, FieldAge:
		return true
	}
	return false
}

// Has reports whether s has field f. Node and state are always there; an
// unknown node has only its error besides; the readings (cpu_percent,
// mem_used, load1/5/15, the byte rates, age_seconds) are there whenever
// the node has been heard from; any other field only when it is not zero
// (false, empty, never, none), so a node's JSON holds what it has.
func (s *Status) Has(f Field) bool {
	switch {
	case f == FieldNode || f == FieldState:
		return true
	case s.State == StateUnknown:
		return f == FieldError && s.Error != ""
	case isReading(f):
		return !s.LastSeen.IsZero()
	}
	switch f {
	case FieldError:
		return s.Error != ""
	case FieldStale:
		return s.Stale
	case FieldAddr:
		return s.Addr != ""
	case FieldUp:
		return s.Up
	case FieldLastSeen:
		return !s.LastSeen.IsZero()
	case FieldSampleTime:
		return !s.SampleTime.IsZero()
	case FieldBootTime:
		return !s.BootTime.IsZero()
	case FieldBootID:
		return s.BootID != ""
	case FieldHostname:
		return s.Hostname != ""
	}
	return s.number(f) != 0
}

// number is a numeric field's value (0 for the others).
func (s *Status) number(f Field) float64 {
	switch f {
	case FieldNode:
		return float64(s.Node)
	case FieldAge:
		return s.AgeSeconds
	case FieldCPUs:
		return float64(s.CPUs)
	case FieldCPUPercent:
		return s.CPUPercent
	case FieldLoad1:
		return s.Load1
	case FieldLoad5:
		return s.Load5
	case FieldLoad15:
		return s.Load15
	case FieldRunning:
		return float64(s.Running)
	case FieldProcs:
		return float64(s.Procs)
	case FieldLastPID:
		return float64(s.LastPID)
	case FieldNetDevs:
		return float64(s.NetDevs)
	case FieldRxRate:
		return s.RxBytesPerSec
	case FieldTxRate:
		return s.TxBytesPerSec
	case FieldUptime:
		return s.UptimeSeconds
	}
	if b, ok := s.bytes(f); ok {
		return float64(b)
	}
	return 0
}

// bytes is a byte-count field's exact value.
func (s *Status) bytes(f Field) (uint64, bool) {
	switch f {
	case FieldMemTotal:
		return s.MemTotal, true
	case FieldMemUsed:
		return s.MemUsed, true
	case FieldMemFree:
		return s.MemFree, true
	case FieldMemAvailable:
		return s.MemAvailable, true
	case FieldMemBuffers:
		return s.MemBuffers, true
	case FieldMemCached:
		return s.MemCached, true
	case FieldMemShared:
		return s.MemShared, true
	case FieldSwapTotal:
		return s.SwapTotal, true
	case FieldSwapFree:
		return s.SwapFree, true
	}
	return 0, false
}

// AppendField appends f's value to dst as text: numbers in their shortest
// exact form (no float noise), times in RFC 3339 UTC, booleans as
// true/false, strings as they are (the caller escapes them for its
// format). It appends nothing when s lacks f (see Has).
func (s *Status) AppendField(dst []byte, f Field) []byte {
	if !s.Has(f) {
		return dst
	}
	switch f {
	case FieldState:
		return append(dst, s.State...)
	case FieldError:
		return append(dst, s.Error...)
	case FieldAddr:
		return append(dst, s.Addr...)
	case FieldBootID:
		return append(dst, s.BootID...)
	case FieldHostname:
		return append(dst, s.Hostname...)
	case FieldStale:
		return strconv.AppendBool(dst, s.Stale)
	case FieldUp:
		return strconv.AppendBool(dst, s.Up)
	case FieldLastSeen:
		return appendTime(dst, s.LastSeen)
	case FieldSampleTime:
		return appendTime(dst, s.SampleTime)
	case FieldBootTime:
		return appendTime(dst, s.BootTime)
	}
	if b, ok := s.bytes(f); ok {
		return strconv.AppendUint(dst, b, 10)
	}
	x := s.number(f)
	if x == math.Trunc(x) && math.Abs(x) < 1<<53 { // counts, whole rates
		return strconv.AppendInt(dst, int64(x), 10)
	}
	return strconv.AppendFloat(dst, x, 'f', -1, 64)
}

// appendTime appends t in RFC 3339 in UTC to the millisecond, trailing
// zeros cut (what the table's clocks mean, and short):
// 2026-11-30T06:01:28.12Z. It is time.Format's "2006-01-02T15:04:05.999Z07:00"
// for the years 0-9999, without the layout parsing, which was a quarter
// of beostat --json's time.
func appendTime(dst []byte, t time.Time) []byte {
	t = t.UTC()
	y, mo, d := t.Date()
	if y < 0 || y > 9999 {
		return t.AppendFormat(dst, "2006-01-02T15:04:05.999Z07:00")
	}
	h, mi, sec := t.Clock()
	dst = appendDigits(dst, y, 4)
	dst = appendDigits(append(dst, '-'), int(mo), 2)
	dst = appendDigits(append(dst, '-'), d, 2)
	dst = appendDigits(append(dst, 'T'), h, 2)
	dst = appendDigits(append(dst, ':'), mi, 2)
	dst = appendDigits(append(dst, ':'), sec, 2)
	if ms := t.Nanosecond() / 1e6; ms != 0 {
		dst = appendDigits(append(dst, '.'), ms, 3)
		for dst[len(dst)-1] == '0' {
			dst = dst[:len(dst)-1]
		}
	}
	return append(dst, 'Z')
}

// appendDigits appends n (≥ 0) in exactly width decimal digits.
func appendDigits(dst []byte, n, width int) []byte {
	for i := width - 1; i >= 0; i-- {
		dst = append(dst, 0)
	}
	for i := len(dst) - 1; i >= len(dst)-width; i-- {
		dst[i] = byte('0' + n%10)
		n /= 10
	}
	return dst
}

// quoted tells the fields that are JSON strings.
func quoted(f Field) bool {
	switch f {
	case FieldState, FieldError, FieldAddr, FieldBootID, FieldLastSeen, FieldSampleTime, FieldBootTime, FieldHostname:
		return true
	}
	return false
}

// AppendJSON appends s as one JSON object with the fields given (nil:
// every field) that s has (see Has), in the order given. Field names are
// those of Status's tags, so the object decodes back into a Status.
func (s *Status) AppendJSON(dst []byte, fields []Field) []byte {
	if fields == nil {
		fields = allFields[:]
	}
	dst = append(dst, '{')
	first := true
	for _, f := range fields {
		if !s.Has(f) {
			continue
		}
		if !first {
			dst = append(dst, ',')
		}
		first = false
		dst = append(dst, '"')
		dst = append(dst, f.String()...)
		dst = append(dst, '"', ':')
		if quoted(f) {
			dst = append(dst, '"')
			n := len(dst)
			dst = escapeJSON(s.AppendField(dst, f), n)
			dst = append(dst, '"')
			continue
		}
		dst = s.AppendField(dst, f)
	}
	return append(dst, '}')
}

var allFields = [numFields]Field(AllFields())

// escapeJSON turns dst[n:], text just appended, into the body of a JSON
// string: it is copied aside only when something needs escaping, which
// only text from the nodes or from errors might.
func escapeJSON(dst []byte, n int) []byte {
	clean := true
	for _, c := range dst[n:] {
		if c < 0x20 || c == '"' || c == '\\' || c >= utf8.RuneSelf {
			clean = false
			break
		}
	}
	if clean {
		return dst
	}
	raw := string(dst[n:])
	dst = dst[:n]
	for _, r := range raw { // invalid UTF-8 comes as U+FFFD
		switch {
		case r == '"' || r == '\\':
			dst = append(dst, '\\', byte(r))
		case r < 0x20:
			dst = append(dst, `\u00`...)
			dst = append(dst, hex.EncodeToString([]byte{byte(r)})...)
		default:
			dst = utf8.AppendRune(dst, r)
		}
	}
	return dst
}

// MarshalJSON is AppendJSON with every field: a node's object holds the
// fields it has.
func (s Status) MarshalJSON() ([]byte, error) { return s.AppendJSON(nil, nil), nil }

// MarshalJSON writes the Status's fields as Status.MarshalJSON does, then
// per_cpu and net. (Without it, Detail would take Status's MarshalJSON
// and lose them.)
func (d Detail) MarshalJSON() ([]byte, error) {
	cpus, err := json.Marshal(d.PerCPU)
	if err != nil {
		return nil, err
	}
	net, err := json.Marshal(d.Net)
	if err != nil {
		return nil, err
	}
	disks, err := json.Marshal(d.Disks)
	if err != nil {
		return nil, err
	}
	fss, err := json.Marshal(d.Filesystems)
	if err != nil {
		return nil, err
	}
	b := d.Status.AppendJSON(nil, nil)
	b = append(b[:len(b)-1], `,"per_cpu":`...)
	b = append(b, cpus...)
	b = append(b, `,"net":`...)
	b = append(b, net...)
	b = append(b, `,"disks":`...)
	b = append(b, disks...)
	b = append(b, `,"filesystems":`...)
	b = append(b, fss...)
	return append(b, '}'), nil
}
