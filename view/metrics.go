package view

import (
	"compress/gzip"
	"io"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
)

// userHZ is the unit of /proc/stat tick counters on every Linux.
const userHZ = 100

// /metrics has two parts. recvstats' own counters are a client_golang
// collector. Every node's series (46 a node of 2 CPUs and 2 devices, so
// 460,000 at 10,000 nodes) are written straight in the text exposition
// format from one pass over the table, family by family into buffers that
// the next scrape reuses: through client_golang each series was a const
// metric, a protobuf struct, a consistency check and a hash, seconds of
// CPU a scrape and a storm of allocations (docs/benchmarks.md). Names
// follow node_exporter's where it has one, so its dashboards apply; every
// node series has the labels node and host (empty until the table knows
// host names). A down node has only hoststat_node_up 0, its info and its
// last-seen time: its last figures are old, and a dashboard should show a
// gap, not a flat line.

// Collector exposes recvstats' counters, as it publishes them in the
// table's header, read afresh at each scrape.
type Collector struct {
	src Source
}

// NewCollector returns a collector of src's receiver counters (none when
// src is no CounterSource).
func NewCollector(src Source) *Collector { return &Collector{src: src} }

var (
	descReceived  = prometheus.NewDesc("hoststat_recvstats_received_datagrams_total", "Datagrams recvstats read from its socket since it started.", nil, nil)
	descStored    = prometheus.NewDesc("hoststat_recvstats_stored_samples_total", "Samples recvstats stored in the table since it started.", nil, nil)
	descDrops     = prometheus.NewDesc("hoststat_recvstats_drops_total", "Datagrams or samples recvstats dropped since it started, by reason.", []string{"reason"}, nil)
	descNodes     = prometheus.NewDesc("hoststat_recvstats_nodes", "Nodes in recvstats' table by state (up, or down: silent past the down-after time).", []string{"state"}, nil)
	descCapacity  = prometheus.NewDesc("hoststat_recvstats_table_capacity_nodes", "Node records the table has room for before it grows.", nil, nil)
	descOverflow  = prometheus.NewDesc("hoststat_recvstats_event_overflow_total", "Node events --on-event's queue had no room for.", nil, nil)
	receiverDescs = []*prometheus.Desc{descReceived, descStored, descDrops, descNodes, descCapacity, descOverflow}
)

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range receiverDescs {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	cs, ok := c.src.(CounterSource)
	if !ok {
		return
	}
	r := cs.ReceiverCounters()
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v int, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v), labels...)
	}
	counter(descReceived, r.Received)
	counter(descStored, r.Stored)
	for _, d := range r.Drops {
		counter(descDrops, d.Count, d.Reason)
	}
	gauge(descNodes, r.NodesUp, "up")
	gauge(descNodes, r.NodesDown, "down")
	gauge(descCapacity, r.Capacity)
	counter(descOverflow, r.EventOverflow)
}

// A node family is one metric name of the node series.
type nodeFamily int

const (
	famUp nodeFamily = iota
	famInfo
	famLastSeen
	famBoot
	famLoad1
	famLoad5
	famLoad15
	famRunning
	famMem // 8 of them, in the order of memFields
	famCPU = famMem + nodeFamily(len(memFields))
	famNet = famCPU + 1 // 8 of them, in the order of netFields
	nFams  = famNet + nodeFamily(len(netFields))
)

var memFields = [...]struct {
	name string
	get  func(*Node) uint64
}{
	{"MemTotal", func(n *Node) uint64 { return n.MemTotal }},
	{"MemFree", func(n *Node) uint64 { return n.MemFree }},
	{"MemAvailable", func(n *Node) uint64 { return n.MemAvailable }},
	{"Buffers", func(n *Node) uint64 { return n.MemBuffers }},
	{"Cached", func(n *Node) uint64 { return n.MemCached }},
	{"Shmem", func(n *Node) uint64 { return n.MemShared }},
	{"SwapTotal", func(n *Node) uint64 { return n.SwapTotal }},
	{"SwapFree", func(n *Node) uint64 { return n.SwapFree }},
}

var netFields = [...]struct {
	name string
	get  func(*NetDev) uint64
}{
	{"receive_bytes", func(d *NetDev) uint64 { return d.RxBytes }},
	{"receive_packets", func(d *NetDev) uint64 { return d.RxPackets }},
	{"receive_errs", func(d *NetDev) uint64 { return d.RxErrors }},
	{"receive_drop", func(d *NetDev) uint64 { return d.RxDrops }},
	{"transmit_bytes", func(d *NetDev) uint64 { return d.TxBytes }},
	{"transmit_packets", func(d *NetDev) uint64 { return d.TxPackets }},
	{"transmit_errs", func(d *NetDev) uint64 { return d.TxErrors }},
	{"transmit_drop", func(d *NetDev) uint64 { return d.TxDrops }},
}

