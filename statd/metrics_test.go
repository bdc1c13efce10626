package statd

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/hoststat/hoststat/internal/netlab"
	"github.com/hoststat/hoststat/nsm"
	"github.com/hoststat/hoststat/oncrpc"
	"github.com/hoststat/hoststat/view/viewtest"
)

// scrape is one GET of /metrics, parsed, and its text.
type scrape struct {
	fams map[string]*dto.MetricFamily
	text string
}

func getMetrics(t *testing.T, url, host string) (int, string) {
	t.Helper()
	return getMetricsWith(t, http.DefaultClient, url, host)
}

// getMetricsWith is getMetrics through c (a lab host's HTTPClient).
func getMetricsWith(t *testing.T, c *http.Client, url, host string) (int, string) {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if host != "" {
		req.Host = host
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body)
}

func scrapeMetrics(t *testing.T, url string) scrape {
	t.Helper()
	return scrapeMetricsWith(t, http.DefaultClient, url)
}

// scrapeMetricsWith is scrapeMetrics through c.
func scrapeMetricsWith(t *testing.T, c *http.Client, url string) scrape {
	t.Helper()
	code, body := getMetricsWith(t, c, url, "")
	if code != http.StatusOK {
		t.Fatalf("GET %s: %d %s", url, code, body)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("parsing the scrape: %v\n%s", err, body)
	}
	return scrape{fams, body}
}

// metric is the series of family name (hoststat_statd_ added) whose
// labels are exactly labels (k, v pairs); nil when there is none.
func (s scrape) metric(name string, labels ...string) *dto.Metric {
	f := s.fams["hoststat_statd_"+name]
	if f == nil {
		return nil
	}
next:
	for _, m := range f.Metric {
		if len(m.Label) != len(labels)/2 {
			continue
		}
		for i, l := range m.Label {
			if l.GetName() != labels[2*i] || l.GetValue() != labels[2*i+1] {
				continue next
			}
		}
		return m
	}
	return nil
}

// value is the gauge or counter metric finds; -1 when there is none.
func (s scrape) value(name string, labels ...string) float64 {
	m := s.metric(name, labels...)
	switch {
	case m == nil:
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Counter != nil:
		return m.Counter.GetValue()
	}
	return -1
}

func (s scrape) histogram(name string, labels ...string) *dto.Histogram {
	return s.metric(name, labels...).GetHistogram()
}

// identities are the identity label values of the families of s.
func (s scrape) identities() map[string]bool {
	out := map[string]bool{}
	for _, f := range s.fams {
		for _, m := range f.Metric {
			for _, l := range m.Label {
				if l.GetName() == "identity" {
					out[l.GetValue()] = true
				}
			}
		}
	}
	return out
}

// waitMetric polls /metrics until cond holds, and returns that scrape.
func waitMetric(t *testing.T, url, what string, cond func(scrape) error) scrape {
	t.Helper()
	var s scrape
	netlab.WaitFor(t, 15*time.Second, what, func() error {
		s = scrapeMetrics(t, url)
		return cond(s)
	})
	return s
}

