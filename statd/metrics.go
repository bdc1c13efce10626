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

// The /metrics endpoint (--metrics). No series is per host or per
// registrant: the label values are fixed sets (procedure, refusal reason,
// caller class, and the NSM identity: the host's own name and the
// --identity names, served now), so what a scrape returns does not grow
// with the hosts monitored or with what callers send. What one identity's
// core does is labelled with it; what the process does (refusals, the RPC
// server, the bbolt store's commits, the host's grace) is not. Most values are read
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
	reasonNotServed:   "identity_not_served",
}

// owedAgeBuckets are the upper bounds (seconds) of the owed-age histogram:
// a minute up to a week.
var owedAgeBuckets = []float64{60, 300, 900, 3600, 6 * 3600, 24 * 3600, 7 * 24 * 3600}

// metrics holds what the daemon measures only for /metrics: commit
// latencies and refusals by procedure and reason.
type metrics struct {
	commit prometheus.Histogram
	// refusals maps refusalKey to *atomic.Uint64; its keys are procedure
	// names and reason constants from handlers.go, so at most 7×8.
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
	descState         = desc("state", "The NSM state number an identity announces (odd while up).", "identity")
	descMonitored     = desc("monitored_hosts", "Hosts monitored: distinct mon_names with at least one registration.", "identity")
	descRegistrations = desc("registrations", "SM_MON registrations held: (mon_name, my_id) pairs.", "identity")
	descRegistrants   = desc("registrants", "Distinct registrants (my_name, prog, vers, proc) holding registrations.", "identity")
	descOwedAge       = desc("owed_notification_age_seconds", "SM_NOTIFYs an identity still owes, by how long each has been owed.", "identity")
	descNotifySent    = desc("notifications_sent_total", "SM_NOTIFY attempts made (one per host per try) whose outcome was recorded.", "identity")
	descNotifyAcked   = desc("notifications_acknowledged_total", "SM_NOTIFY attempts a host answered: the host is no longer owed one.", "identity")
	descNotifyRetried = desc("notifications_retried_total", "SM_NOTIFY attempts that failed and are to be tried again.", "identity")
	descNotifyGaveUp  = desc("notifications_given_up_total", "Hosts given up on: still not reached when the give-up time passed.", "identity")
	descCalls         = desc("callbacks_total", "Calls made to registrants after a monitored host rebooted (SM_MON's my_prog/my_vers/my_proc).", "identity")
	descCallFailures  = desc("callback_failures_total", "Calls to registrants that failed (they are retried).", "identity")
	descCallGaveUp    = desc("callbacks_given_up_total", "Callbacks given up on after their retries.", "identity")
	descRefusals      = desc("refusals_total", "Calls refused, by procedure and reason.", "proc", "reason")
	descStoreErrors   = desc("store_errors_total", "Store writes that failed (each also logged).", "identity")
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

// sink sends const metrics to a scrape.
type sink chan<- prometheus.Metric

func (ch sink) gauge(desc *prometheus.Desc, v float64, labels ...string) {
	ch <- prometheus.MustNewConstMetric(desc, prometheus.GaugeValue, v, labels...)
}

func (ch sink) counter(desc *prometheus.Desc, v uint64, labels ...string) {
	ch <- prometheus.MustNewConstMetric(desc, prometheus.CounterValue, float64(v), labels...)
}

func (c *statdCollector) Collect(ch chan<- prometheus.Metric) {
	d, out := c.d, sink(ch)
	regs, regErr := d.registrations()
	owed, owedErr := d.owed()
	out.identity(d.cfg.Name, d.proto, regs, regErr, owed, owedErr)
	// Each --identity served now, under its canonical name; one lost is
	// no longer listed, so its series go with it (counters included).
	for _, name := range d.ids.list() {
		p, _ := d.ids.route(name)
		if p == nil {
			continue // lost since list
		}
		out.identity(name, p, p.registrations(), nil, p.owedNow(), nil)
	}
	var ended float64
	if d.proto.owed.graceEnded.Load() {
		ended = 1
	}
	out.gauge(descGraceEnded, ended)

	d.metrics.refusals.Range(func(k, v any) bool {
		key := k.(refusalKey)
		out.counter(descRefusals, v.(*atomic.Uint64).Load(), key.proc, refusalLabels[key.reason])
		return true
	})
	out.counter(descHADropped, d.ha.droppedTotal())

	st := d.srv.Stats()
	out.counter(descRPCCalls, st.Calls)
	out.counter(descRPCMalformed, st.Malformed)
	out.counter(descRPCOversize, st.Oversize)
	out.counter(descRPCDropped, st.Dropped)
	for class, p := range map[string]struct {
		open, inFlight              int64
		refused, idle, record, shed uint64
	}{
		"local":  {st.Local.ConnsOpen, st.Local.InFlight, st.Local.ConnsRefused, st.Local.IdleTimeouts, st.Local.RecordTimeouts, st.Local.CallsShed},
		"remote": {st.Remote.ConnsOpen, st.Remote.InFlight, st.Remote.ConnsRefused, st.Remote.IdleTimeouts, st.Remote.RecordTimeouts, st.Remote.CallsShed},
	} {
		out.gauge(descConns, float64(p.open), class)
		out.gauge(descInFlight, float64(p.inFlight), class)
		out.counter(descConnsRefused, p.refused, class)
		out.counter(descIdle, p.idle, class)
		out.counter(descRecordTimeout, p.record, class)
		out.counter(descShed, p.shed, class)
	}
}

// identity sends one NSM identity's series, labelled with its name (the
// host's own, or an --identity served here: a set fixed by the command
// line): its state, registrations and debts (regs and owed, or the
// errors reading them), its notification and callback counters, and its
// hosts' liveness when it follows telemetry.
func (ch sink) identity(name string, p *protocol, regs []nsm.Registration, regErr error, owed []nsm.Owed, owedErr error) {
	ch.gauge(descState, float64(p.state.Load()), name)
	known := map[string]struct{}{} // monitored and owed hosts, for liveness
	if regErr != nil {
		ch <- prometheus.NewInvalidMetric(descRegistrations, regErr)
	} else {
		hosts, registrants := map[string]struct{}{}, map[nsm.MyID]struct{}{}
		for _, r := range regs {
			hosts[r.MonName] = struct{}{}
			registrants[r.MyID] = struct{}{}
			known[nsm.CanonicalName(r.MonName)] = struct{}{}
		}
		ch.gauge(descMonitored, float64(len(hosts)), name)
		ch.gauge(descRegistrations, float64(len(regs)), name)
		ch.gauge(descRegistrants, float64(len(registrants)), name)
	}
	if owedErr != nil {
		ch <- prometheus.NewInvalidMetric(descOwedAge, owedErr)
	} else {
		ch <- owedAgeHistogram(owed, time.Now(), name)
		for _, o := range owed {
			known[nsm.CanonicalName(o.Host)] = struct{}{}
		}
	}
	if p.tel != nil {
		ch.liveness(name, p.tel, known)
	}
	n := &p.owed.counts
	ch.counter(descNotifySent, n.sent.Load(), name)
	ch.counter(descNotifyAcked, n.acknowledged.Load(), name)
	ch.counter(descNotifyRetried, n.retried.Load(), name)
	ch.counter(descNotifyGaveUp, n.gaveUp.Load(), name)
	ch.counter(descCalls, p.calls.Load(), name)
	ch.counter(descCallFailures, p.callErrors.Load(), name)
	ch.counter(descCallGaveUp, p.failed.Load(), name)
	ch.counter(descStoreErrors, p.storeErrors.Load(), name)
}

// liveness counts one identity's monitored and owed hosts (known,
// canonical names) by what its telemetry says of them: one series per
// state.
func (ch sink) liveness(identity string, tel *telemetry, known map[string]struct{}) {
	states := map[string]int{"up": 0, "silent": 0, "gone": 0, "unknown": 0}
	for name := range known {
		states[tel.liveness(name).State]++
	}
	for state, n := range states {
		ch.gauge(descLiveness, float64(n), identity, state)
	}
}

// owedAgeHistogram sorts the debts by how long each has been owed.
func owedAgeHistogram(owed []nsm.Owed, now time.Time, identity string) prometheus.Metric {
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
	return prometheus.MustNewConstHistogram(descOwedAge, uint64(len(owed)), sum, buckets, identity)
}
