package view

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"golang.org/x/sys/unix"

	"github.com/hoststat/hoststat/shm"
	"github.com/hoststat/hoststat/view/viewtest"
)

func startServer(t *testing.T, src Source, interval time.Duration) *httptest.Server {
	t.Helper()
	srv := NewServer(ServerConfig{Source: src, Interval: interval, MaxClients: 2})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { srv.Run(ctx); close(done) }()
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(func() { cancel(); <-done; hs.Close() })
	return hs
}

func get(t *testing.T, url string) (int, []byte, http.Header) {
	t.Helper()
	res, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, b, res.Header
}

func TestAPI(t *testing.T) {
	_, src := openLab(t, 3, time.Minute)
	hs := startServer(t, src, time.Second)

	code, body, h := get(t, hs.URL+"/api/nodes")
	var nodes NodesReply
	if code != 200 || h.Get("Content-Type") != "application/json" || json.Unmarshal(body, &nodes) != nil {
		t.Fatalf("/api/nodes: %d %s %s", code, h.Get("Content-Type"), body)
	}
	if len(nodes.Nodes) != 3 || nodes.Nodes[2].CPUPercent != 26 || nodes.Nodes[2].State != Up || !nodes.WriterAlive {
		t.Errorf("/api/nodes: %+v", nodes)
	}
	if !bytes.Contains(body, []byte(`"state":"up"`)) {
		t.Errorf("state not named in %s", body)
	}

	code, body, _ = get(t, hs.URL+"/api/node/2")
	var d DetailReply
	if code != 200 || json.Unmarshal(body, &d) != nil {
		t.Fatalf("/api/node/2: %d %s", code, body)
	}
	if len(d.PerCPU) != 2 || d.PerCPU[1].MHz != 2001 || len(d.Net) != 2 || d.Net[1].RxBytesPerSec != 26000 {
		t.Errorf("/api/node/2: %+v", d)
	}
	for path, want := range map[string]int{"/api/node/9": 404, "/api/node/x": 400, "/api/node/-1": 400, "/nope": 404} {
		if code, body, _ := get(t, hs.URL+path); code != want {
			t.Errorf("%s: %d %s, want %d", path, code, body, want)
		}
	}
	// The page and its assets are served from the binary.
	for _, p := range []string{"/", "/app.js", "/app.css"} {
		if code, body, h := get(t, hs.URL+p); code != 200 || len(body) == 0 || h.Get("Content-Security-Policy") == "" {
			t.Errorf("%s: %d, %d bytes, CSP %q", p, code, len(body), h.Get("Content-Security-Policy"))
		}
	}
}

