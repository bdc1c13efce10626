package statd

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/net/netutil"

	"github.com/hoststat/hoststat/internal/loopback"
	"github.com/hoststat/hoststat/nsm"
)

// The /metrics endpoint (--metrics). Every series is per daemon, never per
// host or per registrant: the label values are fixed sets (procedure,
// refusal reason, caller class), so what a scrape returns does not grow
// with the hosts monitored or with what callers send. Most values are read
// at scrape time from the counters the daemon keeps anyway (the admin
// status's), the store and the RPC server.

// refusalLabels names each refusal reason in the refusals_total series.
var refusalLabels = map[string]string{
	reasonRemote:      "remote",
	reasonUnprivPort:  "unprivileged_port",
	reasonBadMonName:  "bad_mon_name",
	reasonBadMyName:   "bad_my_name",
	reasonRateLimited: "rate_limited",
	reasonProgram:     "program_not_allowed",
	reasonGarbage:     "garbage_args",
}

// owedAgeBuckets are the upper bounds (seconds) of the owed-age histogram:
// a minute up to a week.
var owedAgeBuckets = []float64{60, 300, 900, 3600, 6 * 3600, 24 * 3600, 7 * 24 * 3600}

// metrics holds what the daemon measures only for /metrics: commit
// latencies and refusals by procedure and reason.
type metrics struct {
	commit prometheus.Histogram
	// refusals maps refusalKey to *atomic.Uint64; its keys are procedure
	// names and reason constants from handlers.go, so at most 7×7.
	refusals sync.Map
	addr     string // where /metrics listens, once it does
}

type refusalKey struct{ proc, reason string }

func newMetrics() *metrics {
	return &metrics{commit: prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "hoststat_statd_store_commit_seconds",
		Help:    "Time one group commit of the store took (one transaction and its fsync, carrying one or more mutations).",
		Buckets: []float64{0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5},
	})}
}

func (m *metrics) observeCommit(d time.Duration) { m.commit.Observe(d.Seconds()) }

func (m *metrics) refused(proc, reason string) {
	c, _ := m.refusals.LoadOrStore(refusalKey{proc, reason}, new(atomic.Uint64))
	c.(*atomic.Uint64).Add(1)
}

// notifyCounts counts SM_NOTIFY attempts whose outcome was recorded, by
// outcome.
type notifyCounts struct {
	sent, acknowledged, retried, gaveUp atomic.Uint64
}

func (c *notifyCounts) settled(k nsm.OutcomeKind) {
	c.sent.Add(1)
	switch k {
	case nsm.Delivered:
		c.acknowledged.Add(1)
	case nsm.Retry:
		c.retried.Add(1)
	case nsm.Abandoned:
		c.gaveUp.Add(1)
	}
}

// CheckMetricsAddr refuses an address that is not loopback unless public:
// the metrics show how busy the daemon is and what it refuses.
func CheckMetricsAddr(addr string, public bool) error {
	return loopback.Endpoint{Flag: "--metrics", PublicFlag: "--metrics-public", Shows: "the metrics", Example: "127.0.0.1:9724"}.CheckListen(addr, public)
}

// metricsConns bounds the connections /metrics holds open at once (more
// wait in the kernel's backlog); each lives at most IdleTimeout idle.
const metricsConns = 16

// serveMetrics starts /metrics when --metrics asks for it; the function
// it returns stops it.
func (d *daemon) serveMetrics() (func(), error) {
	if d.cfg.MetricsAddr == "" {
		return func() {}, nil
	}
	ln, err := net.Listen("tcp", d.cfg.MetricsAddr)
	if err != nil {
		return nil, fmt.Errorf("--metrics: %w", err)
	}
	d.metrics.addr = ln.Addr().String()
	ln = netutil.LimitListener(ln, metricsConns)
	reg := prometheus.NewRegistry()
	reg.MustRegister(d.metrics.commit, &statdCollector{d: d},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	h := promhttp.HandlerFor(reg, promhttp.HandlerOpts{MaxRequestsInFlight: 2, ErrorHandling: promhttp.ContinueOnError})
	mux := http.NewServeMux()
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, r *http.Request) {
		if !d.cfg.MetricsPublic && !loopback.Host(r.Host) {
			http.Error(w, fmt.Sprintf("host %q is not a loopback address or localhost (rpc.statd --metrics-public serves any)", r.Host), http.StatusMisdirectedRequest)
			return
		}
		h.ServeHTTP(w, r)
	})
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 10 * time.Second,
		WriteTimeout: 30 * time.Second, IdleTimeout: time.Minute, MaxHeaderBytes: 16 << 10}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			d.log.Error("metrics endpoint stopped", "err", err)
		}
	}()
	d.log.Info("serving metrics", "url", "http://"+d.metrics.addr+"/metrics")
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		hs.Shutdown(ctx)
		<-done
	}, nil
}

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc("hoststat_statd_"+name, help, labels, nil)
}

