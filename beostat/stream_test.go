package beostat

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hoststat/hoststat/beostat/beostattest"
)

// The JSON a Status writes of itself decodes back into the same Status:
// its field names are the tags', and what it leaves out is zero.
func TestStatusJSONRoundTrip(t *testing.T) {
	_, tab, _ := newTable(t)
	st, err := tab.Status()
	if err != nil || len(st) != 2 {
		t.Fatal(st, err)
	}
	st = append(st, Status{Node: 9, State: StateUnknown, Error: "a \"quoted\"\x1b error\xff"})
	for _, s := range st {
		// The table's times are to the nanosecond; the JSON's to the
		// millisecond, which is all a node's clock means.
		for _, tp := range []*time.Time{&s.LastSeen, &s.SampleTime, &s.BootTime} {
			*tp = tp.Truncate(time.Millisecond)
		}
		b, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		var got Status
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatalf("%v: %s", err, b)
		}
		if s.State == StateUnknown {
			s.Error = strings.ToValidUTF8(s.Error, "\uFFFD")
		}
		if fmt.Sprint(got) != fmt.Sprint(s) || !got.LastSeen.Equal(s.LastSeen) || !got.BootTime.Equal(s.BootTime) {
			t.Errorf("node %d:\n %s\n decodes to %+v\n want      %+v", s.Node, b, got, s)
		}
	}
}

// Detail's JSON keeps the per-CPU and per-device parts beside the status.
func TestDetailJSON(t *testing.T) {
	_, tab, _ := newTable(t)
	d, err := tab.Detail(1)
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	var got Detail
	if err := json.Unmarshal(b, &got); err != nil || got.Node != 1 || got.State != StateUp || len(got.PerCPU) != 2 ||
		got.PerCPU[1].Percent != 25 || len(got.Net) != 2 || got.Net[1].Name != "eth0" || got.Net[1].RxBytesPerSec != 1000 {
		t.Errorf("%v: %s decodes to %+v", err, b, got)
	}
}

// The strings of streamed Statuses stay as they were when kept past the
// callback (they share blocks that are never rewritten).
func TestEachStringsStay(t *testing.T) {
	tab := benchTable(t, 1500)
	var kept []Status
	if err := tab.Each(func(s *Status) error {
		kept = append(kept, *s)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for _, s := range kept {
		id := ""
		if byte(s.Node) != 0 { // PutTwoSamples' boot id: node, 0, 0, …
			id = fmt.Sprintf("%02x%030x", byte(s.Node), 0)
		}
		if want := beostattest.Addr(s.Node).String(); s.Addr != want || s.BootID != id {
			t.Fatalf("node %d: addr %q boot id %q, want %q", s.Node, s.Addr, s.BootID, want)
		}
	}
}

func TestParseFields(t *testing.T) {
	f, err := ParseFields("node, state,cpu,load1,mem_used,rx")
	if err != nil || fmt.Sprint(f) != "[node state cpu_percent load1 mem_used rx_bytes_per_sec]" {
		t.Errorf("ParseFields = %v, %v", f, err)
	}
	for _, bad := range []string{"", "node,,state", "node,CPU", "per_cpu"} {
		if _, err := ParseFields(bad); err == nil {
			t.Errorf("ParseFields(%q) accepted", bad)
		}
	}
}

// streamAllocs is the allocations of one Each over a table of nodes
// nodes, every node written as JSON into a reused buffer.
func streamAllocs(t *testing.T, nodes int) float64 {
	tab := benchTable(t, nodes)
	buf := make([]byte, 0, 4096)
	count := 0
	each := func(s *Status) error {
		buf = s.AppendJSON(buf[:0], nil)
		count++
		return nil
	}
	allocs := testing.AllocsPerRun(5, func() {
		if err := tab.Each(each); err != nil {
			t.Fatal(err)
		}
	})
	if count != 6*nodes { // AllocsPerRun runs it once more to warm up
		t.Fatalf("Each saw %d nodes in 6 runs of %d", count, nodes)
	}
	return allocs
}

// Streaming a table allocates next to nothing per node (a block for the
// Statuses' strings every few hundred nodes) and keeps nothing per node,
// so memory does not grow with the table.
func TestEachMemoryPerNode(t *testing.T) {
	small, large := streamAllocs(t, 100), streamAllocs(t, 2000)
	perNode := (large - small) / 1900
	if perNode > 0.05 {
		t.Errorf("%.2f allocations per node (%v for 100 nodes, %v for 2000)", perNode, small, large)
	}
	t.Logf("%.2f allocations per node; %v for 100 nodes, %v for 2000", perNode, small, large)
}

// The JSON's times are time.Format's RFC 3339 to the millisecond in UTC.
func TestAppendTime(t *testing.T) {
	for _, tm := range []time.Time{
		time.Date(2026, 11, 30, 6, 1, 28, 123456789, time.UTC),
		time.Date(2026, 1, 2, 3, 4, 5, 120000000, time.FixedZone("x", 3600)),
		time.Date(1999, 12, 31, 23, 59, 59, 0, time.UTC),
		time.Date(12345, 1, 1, 0, 0, 0, 1e6, time.UTC),
		time.Unix(0, 1).UTC(),
	} {
		want := tm.UTC().Format("2006-01-02T15:04:05.999Z07:00")
		if got := string(appendTime(nil, tm)); got != want {
			t.Errorf("appendTime(%v) = %s, want %s", tm, got, want)
		}
	}
}