// TestHistoryAPI: /api/node/N/history serves what the history file holds
// of the node, shaped into the two chart series, with its silences as
// gaps.
func TestHistoryAPI(t *testing.T) {
	tb, src := openLab(t, 3, 5*time.Second)
	hs := startServer(t, src, time.Second)
	if code, body, _ := get(t, hs.URL+"/api/node/1/history"); code != 404 || !strings.Contains(string(body), "recvstats keeps none") {
		t.Errorf("before the history file exists: %d %s", code, body)
	}
	// Three hours of history at one point per 20 s; node 1 silent from
	// 70 to 50 minutes ago.
	end := time.Now()
	tb.KeepHistory(t, 3*time.Hour, 20*time.Second, func(node int, at time.Time) (int, bool) {
		ago := end.Sub(at)
		return 10 + node*10, node != 1 || ago > 70*time.Minute || ago < 50*time.Minute
	})
	if err := tb.Step(); err != nil {
		t.Fatal(err)
	}
	code, body, h := get(t, hs.URL+"/api/node/1/history")
	var got History
	if code != 200 || h.Get("Content-Type") != "application/json" || json.Unmarshal(body, &got) != nil {
		t.Fatalf("history: %d %s", code, body)
	}
	r, err := shm.OpenHistoryReader(tb.Dir)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	_, fine, _, err := r.Read(1, time.Unix(got.Fine.From, 0))
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Fine.Time) != len(fine) || got.Fine.Time[len(fine)-1] != fine[len(fine)-1].Time.Unix() ||
		got.Fine.CPU[len(fine)-1] != fine[len(fine)-1].CPUPercent || got.Fine.Resolution != "full" {
		t.Errorf("fine series: %d points (last %v), the file has %d (last %+v)", len(got.Fine.Time), got.Fine.CPU[len(got.Fine.CPU)-1], len(fine), fine[len(fine)-1])
	}
	if got.MemTotal != viewtest.MemTotal || got.Minutes.Resolution != "1m" || got.Minutes.To-got.Minutes.From != 86400 {
		t.Errorf("history: mem total %d, minutes %s over %d s", got.MemTotal, got.Minutes.Resolution, got.Minutes.To-got.Minutes.From)
	}
	// Every minute of the three hours but the silence has a point of 20 %.
	// (159–162 minutes, one more when a minute begins while the test runs)
	if n := len(got.Minutes.Time); n < 155 || n > 163 || got.Minutes.CPU[0] != 20 {
		t.Errorf("minutes: %d points, first %v", n, got.Minutes.CPU[:1])
	}
	if g := got.Minutes.Gaps; len(g) != 1 || end.Unix()-g[0][0] < 70*60 || end.Unix()-g[0][0] > 72*60 {
		t.Errorf("minute gaps %v (now %d)", got.Minutes.Gaps, end.Unix())
	}
	// since shortens both; a node without history and bad input are refused.
	_, body, _ = get(t, hs.URL+"/api/node/2/history?since=30m")
	var short History
	if json.Unmarshal(body, &short) != nil || short.Minutes.To-short.Minutes.From != 1800 || len(short.Minutes.Time) > 31 ||
		len(short.Minutes.Time) < 29 || len(short.Fine.Time) == 0 {
		t.Errorf("since=30m: minutes over %d s, %d points; %d fine", short.Minutes.To-short.Minutes.From, len(short.Minutes.Time), len(short.Fine.Time))
	}
	for path, want := range map[string]int{"/api/node/7/history": 404, "/api/node/x/history": 400,
		"/api/node/1/history?since=yesterday": 400, "/api/node/1/history?since=-1h": 400} {
		if code, body, _ := get(t, hs.URL+path); code != want {
			t.Errorf("%s: %d %s, want %d", path, code, body, want)
		}
	}
}

func TestReadOnly(t *testing.T) {
	_, src := openLab(t, 1, time.Minute)
	hs := startServer(t, src, time.Second)
	for _, m := range []string{"POST", "PUT", "DELETE"} {
		req, _ := http.NewRequest(m, hs.URL+"/api/node/0", strings.NewReader("x"))
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusMethodNotAllowed {
			t.Errorf("%s: %d, want 405", m, res.StatusCode)
		}
	}
}

// sseReader reads server-sent events.
type sseReader struct{ r *bufio.Reader }

func (s sseReader) next(t *testing.T) (string, Frame) {
	t.Helper()
	var event string
	for {
		line, err := s.r.ReadString('\n')
		if err != nil {
			t.Fatalf("stream: %v", err)
		}
		line = strings.TrimRight(line, "\n")
		switch {
		case strings.HasPrefix(line, "event: "):
			event = line[len("event: "):]
		case strings.HasPrefix(line, "data: "):
			var f Frame
			if err := json.Unmarshal([]byte(line[len("data: "):]), &f); err != nil {
				t.Fatalf("frame %q: %v", line, err)
			}
			return event, f
		}
	}
}

