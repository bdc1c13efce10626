package view

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/performance"
	"github.com/chromedp/chromedp"

	"github.com/hoststat/hoststat/shm"
	"github.com/hoststat/hoststat/view/viewtest"
)

type tile struct {
	Node  int     `json:"node"`
	State string  `json:"state"`
	X     float64 `json:"x"`
	Y     float64 `json:"y"`
}

// pixelJS reads the colour the canvas drew 8 px left of node's tile
// centre (off the cross a down tile carries).
const pixelJS = `(() => {
  const c = document.getElementById("grid"), t = beostatus.tiles().find((t) => t.node === %d);
  const dpr = window.devicePixelRatio || 1;
  const d = c.getContext("2d").getImageData(Math.round((t.x - 8) * dpr), Math.round(t.y * dpr), 1, 1).data;
  return [d[0], d[1], d[2]];
})()`

func dark(rgb []int) bool { return rgb[0] < 70 && rgb[1] < 70 && rgb[2] < 70 }

func shot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(t.ArtifactDir(), name), png, 0o644); err != nil {
		t.Fatal(err)
	}
	if os.Getenv("HOSTSTAT_SCREENSHOTS") == "1" {
		if err := os.WriteFile(filepath.Join("..", "docs", "img", name), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestWebInChromium loads the page in a real headless Chromium, against
// a table written by the real shm writer: every node is drawn, a node that
// stops reporting turns down, a click shows its detail.
func TestWebInChromium(t *testing.T) {
	ctx := viewtest.Browser(t, 1280, 800)
	tb, src := openLab(t, 40, 2*time.Second)
	// Three hours of history, a point a second: figures that wander, node 12 silent from 70
	// to 50 minutes ago.
	end := time.Now()
	tb.KeepHistory(t, 3*time.Hour, time.Second, func(node int, at time.Time) (int, bool) {
		ago := end.Sub(at)
		wave := 25 * math.Sin(float64(at.Unix())/600+float64(node))
		return int(min(max(float64(viewtest.DefaultBusy(node, 0))+wave, 0), 100)), node != 12 || ago < 50*time.Minute || ago > 70*time.Minute
	})
	stop := make(chan struct{})
	done := tb.Run(t, 200*time.Millisecond, stop)
	defer func() { close(stop); <-done }()
	hs := startServer(t, src, 200*time.Millisecond)

	// Every request the page makes, to show it needs nothing but our server.
	var mu sync.Mutex
	var urls []string
	listen := func(ev any) {
		if e, ok := ev.(*network.EventRequestWillBeSent); ok {
			mu.Lock()
			urls = append(urls, e.Request.URL)
			mu.Unlock()
		}
	}
	if err := chromedp.Listen(ctx, listen); err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(ctx, chromedp.Navigate(hs.URL+"/")); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](`window.beostatus && beostatus.tiles().length === 40`,
		chromedp.WithPollingTimeout(15*time.Second))); err != nil {
		t.Fatalf("page never drew 40 nodes: %v", err)
	}
	tiles, err := chromedp.Run(ctx, chromedp.Evaluate[[]tile](`beostatus.tiles()`))
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int]bool{}
	for _, tl := range tiles {
		seen[tl.Node] = true
		if tl.State == "down" { // "late" would only mean this machine stalled the refresher
			t.Errorf("node %d drawn %s", tl.Node, tl.State)
		}
	}
	if len(seen) != 40 {
		t.Fatalf("drawn nodes %v", seen)
	}
	rgb, err := chromedp.Run(ctx, chromedp.Evaluate[[]int](fmt.Sprintf(pixelJS, 9)))
	if err != nil || dark(rgb) {
		t.Fatalf("node 9 is up but drawn %v (%v)", rgb, err)
	}

	// Node 9 stops reporting: within the down-after time its tile is down.
	tb.Stop(9)
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](`beostatus.tiles().find((t) => t.node === 9).state === "down"`,
		chromedp.WithPollingTimeout(10*time.Second))); err != nil {
		t.Fatalf("node 9 never drawn down: %v", err)
	}
	if rgb, err = chromedp.Run(ctx, chromedp.Evaluate[[]int](fmt.Sprintf(pixelJS, 9))); err != nil || !dark(rgb) {
		t.Errorf("node 9 is down but its tile is %v (%v)", rgb, err)
	}
	counts, _ := chromedp.Run(ctx, chromedp.Text("#counts"))
	if !strings.HasPrefix(counts, "40 nodes · ") || !strings.HasSuffix(counts, " · 1 down") {
		t.Errorf("counts %q", counts)
	}

	// A click on node 12 shows its detail.
	if err := clickNode(ctx, 12); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](`document.getElementById("d-body").textContent.includes("cpu1")`,
		chromedp.WithPollingTimeout(10*time.Second))); err != nil {
		t.Fatalf("no detail after clicking node 12: %v", err)
	}
	title, _ := chromedp.Run(ctx, chromedp.Text("#d-title"))
	body, _ := chromedp.Run(ctx, chromedp.Text("#d-body"))
	if !strings.HasPrefix(title, "node 12 ") || strings.HasSuffix(title, "DOWN") {
		t.Errorf("detail title %q", title)
	}
	for _, want := range []string{"10.1.0.12:3040", "CPU 56.0% of 2", "cpu0 56%", "eth0"} {
		if !strings.Contains(body, want) {
			t.Errorf("detail lacks %q: %s", want, body)
		}
	}
	if w, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.querySelector("#d-body .bar > div").style.width`)); w != "56%" {
		t.Errorf("cpu0 bar width %q, want 56%%", w)
	}
	// Its charts: the day's shows the silence, and the 15 minutes' follow
	// the node live.
	c12 := waitCharts(t, ctx, 12, 0)
	if c12.Minutes.Gaps != 1 || c12.Minutes.Points < 150 || c12.Fine.Points < 40 || c12.Fine.Last["cpu"] != 56 {
		t.Errorf("node 12's charts: %+v", c12)
	}
	if c := waitCharts(t, ctx, 12, c12.Fine.LastT); c.Fine.LastT <= c12.Fine.LastT || c.Fine.Points < 850 {
		t.Errorf("node 12's chart did not follow: last point at %d, then %d (%d points)", c12.Fine.LastT, c.Fine.LastT, c.Fine.Points)
	}
	shot(t, ctx, "beostatus-web.png")
	// Node 9, stopped: its charts hold exactly what the history file holds
	// of it, and end down.
	if err := clickNode(ctx, 9); err != nil {
		t.Fatal(err)
	}
	c9 := waitCharts(t, ctx, 9, 0)
	r, err := shm.OpenHistoryReader(tb.Dir)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	_, fine, _, err := r.Read(9, time.Unix(c9.Fine.From, 0))
	if err != nil || len(fine) == 0 {
		t.Fatalf("node 9's history: %d points, %v", len(fine), err)
	}
	var lastMinute shm.FiguresSum
	for _, p := range fine {
		if p.Time.Unix()/60 == fine[len(fine)-1].Time.Unix()/60 {
			lastMinute.Add(p.Figures)
		}
	}
	if c9.Fine.Points != len(fine) || c9.Fine.Last["cpu"] != fine[len(fine)-1].CPUPercent || c9.Fine.Gaps != 1 ||
		c9.Minutes.Points < 178 || c9.Minutes.Points > 183 || c9.Minutes.Last["cpu"] != lastMinute.Mean().CPUPercent {
		t.Errorf("node 9's charts %+v; its history: %d points in the window, the last %+v, the last minute's CPU %v",
			c9, len(fine), fine[len(fine)-1], lastMinute.Mean().CPUPercent)
	}
	mu.Lock()
	if !slices.Contains(urls, hs.URL+"/app.js") || !slices.Contains(urls, hs.URL+"/api/node/12") {
		t.Errorf("requests seen %q: the page's own are missing, so this check sees nothing", urls)
	}
	for _, u := range urls {
		if !strings.HasPrefix(u, hs.URL+"/") && !strings.HasPrefix(u, "data:") {
			t.Errorf("the page asked for %s, outside beostatus", u)
		}
	}
	mu.Unlock()

	// Dark and light.
	isDark, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`document.getElementById("theme").click(), document.documentElement.classList.contains("dark")`))
	if err != nil {
		t.Fatal(err)
	}
	bg, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`getComputedStyle(document.body).backgroundColor`))
	if (bg == "rgb(18, 21, 27)") != isDark {
		t.Errorf("theme toggled to dark=%v, background %s", isDark, bg)
	}
	shot(t, ctx, "beostatus-web-"+map[bool]string{true: "dark", false: "light"}[isDark]+".png")
}

// drawnChart is what the page says it drew of one history chart.
type drawnChart struct {
	Points, Gaps    int
	From, To, LastT int64
	Last            map[string]float64
}

type drawnCharts struct{ Fine, Minutes drawnChart }

// waitCharts waits for the detail of node to show charts whose last
// point at full resolution is after after (Unix seconds).
func waitCharts(t *testing.T, ctx context.Context, node int, after int64) drawnCharts {
	t.Helper()
	js := fmt.Sprintf(`beostatus.charts().node === %d && beostatus.charts().fine.lastT > %d`, node, after)
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](js, chromedp.WithPollingTimeout(10*time.Second))); err != nil {
		t.Fatalf("no charts for node %d with points after %d: %v", node, after, err)
	}
	c, err := chromedp.Run(ctx, chromedp.Evaluate[drawnCharts](`beostatus.charts()`))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// clickNode clicks node's tile.
func clickNode(ctx context.Context, node int) error {
	at, err := chromedp.Run(ctx, chromedp.Evaluate[[]float64](fmt.Sprintf(`(() => {
		const r = document.getElementById("grid").getBoundingClientRect(), t = beostatus.tiles().find((t) => t.node === %d);
		return [r.left + t.x, r.top + t.y]; })()`, node)))
	if err != nil {
		return err
	}
	return chromedp.Do(ctx, chromedp.MouseClickXY(at[0], at[1]))
}

// mainThreadBusy is the time the page's main thread has spent on tasks,
// as Chromium counts it (Performance.getMetrics "TaskDuration").
func mainThreadBusy(b *testing.B, ctx context.Context) time.Duration {
	if _, err := chromedp.Call(ctx, performance.Enable, performance.EnableParams{}); err != nil {
		b.Fatal(err)
	}
	m, err := chromedp.Call(ctx, performance.GetMetrics, cdp.Empty{})
	if err != nil {
		b.Fatal(err)
	}
	for _, x := range m.Metrics {
		if x.Name == "TaskDuration" {
			return time.Duration(x.Value * float64(time.Second))
		}
	}
	b.Fatal("no TaskDuration in the page's metrics")
	return 0
}

// BenchmarkWeb10kNodes: 10,000 nodes reporting every second, the page
// in headless Chromium following them. Reports the page's script time
// per update (performance.now around the update handler, drawing
// included) and the bytes per second of the update stream. "changing":
// every node's figures change every second (the worst case); "steady":
// they do not.
func BenchmarkWeb10kNodes(b *testing.B) {
	for _, c := range []struct {
		name string
		busy func(node, round int) int
	}{
		{"changing", func(node, round int) int { return (13*node + 7*round) % 100 }},
		{"steady", viewtest.DefaultBusy},
	} {
		b.Run(c.name, func(b *testing.B) {
			const nodes, measure = 10000, 15 * time.Second
			tb := viewtest.New(b, nodes, 30*time.Second)
			tb.Busy = c.busy
			src, err := OpenTable(tb.Dir)
			if err != nil {
				b.Fatal(err)
			}
			defer src.Close()
			stop := make(chan struct{})
			done := tb.Run(b, time.Second, stop)
			defer func() { close(stop); <-done }()
			srv := NewServer(ServerConfig{Source: src, Interval: time.Second})
			hs, cancel := serveBench(srv)
			defer cancel()
			ctx := viewtest.Browser(b, 1280, 800)
			for b.Loop() {
				if err := chromedp.Do(ctx, chromedp.Navigate(hs+"/")); err != nil {
					b.Fatal(err)
				}
				if _, err := chromedp.Run(ctx, chromedp.Poll[bool](fmt.Sprintf(`window.beostatus && beostatus.nodeCount() === %d`, nodes),
					chromedp.WithPollingTimeout(30*time.Second))); err != nil {
					b.Fatal(err)
				}
				if err := chromedp.Do(ctx, chromedp.Evaluate[chromedp.Void](`Object.assign(beostatus.stats, {updates: 0, totalMs: 0, maxMs: 0, bytes: 0, fulls: 0, maxParseMs: 0, maxDrawMs: 0})`)); err != nil {
					b.Fatal(err)
				}
				busy0 := mainThreadBusy(b, ctx)
				time.Sleep(measure)
				busy := mainThreadBusy(b, ctx) - busy0
				st, err := chromedp.Run(ctx, chromedp.Evaluate[map[string]float64](`beostatus.stats`))
				if err != nil {
					b.Fatal(err)
				}
				if st["updates"] == 0 {
					b.Fatal("no updates")
				}
				b.ReportMetric(st["totalMs"]/st["updates"], "ms/update")
				b.ReportMetric(st["maxMs"], "max-ms/update")
				b.ReportMetric(st["maxParseMs"], "max-parse-ms") // of the worst update
				b.ReportMetric(st["maxDrawMs"], "max-draw-ms")
				b.ReportMetric(st["fulls"], "full-frames")
				b.ReportMetric(st["bytes"]/measure.Seconds(), "stream-B/s")
				b.ReportMetric(st["updates"]/measure.Seconds(), "updates/s")
				// All the page's main-thread work (script, style, layout,
				// rasterising the canvas, garbage collection) per update.
				b.ReportMetric(busy.Seconds()*1000/st["updates"], "main-ms/update")
			}
		})
	}
}