var (
	descState         = desc("state", "The NSM state number this host announces (odd while up).")
	descMonitored     = desc("monitored_hosts", "Hosts monitored: distinct mon_names with at least one registration.")
	descRegistrations = desc("registrations", "SM_MON registrations held: (mon_name, my_id) pairs.")
	descRegistrants   = desc("registrants", "Distinct registrants (my_name, prog, vers, proc) holding registrations.")
	descOwedAge       = desc("owed_notification_age_seconds", "SM_NOTIFYs this host still owes, by how long each has been owed.")
	descNotifySent    = desc("notifications_sent_total", "SM_NOTIFY attempts made (one per host per try) whose outcome was recorded.")
	descNotifyAcked   = desc("notifications_acknowledged_total", "SM_NOTIFY attempts a host answered: the host is no longer owed one.")
	descNotifyRetried = desc("notifications_retried_total", "SM_NOTIFY attempts that failed and are to be tried again.")
	descNotifyGaveUp  = desc("notifications_given_up_total", "Hosts given up on: still not reached when the give-up time passed.")
	descCalls         = desc("callbacks_total", "Calls made to registrants after a monitored host rebooted (SM_MON's my_prog/my_vers/my_proc).")
	descCallFailures  = desc("callback_failures_total", "Calls to registrants that failed (they are retried).")
	descCallGaveUp    = desc("callbacks_given_up_total", "Callbacks given up on after their retries.")
	descRefusals      = desc("refusals_total", "Calls refused, by procedure and reason.", "proc", "reason")
	descStoreErrors   = desc("store_errors_total", "Store writes that failed (each also logged).")
	descHADropped     = desc("ha_callouts_dropped_total", "HA callouts (-H) not run because the queue was full.")
	descRPCCalls      = desc("rpc_calls_total", "Well-formed RPC calls answered or dropped.")
	descRPCMalformed  = desc("rpc_malformed_total", "Messages that were not an RPC call, dropped.")
	descRPCOversize   = desc("rpc_oversize_records_total", "TCP connections closed for a record over the size cap.")
	descRPCDropped    = desc("rpc_dropped_calls_total", "Calls dropped without a reply (e.g. SM_NOTIFY over the rate limit).")
	descConns         = desc("rpc_connections", "TCP connections open, by caller class (local: loopback; remote: the rest).", "class")
	descConnsRefused  = desc("rpc_connections_refused_total", "TCP connections closed at once for being over a limit, by caller class.", "class")
	descIdle          = desc("rpc_idle_timeouts_total", "TCP connections closed for being idle, by caller class.", "class")
	descRecordTimeout = desc("rpc_record_timeouts_total", "TCP connections closed for not completing a record in time, by caller class.", "class")
	descShed          = desc("rpc_calls_shed_total", "Datagrams dropped unread because every handler slot of the class was busy.", "class")
	descInFlight      = desc("rpc_in_flight", "Handlers running now, by caller class.", "class")
	descLiveness      = desc("hosts_by_liveness", "Monitored and owed hosts by what telemetry says of them (up, silent, gone, unknown), per NSM identity (the host's own name, or an --identity served here); absent without --telemetry.", "identity", "state")
	descGraceEnded    = desc("grace_ended", "1 once the lock manager was told its grace period may end after our reboot (every owed host notified or gone).")
)

// statdCollector reads the daemon's counters, the store and the RPC
// server's statistics at scrape time.
type statdCollector struct{ d *daemon }

func (c *statdCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descState, descMonitored, descRegistrations, descRegistrants, descOwedAge,
		descNotifySent, descNotifyAcked, descNotifyRetried, descNotifyGaveUp, descCalls, descCallFailures, descCallGaveUp,
		descRefusals, descStoreErrors, descHADropped, descRPCCalls, descRPCMalformed, descRPCOversize, descRPCDropped,
		descConns, descConnsRefused, descIdle, descRecordTimeout, descShed, descInFlight, descLiveness, descGraceEnded} {
		ch <- d
	}
}