// TestMetrics runs a daemon with --metrics on loopback, makes it monitor,
// refuse, call back, crash (SM_SIMU_CRASH), notify and give up, and checks
// every figure on /metrics against what was done; promtool accepts the
// scrape, and a request naming another host is refused.
func TestMetrics(t *testing.T) {
	_, resolver := newLoopbackDNS(t, nil) // nothing resolves: no lookup leaves the machine
	td := newTestDaemon(t, func(c *Config) {
		c.MetricsAddr = "127.0.0.1:0"
		c.Resolver = resolver
		c.Schedule = nsm.Schedule{FirstRetry: 100 * time.Millisecond, MaxRetry: 200 * time.Millisecond,
			FrequentFor: time.Minute, Slow: time.Second, GiveUpAfter: 4 * time.Second}
		c.NotifyTimeout = 200 * time.Millisecond
	})
	st := td.status()
	if st.Metrics == "" {
		t.Fatal("status shows no metrics address")
	}
	url := "http://" + st.Metrics + "/metrics"
	me := []string{"identity", st.Name} // the per-identity series' label: the host's own name
	ctx := ctxT(t, 60*time.Second)
	regA := newRegistrant(t, td.rpcb, 200100)
	regB := newRegistrant(t, td.rpcb, 200200)
	unreachable := nsm.MyID{Name: "127.0.0.1", Prog: 7, Vers: 1, Proc: 1} // not in rpcbind: its callbacks fail
	c := td.dial("udp")
	calls := 0
	mon := func(host string, my nsm.MyID, want nsm.Result) {
		t.Helper()
		calls++
		if r, err := callMon(ctx, c, nsm.Mon{ID: nsm.MonID{MonName: host, MyID: my}}); err != nil || r.Res != want {
			t.Fatalf("SM_MON %s: %+v %v", host, r, err)
		}
	}
	mon("127.0.0.5", regA.myID(), nsm.StatSucc)
	mon("nowhere.invalid", regA.myID(), nsm.StatSucc)
	mon("127.0.0.5", regB.myID(), nsm.StatSucc)
	mon("127.0.0.8", unreachable, nsm.StatSucc)
	mon("gone.invalid", regB.myID(), nsm.StatSucc)
	calls++
	if _, err := callUnmon(ctx, c, nsm.MonID{MonName: "gone.invalid", MyID: regB.myID()}); err != nil {
		t.Fatal(err)
	}
	// Refusals: two bad names, one SM_SIMU_CRASH from an unprivileged port.
	mon("bad/name", regA.myID(), nsm.StatFail)
	mon("bad/name", regA.myID(), nsm.StatFail)
	calls++
	if err := callSimuCrash(ctx, c); !isAuthTooWeak(err) {
		t.Fatalf("SM_SIMU_CRASH from an unprivileged port: %v", err)
	}
	// A peer reboots: both registrants of 127.0.0.5 are called back.
	calls++
	if err := callNotify(ctx, c, "127.0.0.5", 5); err != nil {
		t.Fatal(err)
	}
	regA.next(t, 5*time.Second)
	regB.next(t, 5*time.Second)
	// 127.0.0.8 reboots: its registrant cannot be reached.
	calls++
	if err := callNotify(ctx, c, "127.0.0.8", 5); err != nil {
		t.Fatal(err)
	}
	// One TCP caller holding its connection.
	tc := td.dial("tcp")
	calls++
	if r, err := callStat(ctx, tc, "127.0.0.1"); err != nil || r.Res != nsm.StatSucc {
		t.Fatalf("SM_STAT over TCP: %+v %v", r, err)
	}

	s := waitMetric(t, url, "the callbacks counted", func(s scrape) error {
		made, failed := s.value("callbacks_total", me...), s.value("callback_failures_total", me...)
		if made-failed != 2 || failed < 1 {
			return fmt.Errorf("callbacks made %v, failed %v: want 2 delivered and the unreachable one failed", made, failed)
		}
		return nil
	})
	for _, w := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"state", me, float64(st.State)},
		{"monitored_hosts", me, 3},
		{"registrations", me, 4},
		{"registrants", me, 3},
		{"refusals_total", []string{"proc", "SM_MON", "reason", "bad_mon_name"}, 2},
		{"refusals_total", []string{"proc", "SM_SIMU_CRASH", "reason", "unprivileged_port"}, 1},
		{"refusals_total", []string{"proc", "SM_MON", "reason", "remote"}, -1}, // never happened: no series
		{"rpc_connections", []string{"class", "local"}, 1},
		{"rpc_connections", []string{"class", "remote"}, 0},
		{"rpc_malformed_total", nil, 0},
		{"store_errors_total", me, 0},
		{"notifications_sent_total", me, 0},
	} {
		if got := s.value(w.name, w.labels...); got != w.want {
			t.Errorf("%s%v = %v, want %v", w.name, w.labels, got, w.want)
		}
	}
	if got := s.value("rpc_calls_total"); got < float64(calls) {
		t.Errorf("rpc_calls_total %v, want at least the %d calls made", got, calls)
	}
	// Six mutations, each acknowledged only once committed, one at a time.
	if h := s.histogram("store_commit_seconds"); h == nil || h.GetSampleCount() < 6 || h.GetSampleSum() <= 0 {
		t.Errorf("store_commit_seconds %v, want at least 6 commits", h)
	}
	if h := s.histogram("owed_notification_age_seconds", me...); h == nil || h.GetSampleCount() != 0 {
		t.Errorf("owed before the crash: %v", h)
	}
	tc.Close()
	waitMetric(t, url, "the TCP connection closed", func(s scrape) error {
		if v := s.value("rpc_connections", "class", "local"); v != 0 {
			return fmt.Errorf("local connections %v", v)
		}
		return nil
	})

	// A flood of SM_NOTIFY about a host nobody monitors: past the burst
	// they are dropped unanswered, each counted as a refusal and a drop.
	unanswered := 0
	for i := range 20 {
		cctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		if callNotify(cctx, c, "stranger", int32(i)) != nil {
			unanswered++
		}
		cancel()
	}
	s = scrapeMetrics(t, url)
	limited, dropped := s.value("refusals_total", "proc", "SM_NOTIFY", "reason", "rate_limited"), s.value("rpc_dropped_calls_total")
	if unanswered == 0 || limited < float64(unanswered) || dropped != limited {
		t.Errorf("%d of 20 unsolicited SM_NOTIFY unanswered; refused as rate limited %v, dropped %v", unanswered, limited, dropped)
	}

	// A simulated crash owes every monitored host a notification: two
	// answer, nowhere.invalid never does and is given up on.
	netlab.RequireRoot(t) // a privileged source port needs root
	newFakePeer(t, td.rpcb, "127.0.0.5", "127.0.0.8")
	if err := callSimuCrash(ctx, dialT(t, "udp", td.udp, oncrpc.WithPrivilegedPort())); err != nil {
		t.Fatal(err)
	}
	s = waitMetric(t, url, "two hosts notified", func(s scrape) error {
		if v := s.value("notifications_acknowledged_total", me...); v != 2 {
			return fmt.Errorf("acknowledged %v", v)
		}
		return nil
	})
	if got := s.value("state", me...); got != float64(st.State+2) {
		t.Errorf("state %v after SM_SIMU_CRASH, want %d", got, st.State+2)
	}
	h := s.histogram("owed_notification_age_seconds", me...)
	if h == nil || h.GetSampleCount() != 1 || h.GetSampleSum() <= 0 || h.Bucket[0].GetUpperBound() != 60 || h.Bucket[0].GetCumulativeCount() != 1 {
		t.Errorf("owed after the crash: %v, want nowhere.invalid owed for under a minute", h)
	}
	s = waitMetric(t, url, "nowhere.invalid given up", func(s scrape) error {
		if v := s.value("notifications_given_up_total", me...); v != 1 {
			return fmt.Errorf("given up %v", v)
		}
		return nil
	})
	sent, acked, retried, gaveUp := s.value("notifications_sent_total", me...), s.value("notifications_acknowledged_total", me...),
		s.value("notifications_retried_total", me...), s.value("notifications_given_up_total", me...)
	if retried < 1 || sent != acked+retried+gaveUp {
		t.Errorf("notifications sent %v = acknowledged %v + retried %v + given up %v?", sent, acked, retried, gaveUp)
	}
	if h := s.histogram("owed_notification_age_seconds", me...); h == nil || h.GetSampleCount() != 0 ||
		!strings.Contains(s.text, `hoststat_statd_owed_notification_age_seconds_bucket{identity="`+st.Name+`",le="604800"} 0`) {
		t.Errorf("owed after giving up: %v, want every bucket at 0", h)
	}
	viewtest.Promtool(t, s.text)

	// A page elsewhere cannot read the metrics through a rebound name.
	if code, body := getMetrics(t, url, "evil.example:80"); code != http.StatusMisdirectedRequest {
		t.Errorf("request for host evil.example: %d %s", code, body)
	}
}

