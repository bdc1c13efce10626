// Package beostat reads the cluster node table that recvstats keeps, with
// the calls of Scyld's libbeostat in Go terms:
//
//	libbeostat                       beostat
//	beostat_get_cpu_count            Table.CPUCount
//	beostat_get_stat_cpu             Table.CPUTicks
//	beostat_get_cpu_percent          Table.CPUPercent (0-100, not 0.0-1.0)
//	beostat_get_MHz                  Table.MHz
//	beostat_get_meminfo              Table.Memory
//	beostat_get_loadavg              Table.Load
//	beostat_get_net_dev              Table.NetDevs
//	beostat_get_time                 Table.LastUpdate
//	beostat_is_node_available        Table.NodeAvailable
//	beostat_count_idle_cpus          Table.IdleCPUs
//	beostat_count_idle_cpus_on_node  Table.IdleCPUsOnNode
//	beostat_get_last_multicast       Table.LastUpdateRequest
//
// Where libbeostat returned -1, these return an error that names the node
// and what was wrong (*NodeError wrapping ErrNoSuchNode, ErrNeverSeen or
// ErrNoSuchCPU). A node is up (available) when recvstats heard from it
// within the table's down-after duration.
//
// Status and Detail are whole-node views with JSON field names, as the
// beostat command prints them.
package beostat

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hoststat/hoststat/shm"
	"github.com/hoststat/hoststat/telemetry/sample"
)

// Errors wrapped by *NodeError.
var (
	ErrNoSuchNode = errors.New("no such node")
	ErrNeverSeen  = errors.New("never seen: no status received from it")
	ErrNoSuchCPU  = errors.New("no such CPU")
)

// NodeError says which node a call failed for.
type NodeError struct {
	Node int
	Err  error
}

func (e *NodeError) Error() string { return fmt.Sprintf("beostat: node %d: %v", e.Node, e.Err) }
func (e *NodeError) Unwrap() error { return e.Err }

// Table is an open node table. Its methods are safe for concurrent use.
type Table struct {
	mu    sync.Mutex
	r     *shm.Reader
	rec   shm.Record
	nodes []int
	now   func() time.Time
}

// Open opens the table that recvstats writes in dir ("" for the default,
// /var/shm).
func Open(dir string) (*Table, error) {
	r, err := shm.OpenReader(dir)
	if err != nil {
		return nil, err
	}
	return &Table{r: r, now: time.Now}, nil
}

// Close releases the table.
func (t *Table) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.r.Close()
}

// Path is the table file.
func (t *Table) Path() string { return t.r.Path() }

// Info describes the table as a whole.
func (t *Table) Info() shm.Info {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.r.Info()
}

// NodeCount is one more than the highest node number recvstats has data
// for: node numbers run from 0 to NodeCount()-1 (some may be unused).
func (t *Table) NodeCount() int { return t.Info().NodeLimit }

// Nodes lists the node numbers the table has data for, ascending.
func (t *Table) Nodes() ([]int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.r.Nodes(nil)
}

// LastUpdateRequest is when recvstats last multicast a request for every
// node to report (zero if never).
func (t *Table) LastUpdateRequest() time.Time { return t.Info().LastUpdateRequest }

// summary reads node's fixed part; the caller holds t.mu.
func (t *Table) summary(node int) (shm.Summary, error) {
	if node < 0 || node >= t.r.Info().NodeLimit {
		return shm.Summary{}, &NodeError{node, ErrNoSuchNode}
	}
	s, ok, err := t.r.Summary(node)
	if err != nil {
		return s, &NodeError{node, err}
	}
	if !ok {
		return s, &NodeError{node, ErrNeverSeen}
	}
	return s, nil
}

// record reads node's whole record into t.rec; the caller holds t.mu.
func (t *Table) record(node int) error {
	if node < 0 || node >= t.r.Info().NodeLimit {
		return &NodeError{node, ErrNoSuchNode}
	}
	ok, err := t.r.Read(node, &t.rec)
	if err != nil {
		return &NodeError{node, err}
	}
	if !ok {
		return &NodeError{node, ErrNeverSeen}
	}
	return nil
}

func (t *Table) withSummary(node int) (shm.Summary, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.summary(node)
}