func TestEventsFullThenDeltas(t *testing.T) {
	tb, src := openLab(t, 3, 2*time.Second)
	hs := startServer(t, src, 100*time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", hs.URL+"/events", nil)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if ct := res.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("content type %q", ct)
	}
	sse := sseReader{bufio.NewReader(res.Body)}
	ev, f := sse.next(t)
	if ev != "full" || !f.Full || len(f.Rows) != 3 {
		t.Fatalf("first event %s %+v", ev, f)
	}
	// Nodes 0 and 1 keep reporting, node 2 stops: a delta says it is down.
	tb.Stop(2)
	stop := make(chan struct{})
	done := tb.Run(t, 100*time.Millisecond, stop)
	defer func() { close(stop); <-done }()
	seq := f.Seq
	for {
		ev, f = sse.next(t)
		if ev != "delta" || f.Seq != seq+1 {
			t.Fatalf("event %s seq %d after %d", ev, f.Seq, seq)
		}
		seq = f.Seq
		for _, r := range f.Rows {
			if r[0] != 2 && State(r[1]) == Down {
				t.Fatalf("node %d down while reporting", r[0])
			}
			if r[0] == 2 && State(r[1]) == Down {
				return
			}
		}
	}
}

// TestOtherHostNamesRefused: a page on another site that rebinds its
// name to 127.0.0.1 gets nothing (DNS rebinding); --http-public lifts it.
func TestOtherHostNamesRefused(t *testing.T) {
	_, src := openLab(t, 1, time.Minute)
	hs := startServer(t, src, time.Second)
	for host, want := range map[string]int{"evil.example": 421, "evil.example:80": 421, "10.0.0.1": 421,
		"localhost:8040": 200, "127.0.0.1:8040": 200, "[::1]:8040": 200} {
		req, _ := http.NewRequest("GET", hs.URL+"/api/nodes", nil)
		req.Host = host
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != want {
			t.Errorf("Host %q: %d, want %d", host, res.StatusCode, want)
		}
	}
	pub := NewServer(ServerConfig{Source: src, Public: true})
	req := httptest.NewRequest("GET", "/api/nodes", nil)
	req.Host = "status.cluster.example"
	rec := httptest.NewRecorder()
	pub.Handler().ServeHTTP(rec, req)
	if rec.Code != 200 {
		t.Errorf("public server, Host %q: %d", req.Host, rec.Code)
	}
}

func TestTooManyViewersRefused(t *testing.T) {
	_, src := openLab(t, 1, time.Minute)
	hs := startServer(t, src, time.Second) // MaxClients 2
	for range 2 {
		res, err := http.Get(hs.URL + "/events")
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
	}
	if code, _, _ := get(t, hs.URL+"/events"); code != http.StatusServiceUnavailable {
		t.Errorf("third viewer: %d, want 503", code)
	}
}

func TestCheckListen(t *testing.T) {
	for addr, ok := range map[string]bool{
		"127.0.0.1:8040": true, "[::1]:8040": true, "localhost:0": true,
		"0.0.0.0:8040": false, ":8040": false, "10.0.0.1:80": false, "example.org:80": false,
		"127.0.0.1": false, "127.0.0.1:99999": false,
	} {
		if err := CheckListen(addr, false); (err == nil) != ok {
			t.Errorf("%q: %v", addr, err)
		}
	}
	if err := CheckListen("0.0.0.0:8040", true); err != nil {
		t.Errorf("public: %v", err)
	}
}