// TestMetricsAddr: --metrics takes a loopback HOST:PORT (or localhost)
// unless --metrics-public; the daemon refuses to start otherwise.
func TestMetricsAddr(t *testing.T) {
	for _, c := range []struct {
		addr   string
		public bool
		want   string // "" accepted, else part of the error
	}{
		{"127.0.0.1:9724", false, ""},
		{"[::1]:0", false, ""},
		{"localhost:9724", false, ""},
		{"0.0.0.0:9724", false, "--metrics-public"},
		{"[::]:9724", false, "--metrics-public"},
		{"192.0.2.1:9724", false, "not a loopback address"},
		{"statd.example:9724", false, "not a loopback address"},
		{"0.0.0.0:9724", true, ""},
		{"127.0.0.1", false, "want HOST:PORT"},
		{"127.0.0.1:70000", false, "not a number in 0..65535"},
	} {
		err := CheckMetricsAddr(c.addr, c.public)
		if (err == nil) != (c.want == "") || err != nil && !strings.Contains(err.Error(), c.want) {
			t.Errorf("CheckMetricsAddr(%q, %v) = %v, want %q", c.addr, c.public, err, c.want)
		}
	}
	dir := t.TempDir()
	err := Run(context.Background(), Config{Name: "me", StateDir: dir, MetricsAddr: "0.0.0.0:0", NFSUtilsDir: ""}, nil)
	if err == nil || !strings.Contains(err.Error(), "--metrics-public") {
		t.Fatalf("Run with --metrics 0.0.0.0:0: %v", err)
	}
}
