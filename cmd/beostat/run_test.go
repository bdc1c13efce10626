package main

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hoststat/hoststat/beostat"
	"github.com/hoststat/hoststat/beostat/beostattest"
	"github.com/hoststat/hoststat/shm"
	"github.com/hoststat/hoststat/telemetry/sample"
)

// newTable makes a real table in a temp dir: node 1 up with the readings
// of beostattest.PutTwoSamples, and node 4 down.
func newTable(t *testing.T) string {
	dir := t.TempDir()
	w, err := shm.Create(dir, shm.WriterOptions{DownAfter: 10 * time.Second, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	now := time.Now()
	for node, seen := range map[int]time.Time{1: now.Add(-time.Second), 4: now.Add(-2 * time.Minute)} {
		if err := beostattest.PutTwoSamples(w, node, seen); err != nil {
			t.Fatal(err)
		}
	}
	w.SetUpdateRequest(now.Add(-3 * time.Second))
	return dir
}

func runCmd(t *testing.T, ctx context.Context, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut strings.Builder
	code := run(ctx, args, &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestTable(t *testing.T) {
	dir := newTable(t)
	code, out, errOut := runCmd(t, context.Background(), "--shm-dir", dir)
	if code != 0 || errOut != "" {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 5 {
		t.Fatalf("want a summary, a heading, 2 node lines and the count by state:\n%s", out)
	}
	if lines[4] != "1 up, 1 down, 0 unknown" {
		t.Errorf("last line %q", lines[4])
	}
	if !strings.Contains(lines[0], filepath.Join(dir, shm.FileName)) || !strings.Contains(lines[0], "2 nodes (down after 10s)") ||
		!strings.Contains(lines[0], "last update request 3.0s ago") {
		t.Errorf("summary line %q", lines[0])
	}
	for _, h := range []string{"NODE", "ADDRESS", "HOST", "STATE", "AGE", "LOAD", "CPU%", "MEMORY USED/TOTAL", "RX/s", "TX/s"} {
		if !strings.Contains(lines[1], h) {
			t.Errorf("heading %q lacks %s", lines[1], h)
		}
	}
	want1 := []string{"1", "10.0.0.1:3040", "node1", "up", "1.0s", "1.50", "37.5", "4GiB", "/", "16GiB", "1000B", "500B"}
	if got := strings.Fields(lines[2]); strings.Join(got, " ") != strings.Join(want1, " ") {
		t.Errorf("node 1 line %q, want fields %q", lines[2], want1)
	}
	if f := strings.Fields(lines[3]); len(f) < 5 || f[0] != "4" || f[2] != "node4" || f[3] != "down" || f[4] != "2m00s" {
		t.Errorf("node 4 line %q", lines[3])
	}
	// The figures of the down node are its last ones, and say so.
	if !strings.Contains(lines[3], "stale") || strings.Contains(lines[2], "stale") {
		t.Errorf("stale marks: node 1 %q, node 4 %q", lines[2], lines[3])
	}
}

func TestJSON(t *testing.T) {
	dir := newTable(t)
	code, out, errOut := runCmd(t, context.Background(), "--shm-dir", dir, "--json")
	if code != 0 || errOut != "" {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	var nodes []map[string]any
	if err := json.Unmarshal([]byte(out), &nodes); err != nil {
		t.Fatalf("%v in %s", err, out)
	}
	if len(nodes) != 2 {
		t.Fatalf("%d objects", len(nodes))
	}
	n := nodes[0]
	if n["node"] != 1.0 || n["addr"] != "10.0.0.1:3040" || n["up"] != true || n["cpus"] != 2.0 ||
		n["mem_total"] != float64(16<<30) || n["load1"] != 1.5 || n["cpu_percent"] != 37.5 || n["rx_bytes_per_sec"] != 1000.0 ||
		n["hostname"] != "node1" || n["uptime_seconds"] != 3602.0 {
		t.Errorf("node 1 = %v", n)
	}
	seen, err := time.Parse(time.RFC3339, n["last_seen"].(string))
	if err != nil || time.Since(seen) > time.Minute {
		t.Errorf("last_seen %v: %v", n["last_seen"], err)
	}
	// False is left out: node 1 is not stale, node 4 not up.
	if _, ok := nodes[1]["up"]; ok || nodes[1]["node"] != 4.0 || nodes[1]["state"] != "down" || nodes[1]["stale"] != true ||
		n["state"] != "up" || n["stale"] != nil {
		t.Errorf("node 4 = %v (node 1 state %v, stale %v)", nodes[1], n["state"], n["stale"])
	}
	// Typed decoding holds too: node is an integer, addr a string.
	var typed []struct {
		Node     int       `json:"node"`
		Addr     string    `json:"addr"`
		Up       bool      `json:"up"`
		LastSeen time.Time `json:"last_seen"`
		CPUs     int       `json:"cpus"`
		MemTotal uint64    `json:"mem_total"`
		Load1    float64   `json:"load1"`
	}
	if err := json.Unmarshal([]byte(out), &typed); err != nil || typed[0].MemTotal != 16<<30 {
		t.Errorf("typed decode: %v %+v", err, typed)
	}
}

func TestNodeDetail(t *testing.T) {
	dir := newTable(t)
	code, out, errOut := runCmd(t, context.Background(), "--shm-dir", dir, "--node", "1")
	if code != 0 || errOut != "" {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	for _, want := range []string{
		"node 1  node1  10.0.0.1:3040  up, last seen 1.0s ago",
		"up 1h00m",
		"load     1.50 1.00 0.50  (2 running of 300, last pid 4242)",
		"memory   4GiB used of 16GiB",
		"swap     0B used of 1GiB",
		"cpu      37.5% busy over 2 CPUs",
		"boot id 01000000000000000000000000000000",
	} {
		if strings.Contains(out, "STALE") {
			t.Errorf("an up node marked stale:\n%s", out)
		}
		if !strings.Contains(out, want) {
			t.Errorf("detail lacks %q:\n%s", want, out)
		}
	}
	// Disks and filesystems, column by column.
	words := strings.Join(strings.Fields(out), " ")
	for _, want := range []string{
		"DISK READ/s WRITE/s BUSY% READ WRITTEN sda 2KiB 1000B 25.0 1MiB 2MiB",
		"/ ext4 60GiB 100GiB 35GiB 60% 600 of 1000",
		"/scratch xfs - - - - not answering (statfs hung on the node)",
	} {
		if !strings.Contains(words, want) {
			t.Errorf("detail lacks %q:\n%s", want, out)
		}
	}
	cpuLine := func(prefix string) []string {
		for l := range strings.SplitSeq(out, "\n") {
			if f := strings.Fields(l); len(f) > 0 && f[0] == prefix {
				return f
			}
		}
		return nil
	}
	if f := cpuLine("0"); strings.Join(f, " ") != "0 50.0 3000.0 Test CPU" {
		t.Errorf("cpu 0 line %q", f)
	}
	if f := cpuLine("1"); strings.Join(f, " ") != "1 25.0 2000.0 Test CPU" {
		t.Errorf("cpu 1 line %q", f)
	}
	if f := cpuLine("eth0"); len(f) < 6 || f[1] != "1000B" || f[2] != "500B" || f[3] != "11.7KiB" || f[5] != "7" {
		t.Errorf("eth0 line %q", f)
	}

	if _, out4, _ := runCmd(t, context.Background(), "--shm-dir", dir, "--node", "4"); !strings.Contains(out4, "STALE: the node is down") {
		t.Errorf("down node's detail not marked stale:\n%s", out4)
	}

	code, out, _ = runCmd(t, context.Background(), "--shm-dir", dir, "--node", "1", "--json")
	var d []struct {
		Node   int `json:"node"`
		PerCPU []struct {
			Percent float64 `json:"percent"`
			MHz     float64 `json:"mhz"`
		} `json:"per_cpu"`
		Net []struct {
			Name string `json:"name"`
		} `json:"net"`
	}
	if err := json.Unmarshal([]byte(out), &d); code != 0 || err != nil || len(d) != 1 || d[0].Node != 1 ||
		len(d[0].PerCPU) != 2 || d[0].PerCPU[1].Percent != 25 || len(d[0].Net) != 2 {
		t.Errorf("--node --json: exit %d, %v: %s", code, err, out)
	}
}

// openPTY opens a pseudo-terminal: the side a program writes to (its
// terminal) and the side that reads what it wrote.
func openPTY(t *testing.T) (term, read *os.File) {
	t.Helper()
	ptmx, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ptmx.Close() })
	if err := unix.IoctlSetPointerInt(int(ptmx.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(ptmx.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	pts, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pts.Close() })
	return pts, ptmx
}

// runTo runs beostat with stdout on out (a terminal or a pipe), and
// returns what the reading end got.
func runTo(t *testing.T, out, read *os.File, args ...string) (int, string) {
	t.Helper()
	got := make(chan string)
	go func() {
		var b strings.Builder
		buf := make([]byte, 4096)
		for {
			n, err := read.Read(buf)
			b.Write(buf[:n])
			if err != nil || strings.Count(b.String(), "NODE") >= 3 {
				break
			}
		}
		got <- b.String()
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	var errOut strings.Builder
	code := run(ctx, args, out, &errOut)
	out.Close()
	if errOut.Len() > 0 {
		t.Errorf("stderr %q", errOut.String())
	}
	select {
	case s := <-got:
		return code, s
	case <-time.After(10 * time.Second):
		t.Fatal("no output")
		return code, ""
	}
}

// On a terminal --watch redraws in place.
func TestWatchRedrawsTerminal(t *testing.T) {
	dir := newTable(t)
	term, read := openPTY(t)
	code, out := runTo(t, term, read, "--shm-dir", dir, "--watch", "--interval", "50ms")
	if frames := strings.Count(out, "\x1b[H\x1b[2J"); code != 0 || frames < 2 || strings.Count(out, "10.0.0.1:3040") < frames {
		t.Errorf("exit %d, %d frames in:\n%q", code, frames, out)
	}
}

// Into a pipe --watch writes frame after frame with no control codes.
func TestWatchIntoPipe(t *testing.T) {
	dir := newTable(t)
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	code, out := runTo(t, pw, pr, "--shm-dir", dir, "--watch", "--interval", "50ms")
	if code != 0 || strings.Count(out, "10.0.0.1:3040") < 2 || strings.ContainsAny(out, "\x1b\r") {
		t.Errorf("exit %d, into a pipe:\n%q", code, out)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 250*time.Millisecond)
	defer cancel()
	code, out, _ = runCmd(t, ctx, "--shm-dir", dir, "-w", "-i", "50ms", "--json")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) < 2 || strings.Contains(out, "\x1b") {
		t.Fatalf("--watch --json: exit %d, %q", code, out)
	}
	for _, l := range lines {
		var v []map[string]any
		if err := json.Unmarshal([]byte(l), &v); err != nil || len(v) != 2 {
			t.Errorf("line %q: %v", l, err)
		}
	}
}

// What nodes send is shown escaped: an escape sequence in a CPU model or a
// device name never reaches the terminal.
func TestNodeStringsEscaped(t *testing.T) {
	dir := t.TempDir()
	w, err := shm.Create(dir, shm.WriterOptions{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	now := time.Now()
	s := &sample.Sample{Time: now,
		Total: sample.Ticks{User: 1, Idle: 2},
		CPUs:  []sample.CPU{{Ticks: sample.Ticks{User: 1, Idle: 2}, Model: "Evil\x1b[2J\x1b]0;owned\x07 CPU"}},
		Net:   []sample.NetDev{{Name: "eth\x1b[31m\x9b"}},
	}
	if err := w.Put(7, beostattest.Addr(7), now, s); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := runCmd(t, context.Background(), "--shm-dir", dir, "--node", "7")
	if code != 0 || errOut != "" {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	if strings.ContainsAny(out, "\x1b\x07\x9b") || !strings.Contains(out, `Evil\x1b[2J\x1b]0;owned\a CPU`) || !strings.Contains(out, `eth\x1b[31m\x9b`) {
		t.Errorf("raw control bytes or no escapes in:\n%q", out)
	}
	// JSON escapes them its own way, and rounds: 1 of 3 ticks busy is
	// 33.33 %, not 33.33333206176758.
	code, out, _ = runCmd(t, context.Background(), "--shm-dir", dir, "--json")
	if code != 0 || strings.Contains(out, "\x1b") || !strings.Contains(out, `"cpu_percent":33.33,`) {
		t.Errorf("--json: exit %d, %s", code, out)
	}
}

// A record left mid-write by a dead recvstats makes that node unknown;
// every other node still lists, as text and as JSON.
func TestStuckRecordOnlyThatNode(t *testing.T) {
	dir := t.TempDir()
	w, err := shm.Create(dir, shm.WriterOptions{DownAfter: 10 * time.Second, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	for _, n := range []int{1, 4} {
		if err := beostattest.PutTwoSamples(w, n, now); err != nil {
			t.Fatal(err)
		}
	}
	w.Close() // the writer is gone
	if err := beostattest.LeaveMidWrite(dir, 1); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := runCmd(t, context.Background(), "--shm-dir", dir)
	if code != 0 || errOut != "" {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	if !regexp.MustCompile(`(?m)^\s+1\s+-\s+-\s+unknown .*died mid-write`).MatchString(out) ||
		!regexp.MustCompile(`(?m)^\s+4\s+10\.0\.0\.4:3040\s+node4\s+up\s+\S+\s+1\.50`).MatchString(out) ||
		!strings.Contains(out, "no recvstats") {
		t.Errorf("table:\n%s", out)
	}
	code, out, _ = runCmd(t, context.Background(), "--shm-dir", dir, "--json")
	var nodes []struct {
		Node  int    `json:"node"`
		State string `json:"state"`
		Error string `json:"error"`
		Addr  string `json:"addr"`
	}
	if err := json.Unmarshal([]byte(out), &nodes); code != 0 || err != nil || len(nodes) != 2 ||
		nodes[0].State != "unknown" || nodes[0].Error == "" || nodes[1].Node != 4 || nodes[1].Addr != "10.0.0.4:3040" {
		t.Errorf("--json: exit %d, %v: %s", code, err, out)
	}
}

// The header says whether the writer is alive, not just its pid.
func TestWriterLiveness(t *testing.T) {
	dir := newTable(t)
	_, out, _ := runCmd(t, context.Background(), "--shm-dir", dir)
	if want := fmt.Sprintf("recvstats pid %d running since ", os.Getpid()); !strings.Contains(out, want) {
		t.Errorf("live writer: want %q in\n%s", want, out)
	}
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	if err := beostattest.SetWriterPID(dir, dead.Process.Pid); err != nil {
		t.Fatal(err)
	}
	_, out, _ = runCmd(t, context.Background(), "--shm-dir", dir)
	if want := fmt.Sprintf("recvstats pid %d is not running", dead.Process.Pid); !strings.Contains(out, want) {
		t.Errorf("dead writer: want %q in\n%s", want, out)
	}
}

func TestExitCodes(t *testing.T) {
	dir := newTable(t)
	empty := t.TempDir()
	cases := []struct {
		args   []string
		code   int
		stdout string
		stderr string
	}{
		{[]string{"-h"}, 0, "Usage: beostat", ""},
		{[]string{"--help"}, 0, "--shm-dir", ""},
		{[]string{"-v"}, 0, "beostat (hoststat) ", ""},
		{[]string{"--version"}, 0, "beostat (hoststat) ", ""},
		{[]string{"--bogus"}, 2, "", "unknown flag: --bogus"},
		{[]string{"--shm-dir", dir, "extra"}, 2, "", `unexpected argument "extra"`},
		{[]string{"--shm-dir", dir, "--node", "-3"}, 2, "", "--node -3"},
		{[]string{"--shm-dir", dir, "--interval", "0s"}, 2, "", "--interval 0s"},
		{[]string{"--shm-dir", dir, "--node", "x"}, 2, "", "invalid argument"},
		{[]string{"--shm-dir", dir, "--node", "2"}, 1, "", "node 2: never seen"},
		{[]string{"--shm-dir", dir, "--format", "xml"}, 2, "", `--format "xml": want text, json, jsonl or csv`},
		{[]string{"--shm-dir", dir, "--json", "--format", "csv"}, 2, "", "--json and --format csv disagree"},
		{[]string{"--shm-dir", dir, "--fields", "node,bogus"}, 2, "", `--fields: unknown field "bogus"`},
		{[]string{"--shm-dir", dir, "--node", "9"}, 1, "", "node 9: no such node"},
		{[]string{"--shm-dir", empty}, 1, "", filepath.Join(empty, shm.FileName) + ": recvstats is probably not running"},
	}
	for _, c := range cases {
		code, out, errOut := runCmd(t, context.Background(), c.args...)
		if code != c.code || !strings.Contains(out, c.stdout) || !strings.Contains(errOut, c.stderr) {
			t.Errorf("beostat %q: exit %d, stdout %q, stderr %q; want %d, %q, %q", c.args, code, out, errOut, c.code, c.stdout, c.stderr)
		}
	}
}

// A node's JSON holds what the node has: no zero swap, no boot id it did
// not send, no false flags; its readings are there even when zero.
func TestJSONLeavesOutWhatANodeLacks(t *testing.T) {
	dir := t.TempDir()
	w, err := shm.Create(dir, shm.WriterOptions{DownAfter: time.Minute, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	now := time.Now()
	s := &sample.Sample{Time: now, Total: sample.Ticks{Idle: 100}, CPUs: []sample.CPU{{Ticks: sample.Ticks{Idle: 100}}},
		Memory: sample.Memory{Total: 1 << 30, Free: 1 << 29}}
	if err := w.Put(3, beostattest.Addr(3), now, s); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := runCmd(t, context.Background(), "--shm-dir", dir, "--json")
	if code != 0 || errOut != "" {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	var nodes []map[string]any
	if err := json.Unmarshal([]byte(out), &nodes); err != nil || len(nodes) != 1 {
		t.Fatalf("%v: %s", err, out)
	}
	n := nodes[0]
	for _, absent := range []string{"stale", "error", "boot_id", "boot_time", "swap_total", "swap_free", "mem_available", "mem_cached", "net_devs", "last_pid"} {
		if v, ok := n[absent]; ok {
			t.Errorf("%s = %v present in %s", absent, v, out)
		}
	}
	for key, want := range map[string]any{"node": 3.0, "state": "up", "up": true, "cpus": 1.0, "cpu_percent": 0.0, "load1": 0.0,
		"mem_total": float64(1 << 30), "mem_used": float64(1 << 29), "rx_bytes_per_sec": 0.0} {
		if n[key] != want {
			t.Errorf("%s = %v, want %v, in %s", key, n[key], want, out)
		}
	}
}

// --fields picks the figures of each node, in every format: JSON Lines
// with exactly those keys, CSV with a header, text in columns.
func TestFieldsAndFormats(t *testing.T) {
	dir := newTable(t)
	fields := []string{"--shm-dir", dir, "--fields", "node,state,cpu,load1,mem_used"}

	code, out, errOut := runCmd(t, context.Background(), append(fields, "--format", "jsonl")...)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || errOut != "" || len(lines) != 2 {
		t.Fatalf("jsonl: exit %d, stderr %q, %q", code, errOut, out)
	}
	want := []string{`{"node":1,"state":"up","cpu_percent":37.5,"load1":1.5,"mem_used":4294967296}`,
		`{"node":4,"state":"down","cpu_percent":37.5,"load1":1.5,"mem_used":4294967296}`}
	for i := range want {
		if lines[i] != want[i] {
			t.Errorf("jsonl line %d = %s, want %s", i, lines[i], want[i])
		}
	}

	code, out, _ = runCmd(t, context.Background(), append(fields, "--format", "csv")...)
	recs, err := csv.NewReader(strings.NewReader(out)).ReadAll()
	if code != 0 || err != nil {
		t.Fatalf("csv: exit %d, %v: %q", code, err, out)
	}
	wantCSV := [][]string{{"node", "state", "cpu_percent", "load1", "mem_used"}, {"1", "up", "37.5", "1.5", "4294967296"}, {"4", "down", "37.5", "1.5", "4294967296"}}
	if fmt.Sprint(recs) != fmt.Sprint(wantCSV) {
		t.Errorf("csv %q, want %q", recs, wantCSV)
	}

	// CSV of every field: one column per field, absent ones empty.
	code, out, _ = runCmd(t, context.Background(), "--shm-dir", dir, "-o", "csv")
	recs, err = csv.NewReader(strings.NewReader(out)).ReadAll()
	if code != 0 || err != nil || len(recs) != 3 || len(recs[0]) != len(beostat.AllFields()) || recs[0][0] != "node" {
		t.Fatalf("csv of every field: exit %d, %v: %q", code, err, out)
	}
	if col := slices.Index(recs[0], "stale"); recs[1][col] != "" || recs[2][col] != "true" {
		t.Errorf("stale column: node 1 %q, node 4 %q", recs[1][col], recs[2][col])
	}

	code, out, _ = runCmd(t, context.Background(), append(fields, "--format", "text")...)
	lines = strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != 3 || strings.Join(strings.Fields(lines[0]), " ") != "NODE STATE CPU_PERCENT LOAD1 MEM_USED" ||
		strings.Join(strings.Fields(lines[1]), " ") != "1 up 37.5 1.5 4294967296" {
		t.Errorf("text with fields: exit %d:\n%s", code, out)
	}

	// --json is one array on one line, the same objects as jsonl.
	code, out, _ = runCmd(t, context.Background(), append(fields, "--json")...)
	if code != 0 || out != "["+want[0]+","+want[1]+"]\n" {
		t.Errorf("--json --fields: exit %d, %s", code, out)
	}
}

// --history prints what the history file holds for a node: one-minute
// points, then full-resolution ones, oldest first; --since cuts them.
func TestHistory(t *testing.T) {
	dir := t.TempDir()
	w, err := shm.Create(dir, shm.WriterOptions{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	h, err := w.OpenHistory(shm.HistoryOptions{Nodes: 4, Fine: 60})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	now := time.Now().Truncate(time.Second)
	for i := 179; i >= 0; i-- { // the last three minutes, one point a second
		f := shm.Figures{Up: true, CPUPercent: 12.5, Load1: 0.75, MemUsed: 3 << 30, RxBytesPerSec: 1000, TxBytesPerSec: 2048}
		if i == 0 {
			f = shm.Figures{} // down now
		}
		if err := h.Append(5, now.Add(-time.Duration(i)*time.Second), f); err != nil {
			t.Fatal(err)
		}
	}
	code, out, errOut := runCmd(t, context.Background(), "--shm-dir", dir, "--history", "5", "--json")
	var got struct {
		Node   int `json:"node"`
		Points []struct {
			Time       time.Time `json:"time"`
			Resolution string    `json:"resolution"`
			Up         bool      `json:"up"`
			CPUPercent *float64  `json:"cpu_percent"`
			MemUsed    uint64    `json:"mem_used"`
			TxRate     float64   `json:"tx_bytes_per_sec"`
		} `json:"points"`
	}
	if err := json.Unmarshal([]byte(out), &got); code != 0 || errOut != "" || err != nil {
		t.Fatalf("exit %d, stderr %q, %v: %s", code, errOut, err, out)
	}
	n := len(got.Points)
	if got.Node != 5 || n < 61 || got.Points[0].Resolution != "1m" || got.Points[n-60].Resolution != "full" {
		t.Fatalf("%d points: %s", n, out)
	}
	first, last := got.Points[n-60], got.Points[n-1]
	if !first.Up || *first.CPUPercent != 12.5 || first.MemUsed != 3<<30 || first.TxRate != 2048 || last.Up || last.CPUPercent != nil ||
		!last.Time.Equal(now) || !got.Points[n-2].Time.Equal(now.Add(-time.Second)) {
		t.Errorf("points %+v ... %+v", first, last)
	}
	for _, p := range got.Points[:n-60] {
		if !p.Up || *p.CPUPercent != 12.5 || p.Time.Second() != 0 {
			t.Errorf("one-minute point %+v", p)
		}
	}

	code, out, _ = runCmd(t, context.Background(), "--shm-dir", dir, "--history", "5", "--since", "10s")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	// 10 s before the command's now: 10 points, 11 if it ran within the second.
	if n := len(lines) - 2; code != 0 || (n != 10 && n != 11) || !strings.Contains(lines[0], fmt.Sprintf("0 one-minute points, %d full-resolution points", n)) ||
		strings.Join(strings.Fields(lines[2])[1:], " ") != "full up 12.5 0.75 3GiB 0B 1000B 2KiB" || !strings.HasSuffix(lines[n+1], "full   down") {
		t.Errorf("--since 10s: exit %d:\n%s", code, out)
	}

	if code, _, errOut = runCmd(t, context.Background(), "--shm-dir", dir, "--history", "6"); code != 1 || !strings.Contains(errOut, "node 6: no history") {
		t.Errorf("node 6: exit %d, %q", code, errOut)
	}
	empty := t.TempDir()
	if code, _, errOut = runCmd(t, context.Background(), "--shm-dir", empty, "--history", "5"); code != 1 || !strings.Contains(errOut, "no history at") {
		t.Errorf("no file: exit %d, %q", code, errOut)
	}
	if code, _, errOut = runCmd(t, context.Background(), "--shm-dir", dir, "--history", "5", "--node", "1"); code != 2 {
		t.Errorf("--history with --node: exit %d, %q", code, errOut)
	}
}

func TestAppendFixed(t *testing.T) {
	for _, c := range []struct {
		x    float64
		d    int
		want string
	}{{0, 1, "0.0"}, {37.5, 1, "37.5"}, {1.5, 2, "1.50"}, {0.004, 2, "0.00"}, {0.006, 2, "0.01"}, {99.96, 1, "100.0"},
		{12345.678, 3, "12345.678"}, {1023.96, 1, "1024.0"}, {7, 0, "7"}, {math.Inf(1), 1, "+Inf"}, {-2.25, 1, "-2.2"}} {
		if got := string(appendFixed(nil, c.x, c.d)); got != c.want {
			t.Errorf("appendFixed(%v, %d) = %s, want %s", c.x, c.d, got, c.want)
		}
	}
}
