package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/hoststat/hoststat/internal/netlab"
	"github.com/hoststat/hoststat/view"
	"github.com/hoststat/hoststat/view/viewtest"
)

// start runs a command we own for the test; it is stopped (by its pid)
// when the test ends.
func start(t *testing.T, bin string, args ...string) (*exec.Cmd, *netlab.LogBuffer) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	errb := &netlab.LogBuffer{Limit: 1 << 20}
	cmd.Stderr = errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stopCmd(cmd) })
	return cmd, errb
}

func stopCmd(cmd *exec.Cmd) {
	if cmd.ProcessState != nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
}

func freeUDPPort(t *testing.T) string { return strconv.Itoa(netlab.FreeUDPPort(t)) }

// procTruth reads what every sendstats of this machine reports: MemTotal
// in bytes, boot time and the CPU count.
func procTruth(t *testing.T) (memTotal uint64, btime int64, cpus int) {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^MemTotal:\s+(\d+) kB`).FindSubmatch(b)
	kb, _ := strconv.ParseUint(string(m[1]), 10, 64)
	b, err = os.ReadFile("/proc/stat")
	if err != nil {
		t.Fatal(err)
	}
	bt := regexp.MustCompile(`(?m)^btime (\d+)`).FindSubmatch(b)
	btime, _ = strconv.ParseInt(string(bt[1]), 10, 64)
	cpus = len(regexp.MustCompile(`(?m)^cpu\d+ `).FindAll(b, -1))
	return kb * 1024, btime, cpus
}

// TestLoopbackCluster runs real recvstats and two real sendstats on
// loopback and beostatus --http over their table: the API, /metrics and
// the page in headless Chromium show both nodes with this machine's true
// figures, and the node whose sendstats stops turns down.
func TestLoopbackCluster(t *testing.T) {
	bin := netlab.BuildCommands(t, "./cmd/recvstats", "./cmd/sendstats", "./cmd/beostatus")
	dir, port := t.TempDir(), freeUDPPort(t)
	// Both senders share 127.0.0.1: recvstats believes their node numbers
	// only because they sign with the key.
	key := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(key, []byte("loopback-cluster-shared-key-0123456789"), 0o600); err != nil {
		t.Fatal(err)
	}
	start(t, filepath.Join(bin, "recvstats"), "-d", "--listen", "127.0.0.1", "-p", port, "--shm-dir", dir, "--down-after", "2s", "--key-file", key)
	var senders []*exec.Cmd
	for _, node := range []string{"1", "2"} {
		c, _ := start(t, filepath.Join(bin, "sendstats"), "-d", "-a", "127.0.0.1:"+port, "--node", node, "-r", "0.2", "--key-file", key)
		senders = append(senders, c)
	}
	netlab.WaitFor(t, 10*time.Second, "the table", func() error {
		_, err := os.Stat(filepath.Join(dir, "beostat"))
		return err
	})
	_, stderr := start(t, filepath.Join(bin, "beostatus"), "--shm-dir", dir, "--http", "127.0.0.1:0", "--interval", "200ms")
	var base string
	netlab.WaitFor(t, 10*time.Second, "beostatus to serve", func() error {
		if m := regexp.MustCompile(`url=(http://127\.0\.0\.1:\d+)/`).FindStringSubmatch(stderr.String()); m != nil {
			base = m[1]
			return nil
		}
		return fmt.Errorf("no url yet in %q", stderr.String())
	})
	memTotal, btime, cpus := procTruth(t)

	nodes := func() map[int]view.Node {
		res, err := http.Get(base + "/api/nodes")
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		var r view.NodesReply
		if err := json.NewDecoder(res.Body).Decode(&r); err != nil {
			t.Fatal(err)
		}
		out := map[int]view.Node{}
		for _, n := range r.Nodes {
			out[n.Node] = n
		}
		return out
	}
	netlab.WaitFor(t, 10*time.Second, "nodes 1 and 2 up with rates", func() error {
		ns := nodes()
		for _, n := range []int{1, 2} {
			if ns[n].State != view.Up || ns[n].SampleTime.IsZero() {
				return fmt.Errorf("node %d: %+v", n, ns[n])
			}
		}
		return nil
	})
	for _, n := range nodes() {
		if n.MemTotal != memTotal || n.CPUs != cpus || n.BootTime.Unix() != btime || n.Addr == "" {
			t.Errorf("node %d: mem %d cpus %d boot %v addr %q; this machine: mem %d cpus %d boot %d",
				n.Node, n.MemTotal, n.CPUs, n.BootTime.Unix(), n.Addr, memTotal, cpus, btime)
		}
	}

	scrape := func() string {
		res, err := http.Get(base + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return string(b)
	}
	m := scrape()
	for _, want := range []string{
		fmt.Sprintf(`node_memory_MemTotal_bytes{host="",node="1"} %s`, strconv.FormatFloat(float64(memTotal), 'g', -1, 64)),
		fmt.Sprintf(`node_boot_time_seconds{host="",node="2"} %s`, strconv.FormatFloat(float64(btime), 'g', -1, 64)),
		`hoststat_node_up{host="",node="1"} 1`,
		fmt.Sprintf(`node_cpu_seconds_total{cpu="%d",host="",mode="idle",node="1"}`, cpus-1),
		`node_network_receive_bytes_total{device="lo",host="",node="2"}`,
	} {
		if !strings.Contains(m, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	viewtest.Promtool(t, m)

	// The page shows both nodes; node 2's sendstats stops and its tile goes down.
	ctx := viewtest.Browser(t, 1024, 700)
	if err := chromedp.Do(ctx, chromedp.Navigate(base+"/")); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](`window.beostatus && beostatus.tiles().filter((t) => t.state === "up").length === 2`,
		chromedp.WithPollingTimeout(10*time.Second))); err != nil {
		t.Fatalf("page never showed 2 nodes up: %v", err)
	}
	history := func(node int) view.History {
		res, err := http.Get(fmt.Sprintf("%s/api/node/%d/history", base, node))
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		var h view.History
		if err := json.NewDecoder(res.Body).Decode(&h); err != nil || res.StatusCode != 200 {
			t.Fatalf("history of node %d: %d %v", node, res.StatusCode, err)
		}
		return h
	}
	// Node 2 stops once it has a few points of history to end.
	netlab.WaitFor(t, 10*time.Second, "node 2's history to hold 5 points", func() error {
		if n := len(history(2).Fine.Time); n < 5 {
			return fmt.Errorf("%d points", n)
		}
		return nil
	})
	stopCmd(senders[1])
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](`beostatus.tiles().find((t) => t.node === 2).state === "down"`,
		chromedp.WithPollingTimeout(10*time.Second))); err != nil {
		t.Fatalf("node 2 stopped but never drawn down: %v", err)
	}
	if ns := nodes(); ns[1].State != view.Up || ns[2].State != view.Down {
		t.Errorf("after node 2 stopped: node 1 %v, node 2 %v", ns[1].State, ns[2].State)
	}
	// The history recvstats kept: node 1's goes on to now, node 2's ends
	// in a gap since it stopped; the page charts node 2's points.
	h1 := history(1)
	// Points are stamped in whole seconds: the gap shows up to a second
	// after the table says down.
	var h2 view.History
	netlab.WaitFor(t, 5*time.Second, "node 2's history to end down", func() error {
		if h2 = history(2); !h2.Fine.EndsDown() {
			return fmt.Errorf("gaps %v, last point %d, to %d", h2.Fine.Gaps, h2.Fine.Time[len(h2.Fine.Time)-1], h2.Fine.To)
		}
		return nil
	})
	if n := len(h1.Fine.Time); n < 5 || h1.Fine.EndsDown() || h1.MemTotal != memTotal || h1.Fine.Mem[n-1] == 0 || h1.Fine.Mem[n-1] > memTotal {
		t.Errorf("node 1's history: %d points, ends down %v, memory %v of %d", n, h1.Fine.EndsDown(), h1.Fine.Mem, h1.MemTotal)
	}
	if len(h2.Fine.Time) < 5 {
		t.Errorf("node 2's history: %d points, gaps %v (to %d)", len(h2.Fine.Time), h2.Fine.Gaps, h2.Fine.To)
	}
	at, err := chromedp.Run(ctx, chromedp.Evaluate[[]float64](`(() => {
		const r = document.getElementById("grid").getBoundingClientRect(), t = beostatus.tiles().find((t) => t.node === 2);
		return [r.left + t.x, r.top + t.y]; })()`))
	if err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(ctx, chromedp.MouseClickXY(at[0], at[1])); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](fmt.Sprintf(`beostatus.charts().node === 2 && beostatus.charts().fine.points === %d && beostatus.charts().fine.gaps >= 1`, len(h2.Fine.Time)),
		chromedp.WithPollingTimeout(10*time.Second))); err != nil {
		c, _ := chromedp.Run(ctx, chromedp.Evaluate[any](`beostatus.charts()`))
		t.Errorf("node 2's chart never showed its %d points ending down: %v (%v)", len(h2.Fine.Time), c, err)
	}
	if m := scrape(); !strings.Contains(m, `hoststat_node_up{host="",node="2"} 0`) || strings.Contains(m, `node_load1{host="",node="2"}`) {
		t.Errorf("/metrics after node 2 stopped:\n%s", grepLines(m, `node="2"`))
	}
}

func grepLines(s, sub string) string {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		if strings.Contains(sc.Text(), sub) {
			out = append(out, sc.Text())
		}
	}
	return strings.Join(out, "\n")
}