// NodeAvailable reports whether node is up: heard from within the
// table's down-after duration. A node never heard from is not available
// (no error); a node number outside the table is an error.
func (t *Table) NodeAvailable(node int) (bool, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	s, err := t.summary(node)
	if errors.Is(err, ErrNeverSeen) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return t.r.Info().Up(s.LastSeen, t.now()), nil
}

// LastUpdate is when recvstats last heard from node (master clock).
func (t *Table) LastUpdate(node int) (time.Time, error) {
	s, err := t.withSummary(node)
	return s.LastSeen, err
}

// CPUCount is the number of logical CPUs of node.
func (t *Table) CPUCount(node int) (int, error) {
	s, err := t.withSummary(node)
	return s.CPUs, err
}

// Memory is node's meminfo in bytes.
func (t *Table) Memory(node int) (sample.Memory, error) {
	s, err := t.withSummary(node)
	return s.Memory, err
}

// Load is node's loadavg.
func (t *Table) Load(node int) (sample.Load, error) {
	s, err := t.withSummary(node)
	return s.Load, err
}

// cpu runs f on CPU cpu of node's record under the lock.
func (t *Table) cpu(node, cpu int, f func(i int)) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := t.record(node); err != nil {
		return err
	}
	if n := len(t.rec.Sample.CPUs); cpu < 0 || cpu >= n {
		return &NodeError{node, fmt.Errorf("%w %d (it has %d)", ErrNoSuchCPU, cpu, n)}
	}
	f(cpu)
	return nil
}

// CPUTicks are the cumulative tick counters of one CPU of node.
func (t *Table) CPUTicks(node, cpu int) (sample.Ticks, error) {
	var v sample.Ticks
	err := t.cpu(node, cpu, func(i int) { v = t.rec.Sample.CPUs[i].Ticks })
	return v, err
}

// CPUPercent is how busy one CPU of node was between its last two
// samples, from 0 to 100 (libbeostat used 0.0 to 1.0).
func (t *Table) CPUPercent(node, cpu int) (float32, error) {
	var v float32
	err := t.cpu(node, cpu, func(i int) { v = t.rec.CPUPercent[i] })
	return v, err
}

// MHz is the current clock of one CPU of node (0 when unknown).
func (t *Table) MHz(node, cpu int) (float64, error) {
	var v float64
	err := t.cpu(node, cpu, func(i int) { v = t.rec.Sample.CPUs[i].MHz })
	return v, err
}

// NetDev is one network device of a node with its current byte rates.
type NetDev struct {
	sample.NetDev
	shm.Rate
}

// NetDevs lists node's network devices in /proc/net/dev order.
func (t *Table) NetDevs(node int) ([]NetDev, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := t.record(node); err != nil {
		return nil, err
	}
	out := make([]NetDev, len(t.rec.Sample.Net))
	for i, d := range t.rec.Sample.Net {
		out[i] = NetDev{d, t.rec.NetRates[i]}
	}
	return out, nil
}

// IdleCPUsOnNode counts node's CPUs busy less than threshold percent.
func (t *Table) IdleCPUsOnNode(node int, threshold float32) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := t.record(node); err != nil {
		return 0, err
	}
	return countBelow(t.rec.CPUPercent, threshold), nil
}

// IdleCPUs counts the CPUs of every up node busy less than threshold
// percent; a large threshold counts every CPU of the up nodes. A node
// whose record was left half-written is not known to be up: it counts no
// CPUs.
func (t *Table) IdleCPUs(threshold float32) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	info, now := t.r.Info(), t.now()
	total := 0
	nodes, err := t.r.Nodes(t.nodes[:0])
	t.nodes = nodes
	if err != nil {
		return 0, err
	}
	for _, n := range nodes {
		ok, err := t.r.Read(n, &t.rec)
		if errors.Is(err, shm.ErrWriterStuck) {
			continue
		}
		if err != nil {
			return total, &NodeError{n, err}
		}
		if ok && info.Up(t.rec.LastSeen, now) {
			total += countBelow(t.rec.CPUPercent, threshold)
		}
	}
	return total, nil
}

func countBelow(pct []float32, threshold float32) int {
	n := 0
	for _, p := range pct {
		if p < threshold {
			n++
		}
	}
	return n
}