var cpuModes = [...]string{"user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal"}

// famHead is each family's HELP and TYPE lines, and famName its name
// followed by "{", made once.
var famHead, famName [nFams][]byte

func init() {
	def := func(f nodeFamily, name, typ, help string) {
		famHead[f] = []byte("# HELP " + name + " " + help + "\n# TYPE " + name + " " + typ + "\n")
		famName[f] = []byte(name + "{")
	}
	def(famUp, "hoststat_node_up", "gauge", "1 when recvstats heard from the node within its down-after time, else 0.")
	def(famInfo, "hoststat_node_info", "gauge", "The node's address and boot id (value 1).")
	def(famLastSeen, "hoststat_node_last_seen_timestamp_seconds", "gauge", "When recvstats last heard from the node (master clock).")
	def(famBoot, "node_boot_time_seconds", "gauge", "Node boot time, in unixtime.")
	def(famLoad1, "node_load1", "gauge", "1m load average.")
	def(famLoad5, "node_load5", "gauge", "5m load average.")
	def(famLoad15, "node_load15", "gauge", "15m load average.")
	def(famRunning, "node_procs_running", "gauge", "Number of processes in runnable state.")
	for i, m := range memFields {
		def(famMem+nodeFamily(i), "node_memory_"+m.name+"_bytes", "gauge", "Memory information field "+m.name+"_bytes.")
	}
	def(famCPU, "node_cpu_seconds_total", "counter", "Seconds the CPUs spent in each mode.")
	for i, m := range netFields {
		def(famNet+nodeFamily(i), "node_network_"+m.name+"_total", "counter", "Network device statistic "+m.name+".")
	}
}

// nodeWriter holds the buffers of one scrape of the node series.
type nodeWriter struct {
	fam [nFams][]byte
	// Of the node being written: host="…", node="…", and both.
	host, nodeL, labels []byte
	gz                  *gzip.Writer
}

// maxScrapes bounds the scrapes written at once (and so the buffers
// kept: one nodeWriter each, about the size of a scrape); more are
// answered 503, as promhttp's MaxRequestsInFlight does.
const maxScrapes = 2

// metricsHandler serves /metrics.
type metricsHandler struct {
	src     Source
	log     *slog.Logger
	reg     *prometheus.Registry
	writers chan *nodeWriter // free writers; taking one is a scrape slot
}

func newMetricsHandler(src Source, log *slog.Logger) *metricsHandler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewCollector(src))
	h := &metricsHandler{src: src, log: log, reg: reg, writers: make(chan *nodeWriter, maxScrapes)}
	for range maxScrapes {
		h.writers <- &nodeWriter{}
	}
	return h
}