func (c *statdCollector) Collect(ch chan<- prometheus.Metric) {
	d := c.d
	gauge := func(desc *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(desc, prometheus.GaugeValue, v, labels...)
	}
	counter := func(desc *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(desc, prometheus.CounterValue, float64(v), labels...)
	}
	gauge(descState, float64(d.proto.state.Load()))

	known := map[string]struct{}{} // monitored and owed hosts, for liveness
	if regs, err := d.registrations(); err != nil {
		ch <- prometheus.NewInvalidMetric(descRegistrations, err)
	} else {
		hosts, registrants := map[string]struct{}{}, map[nsm.MyID]struct{}{}
		for _, r := range regs {
			hosts[r.MonName] = struct{}{}
			registrants[r.MyID] = struct{}{}
			known[nsm.CanonicalName(r.MonName)] = struct{}{}
		}
		gauge(descMonitored, float64(len(hosts)))
		gauge(descRegistrations, float64(len(regs)))
		gauge(descRegistrants, float64(len(registrants)))
	}
	if owed, err := d.owed(); err != nil {
		ch <- prometheus.NewInvalidMetric(descOwedAge, err)
	} else {
		ch <- owedAgeHistogram(owed, time.Now())
		for _, o := range owed {
			known[nsm.CanonicalName(o.Host)] = struct{}{}
		}
	}
	if d.tel != nil {
		livenessGauges(gauge, d.cfg.Name, d.tel, known)
		for _, name := range d.ids.list() {
			p, _ := d.ids.route(name)
			if p == nil || p.tel == nil {
				continue // lost since list
			}
			livenessGauges(gauge, name, p.tel, identityHosts(p))
		}
	}
	var ended float64
	if d.proto.owed.graceEnded.Load() {
		ended = 1
	}
	gauge(descGraceEnded, ended)

	n := &d.proto.owed.counts
	counter(descNotifySent, n.sent.Load())
	counter(descNotifyAcked, n.acknowledged.Load())
	counter(descNotifyRetried, n.retried.Load())
	counter(descNotifyGaveUp, n.gaveUp.Load())
	counter(descCalls, d.proto.calls.Load())
	counter(descCallFailures, d.proto.callErrors.Load())
	counter(descCallGaveUp, d.proto.failed.Load())
	d.metrics.refusals.Range(func(k, v any) bool {
		key := k.(refusalKey)
		counter(descRefusals, v.(*atomic.Uint64).Load(), key.proc, refusalLabels[key.reason])
		return true
	})
	counter(descStoreErrors, d.proto.storeErrors.Load())
	counter(descHADropped, d.ha.droppedTotal())

	st := d.srv.Stats()
	counter(descRPCCalls, st.Calls)
	counter(descRPCMalformed, st.Malformed)
	counter(descRPCOversize, st.Oversize)
	counter(descRPCDropped, st.Dropped)
	for class, p := range map[string]struct {
		open, inFlight              int64
		refused, idle, record, shed uint64
	}{
		"local":  {st.Local.ConnsOpen, st.Local.InFlight, st.Local.ConnsRefused, st.Local.IdleTimeouts, st.Local.RecordTimeouts, st.Local.CallsShed},
		"remote": {st.Remote.ConnsOpen, st.Remote.InFlight, st.Remote.ConnsRefused, st.Remote.IdleTimeouts, st.Remote.RecordTimeouts, st.Remote.CallsShed},
	} {
		gauge(descConns, float64(p.open), class)
		gauge(descInFlight, float64(p.inFlight), class)
		counter(descConnsRefused, p.refused, class)
		counter(descIdle, p.idle, class)
		counter(descRecordTimeout, p.record, class)
		counter(descShed, p.shed, class)
	}
}

// livenessGauges counts one identity's monitored and owed hosts (known,
// canonical names) by what its telemetry says of them: one series per
// state, labelled with the identity (the host's own name, or an
// --identity served here: a set fixed by the command line).
func livenessGauges(gauge func(*prometheus.Desc, float64, ...string), identity string, tel *telemetry, known map[string]struct{}) {
	states := map[string]int{"up": 0, "silent": 0, "gone": 0, "unknown": 0}
	for name := range known {
		states[tel.liveness(name).State]++
	}
	for state, n := range states {
		gauge(descLiveness, float64(n), identity, state)
	}
}

// identityHosts are the canonical names an --identity's core monitors or
// owes a notification.
func identityHosts(p *protocol) map[string]struct{} {
	known := map[string]struct{}{}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, h := range p.core.Hosts() {
		known[h.Name] = struct{}{}
	}
	for _, o := range p.core.Pending() {
		known[nsm.CanonicalName(o.Host)] = struct{}{}
	}
	return known
}

// owedAgeHistogram sorts the debts by how long each has been owed.
func owedAgeHistogram(owed []nsm.Owed, now time.Time) prometheus.Metric {
	buckets := make(map[float64]uint64, len(owedAgeBuckets))
	for _, b := range owedAgeBuckets {
		buckets[b] = 0 // every bound shown, also when nothing is owed
	}
	var sum float64
	for _, o := range owed {
		age := max(now.Sub(o.FirstOwed).Seconds(), 0)
		sum += age
		for _, b := range owedAgeBuckets {
			if age <= b {
				buckets[b]++
			}
		}
	}
	return prometheus.MustNewConstHistogram(descOwedAge, uint64(len(owed)), sum, buckets)
}