// metricValue finds the value of the series of family name whose labels
// include want.
func metricValue(t *testing.T, fams map[string]*dto.MetricFamily, name string, want map[string]string) (float64, bool) {
	t.Helper()
	f := fams[name]
	if f == nil {
		return 0, false
	}
next:
	for _, m := range f.Metric {
		got := map[string]string{}
		for _, l := range m.Label {
			got[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if got[k] != v {
				continue next
			}
		}
		switch {
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		}
	}
	return 0, false
}

func TestMetricsMatchTheTable(t *testing.T) {
	tb, src := openLab(t, 4, 2*time.Second)
	hs := startServer(t, src, time.Second)
	// Node 3 falls silent and goes down; the others keep reporting.
	tb.Stop(3)
	stop := make(chan struct{})
	done := tb.Run(t, 200*time.Millisecond, stop)
	deadline := time.Now().Add(10 * time.Second)
	for {
		snap, _ := src.Snapshot()
		if snap.Nodes[3].State == Down {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("node 3 never went down")
		}
		time.Sleep(100 * time.Millisecond)
	}
	close(stop)
	<-done

	code, body, h := get(t, hs.URL+"/metrics")
	if code != 200 || !strings.HasPrefix(h.Get("Content-Type"), "text/plain") {
		t.Fatalf("/metrics: %d %s", code, h.Get("Content-Type"))
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for node := range 3 {
		s := tb.Sample(node)
		n := map[string]string{"node": string(rune('0' + node)), "host": ""}
		with := func(k, v string) map[string]string {
			m := map[string]string{k: v}
			for a, b := range n {
				m[a] = b
			}
			return m
		}
		checks := []struct {
			name   string
			labels map[string]string
			want   float64
		}{
			{"hoststat_node_up", n, 1},
			{"node_load1", n, s.Load.One},
			{"node_load5", n, s.Load.Five},
			{"node_load15", n, s.Load.Fifteen},
			{"node_procs_running", n, float64(s.Load.Running)},
			{"node_boot_time_seconds", n, float64(s.BootTime.Unix())},
			{"node_memory_MemTotal_bytes", n, float64(s.Memory.Total)},
			{"node_memory_MemAvailable_bytes", n, float64(s.Memory.Available)},
			{"node_memory_MemFree_bytes", n, float64(s.Memory.Free)},
			{"node_memory_Buffers_bytes", n, float64(s.Memory.Buffers)},
			{"node_memory_Cached_bytes", n, float64(s.Memory.Cached)},
			{"node_memory_Shmem_bytes", n, float64(s.Memory.Shared)},
			{"node_memory_SwapTotal_bytes", n, float64(s.Memory.SwapTotal)},
			{"node_memory_SwapFree_bytes", n, float64(s.Memory.SwapFree)},
			{"node_cpu_seconds_total", with("cpu", "1"), 0}, // mode below
			{"node_network_receive_bytes_total", with("device", "eth0"), float64(s.Net[1].RxBytes)},
			{"node_network_transmit_bytes_total", with("device", "eth0"), float64(s.Net[1].TxBytes)},
			{"node_network_receive_packets_total", with("device", "eth0"), float64(s.Net[1].RxPackets)},
			{"node_network_receive_bytes_total", with("device", "lo"), 0},
		}
		for _, c := range checks {
			if c.name == "node_cpu_seconds_total" {
				for mode, ticks := range map[string]uint64{"user": s.CPUs[1].Ticks.User, "system": s.CPUs[1].Ticks.System, "idle": s.CPUs[1].Ticks.Idle, "steal": 0} {
					got, ok := metricValue(t, fams, c.name, map[string]string{"node": n["node"], "cpu": "1", "mode": mode})
					if want := float64(ticks) / 100; !ok || got != want {
						t.Errorf("node %d cpu 1 %s: %v (found %v), want %v s", node, mode, got, ok, want)
					}
				}
				continue
			}
			if got, ok := metricValue(t, fams, c.name, c.labels); !ok || got != c.want {
				t.Errorf("node %d %s%v = %v (found %v), want %v", node, c.name, c.labels, got, ok, c.want)
			}
		}
		if got, ok := metricValue(t, fams, "hoststat_node_info", with("addr", viewtest.Addr(node).String())); !ok || got != 1 {
			t.Errorf("node %d info: %v %v", node, got, ok)
		}
	}
	// The down node is there as down, without figures that are no longer true.
	if got, ok := metricValue(t, fams, "hoststat_node_up", map[string]string{"node": "3"}); !ok || got != 0 {
		t.Errorf("node 3 up = %v (found %v), want 0", got, ok)
	}
	if _, ok := metricValue(t, fams, "node_load1", map[string]string{"node": "3"}); ok {
		t.Error("node 3 is down but node_load1 is still exported")
	}
	viewtest.Promtool(t, string(body))
}

// BenchmarkMetrics10k: one /metrics scrape of a 10,000-node table (2 CPUs
// and 2 devices per node).
func BenchmarkMetrics10k(b *testing.B) {
	tb := viewtest.New(b, 10000, time.Minute)
	src, err := OpenTable(tb.Dir)
	if err != nil {
		b.Fatal(err)
	}
	defer src.Close()
	h := NewServer(ServerConfig{Source: src, Public: true}).Handler() // httptest requests name example.com
	var size int
	for b.Loop() {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		if rec.Code != 200 {
			b.Fatal(rec.Code)
		}
		size = rec.Body.Len()
	}
	b.ReportMetric(float64(size), "bytes/scrape")
}

// TestMetricsNodeNamesItsDevices: a device name is the node's to choose;
// quotes, backslashes, new lines and bytes that are no UTF-8 come out
// escaped and valid, and every other series is still there. (Through
// client_golang's const metrics, one node's device name that was no UTF-8
// lost whole families, hoststat_node_up of every node among them.)
func TestMetricsNodeNamesItsDevices(t *testing.T) {
	tb, src := openLab(t, 2, time.Minute)
	tb.RenameDevice(1, 0, "e\"t\\h\n0")
	tb.RenameDevice(1, 1, "bad\xff\xfe")
	if err := tb.Step(); err != nil {
		t.Fatal(err)
	}
	hs := startServer(t, src, time.Second)
	code, body, _ := get(t, hs.URL+"/metrics")
	if code != 200 {
		t.Fatalf("/metrics: %d %s", code, body)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	sent := tb.Sample(1)
	for dev, want := range map[string]float64{"e\"t\\h\n0": float64(sent.Net[0].RxBytes), "bad\uFFFD\uFFFD": float64(sent.Net[1].RxBytes)} {
		if got, ok := metricValue(t, fams, "node_network_receive_bytes_total", map[string]string{"node": "1", "device": dev}); !ok || got != want {
			t.Errorf("device %q: %v (found %v), want %v", dev, got, ok, want)
		}
	}
	for _, node := range []string{"0", "1"} {
		if up, ok := metricValue(t, fams, "hoststat_node_up", map[string]string{"node": node}); !ok || up != 1 {
			t.Errorf("hoststat_node_up of node %s: %v (found %v)", node, up, ok)
		}
	}
	viewtest.Promtool(t, string(body))
}

// TestMetricsGzipAndBound: a scraper that takes gzip gets it; scrapes
// beyond maxScrapes at once are refused, not queued.
func TestMetricsGzipAndBound(t *testing.T) {
	_, src := openLab(t, 3, time.Minute)
	srv := NewServer(ServerConfig{Source: src})
	hs := httptest.NewServer(srv.Handler())
	defer hs.Close()
	req, _ := http.NewRequest("GET", hs.URL+"/metrics", nil)
	req.Header.Set("Accept-Encoding", "gzip")
	res, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	zr, err := gzip.NewReader(res.Body)
	if err != nil || res.Header.Get("Content-Encoding") != "gzip" {
		t.Fatalf("gzip: %v, Content-Encoding %q", err, res.Header.Get("Content-Encoding"))
	}
	b, err := io.ReadAll(zr)
	res.Body.Close()
	if err != nil || !bytes.Contains(b, []byte(`node_load1{host="",node="2"} 0.52`)) {
		t.Errorf("gunzipped scrape (%v): %.300s", err, b)
	}
	h := srv.metrics.(*metricsHandler)
	var held []*nodeWriter
	for range maxScrapes {
		held = append(held, <-h.writers) // as if that many scrapes were being written
	}
	if code, body, _ := get(t, hs.URL+"/metrics"); code != 503 {
		t.Errorf("scrape beyond %d at once: %d %s", maxScrapes, code, body)
	}
	for _, w := range held {
		h.writers <- w
	}
	if code, _, _ := get(t, hs.URL+"/metrics"); code != 200 {
		t.Errorf("scrape after the others: %d", code)
	}
}

// TestMetricsRecvstatsCounters: recvstats' counters, as it publishes them
// in the table header, are scraped as hoststat_recvstats_* series.
func TestMetricsRecvstatsCounters(t *testing.T) {
	tb, src := openLab(t, 2, 2*time.Second)
	var drops [len(shm.DropReasons)]uint64
	drops[slices.Index(shm.DropReasons[:], "auth")] = 2
	drops[slices.Index(shm.DropReasons[:], "other")] = 3
	tb.W.SetCounters(shm.Counters{Received: 10, Stored: 8, NodesUp: 3, NodesDown: 1, Drops: drops, EventOverflow: 5})
	tb.W.SetSocket(1<<20, 7)
	hs := startServer(t, src, time.Second)
	_, body, _ := get(t, hs.URL+"/metrics")
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"hoststat_recvstats_received_datagrams_total", nil, 10},
		{"hoststat_recvstats_stored_samples_total", nil, 8},
		{"hoststat_recvstats_nodes", map[string]string{"state": "up"}, 3},
		{"hoststat_recvstats_nodes", map[string]string{"state": "down"}, 1},
		{"hoststat_recvstats_drops_total", map[string]string{"reason": "auth"}, 2},
		{"hoststat_recvstats_drops_total", map[string]string{"reason": "other"}, 3},
		{"hoststat_recvstats_drops_total", map[string]string{"reason": "kernel"}, 7},
		{"hoststat_recvstats_drops_total", map[string]string{"reason": "stale"}, 0},
		{"hoststat_recvstats_event_overflow_total", nil, 5},
		{"hoststat_recvstats_table_capacity_nodes", nil, float64(src.t.Info().Capacity)},
	} {
		if got, ok := metricValue(t, fams, c.name, c.labels); !ok || got != c.want {
			t.Errorf("%s%v = %v (found %v), want %v", c.name, c.labels, got, ok, c.want)
		}
	}
	viewtest.Promtool(t, string(body))
}

// beostatus keeps its history reader open: when recvstats' history file
// grows (a new file in its place, the old one retired), the next request
// reads the new file, with every node's points.
func TestHistoryAPIAcrossGrowth(t *testing.T) {
	tb, src := openLab(t, 3, 5*time.Second)
	hs := startServer(t, src, time.Second)
	h := tb.KeepHistory(t, 10*time.Minute, 10*time.Second, func(int, time.Time) (int, bool) { return 30, true })
	fineOf := func(node int) History {
		t.Helper()
		code, body, _ := get(t, hs.URL+"/api/node/"+strconv.Itoa(node)+"/history")
		var got History
		if code != 200 || json.Unmarshal(body, &got) != nil {
			t.Fatalf("node %d history: %d %s", node, code, body)
		}
		return got
	}
	before := fineOf(1)
	path := filepath.Join(tb.Dir, shm.HistoryFileName)
	blocks := func() int64 {
		var st unix.Stat_t
		if err := unix.Stat(path, &st); err != nil {
			t.Fatal(err)
		}
		return st.Blocks * 512
	}
	b1 := blocks()
	// 200 more nodes than the file's first slots: it grows under the
	// reader (a new node waits while its slot is being reserved).
	now := time.Now()
	for n := 100; n < 300; n++ {
		err := h.Append(n, now, viewtest.PastFigures(50))
		for deadline := time.Now().Add(5 * time.Second); errors.Is(err, shm.ErrHistoryGrowing) && time.Now().Before(deadline); {
			time.Sleep(time.Millisecond)
			err = h.Append(n, now, viewtest.PastFigures(50))
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := tb.Step(); err != nil {
		t.Fatal(err)
	}
	if b2 := blocks(); b2 <= b1 {
		t.Fatalf("the history file did not grow: %d → %d bytes of blocks", b1, b2)
	}
	after := fineOf(1)
	if len(after.Fine.Time) != len(before.Fine.Time)+1 || !slices.Equal(after.Fine.CPU[:len(before.Fine.CPU)], before.Fine.CPU) {
		t.Errorf("node 1 across growth: %d fine points, %d before and one since", len(after.Fine.Time), len(before.Fine.Time))
	}
	if got := fineOf(250); len(got.Fine.CPU) != 1 || got.Fine.CPU[0] != 50 {
		t.Errorf("node 250, added in the growth: %+v", got.Fine)
	}
}