func (h *metricsHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var nw *nodeWriter
	select {
	case nw = <-h.writers:
		defer func() { h.writers <- nw }()
	default:
		http.Error(w, "too many scrapes at once", http.StatusServiceUnavailable)
		return
	}
	fams, err := h.reg.Gather()
	if err != nil {
		h.log.Warn("metrics: recvstats' counters", "err", err)
	}
	for i := range nw.fam {
		nw.fam[i] = nw.fam[i][:0]
	}
	if err := h.src.Details(nw.node); err != nil {
		// Nothing is written yet: the scrape fails as a whole rather
		// than show part of the cluster as if it were all of it.
		h.log.Warn("metrics: reading the table", "err", err)
		http.Error(w, "reading the node table: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	format := expfmt.NewFormat(expfmt.TypeTextPlain)
	w.Header().Set("Content-Type", string(format))
	var out io.Writer = w
	if acceptsGzip(r) {
		w.Header().Set("Content-Encoding", "gzip")
		if nw.gz == nil {
			nw.gz, _ = gzip.NewWriterLevel(w, gzip.BestSpeed)
		} else {
			nw.gz.Reset(w)
		}
		out = nw.gz
		defer nw.gz.Close()
	}
	enc := expfmt.NewEncoder(out, format)
	for _, f := range fams {
		if err := enc.Encode(f); err != nil {
			return // the client went away
		}
	}
	for f := range nw.fam {
		if len(nw.fam[f]) == 0 {
			continue
		}
		if _, err := out.Write(famHead[f]); err != nil {
			return
		}
		if _, err := out.Write(nw.fam[f]); err != nil {
			return
		}
	}
}

func acceptsGzip(r *http.Request) bool {
	for _, part := range strings.Split(r.Header.Get("Accept-Encoding"), ",") {
		if enc, q, _ := strings.Cut(strings.TrimSpace(part), ";"); strings.TrimSpace(enc) == "gzip" && strings.TrimSpace(q) != "q=0" {
			return true
		}
	}
	return false
}

// node appends the series of one node to the families' buffers.
func (nw *nodeWriter) node(d *Detail) {
	n := &d.Node
	nw.host = appendLabel(nw.host[:0], "host", n.Host)
	nw.nodeL = strconv.AppendInt(append(nw.nodeL[:0], `node="`...), int64(n.Node), 10)
	nw.nodeL = append(nw.nodeL, '"')
	nw.labels = append(append(append(nw.labels[:0], nw.host...), ','), nw.nodeL...)
	up := 0.0
	if n.State != Down {
		up = 1
	}
	nw.sample(famUp, "", "", up)
	b := append(nw.fam[famInfo], famName[famInfo]...)
	b = appendLabel(b, "addr", n.Addr)
	b = append(b, ',')
	b = appendLabel(b, "boot_id", n.BootID)
	b = append(b, ',')
	nw.fam[famInfo] = appendValue(append(b, nw.labels...), 1)
	if !n.LastSeen.IsZero() {
		nw.sample(famLastSeen, "", "", float64(n.LastSeen.UnixNano())/1e9)
	}
	if n.State == Down {
		return
	}
	if !n.BootTime.IsZero() {
		nw.sample(famBoot, "", "", float64(n.BootTime.Unix()))
	}
	nw.sample(famLoad1, "", "", n.Load1)
	nw.sample(famLoad5, "", "", n.Load5)
	nw.sample(famLoad15, "", "", n.Load15)
	nw.sample(famRunning, "", "", float64(n.ProcsRunning))
	for i, m := range memFields {
		nw.sample(famMem+nodeFamily(i), "", "", float64(m.get(n)))
	}
	for _, cpu := range d.PerCPU {
		t := &cpu.Ticks
		ticks := [len(cpuModes)]uint64{t.User, t.Nice, t.System, t.Idle, t.IOWait, t.IRQ, t.SoftIRQ, t.Steal}
		for i, mode := range cpuModes {
			// Labels sorted by name, as client_golang writes them: cpu, host, mode, node.
			b := append(nw.fam[famCPU], famName[famCPU]...)
			b = append(b, `cpu="`...)
			b = strconv.AppendInt(b, int64(cpu.CPU), 10)
			b = append(b, `",`...)
			b = append(b, nw.host...)
			b = append(b, `,mode="`...)
			b = append(b, mode...)
			b = append(b, `",`...)
			b = append(b, nw.nodeL...)
			nw.fam[famCPU] = appendValue(b, float64(ticks[i])/userHZ)
		}
	}
	for i := range d.Net {
		for j, m := range netFields {
			nw.sample(famNet+nodeFamily(j), "device", d.Net[i].Name, float64(m.get(&d.Net[i])))
		}
	}
}

// sample appends one series of family f: an optional first label (its
// name sorting before host), the node's labels, the value.
func (nw *nodeWriter) sample(f nodeFamily, label, value string, v float64) {
	b := append(nw.fam[f], famName[f]...)
	if label != "" {
		b = append(appendLabel(b, label, value), ',')
	}
	nw.fam[f] = appendValue(append(b, nw.labels...), v)
}

// appendLabel appends name="value", value escaped as the text format
// wants and made valid UTF-8 (a node names its own devices).
func appendLabel(b []byte, name, value string) []byte {
	b = append(b, name...)
	b = append(b, `="`...)
	for i := 0; i < len(value); {
		c := value[i]
		if c < utf8.RuneSelf {
			switch c {
			case '\\':
				b = append(b, `\\`...)
			case '"':
				b = append(b, `\"`...)
			case '\n':
				b = append(b, `\n`...)
			default:
				b = append(b, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(value[i:])
		if r == utf8.RuneError && size == 1 {
			b = utf8.AppendRune(b, utf8.RuneError)
		} else {
			b = append(b, value[i:i+size]...)
		}
		i += size
	}
	return append(b, '"')
}

// appendValue closes the labels and appends the value as client_golang's
// text encoder writes it, and the end of the line.
func appendValue(b []byte, v float64) []byte {
	b = append(b, "} "...)
	switch {
	case math.IsNaN(v):
		b = append(b, "NaN"...)
	case math.IsInf(v, +1):
		b = append(b, "+Inf"...)
	case math.IsInf(v, -1):
		b = append(b, "-Inf"...)
	default:
		b = strconv.AppendFloat(b, v, 'g', -1, 64)
	}
	return append(b, '\n')
}
