package view

import (
	"errors"
	"fmt"
	"io/fs"
	"sync"
	"time"

	"github.com/hoststat/hoststat/beostat"
	"github.com/hoststat/hoststat/shm"
)

// This file is the only one that knows package beostat: everything else
// in view works on Snapshot, Node and Detail, so a change in how the
// table is read touches this file alone.

// Source is where the views get their figures.
type Source interface {
	// Snapshot is every node the table has data for, ascending by node.
	Snapshot() (Snapshot, error)
	// Detail is one node in full; ErrNoNode when the table has no data
	// for it.
	Detail(node int) (Detail, error)
	// Details calls f with every node in full, ascending, reusing nothing
	// between calls (f may keep what it is given).
	Details(f func(*Detail)) error
}

// HistorySource is a Source that also reads the nodes' history.
type HistorySource interface {
	// History is node's chart series as of now; ErrNoHistory when none is
	// kept for it.
	History(node int, now time.Time) (History, error)
}

// ErrNoHistory says the history file is not there or has nothing of a node.
var ErrNoHistory = errors.New("no history of the node")

// ReceiverCounters are recvstats' own counters, as it publishes them in
// the table's header.
type ReceiverCounters struct {
	Received, Stored   uint64
	NodesUp, NodesDown int
	Capacity           int
	Drops              []Drop // every reason, the kernel's first
	EventOverflow      uint64
}

// Drop is one drop reason's count.
type Drop struct {
	Reason string
	Count  uint64
}

// CounterSource is a Source that also knows recvstats' counters.
type CounterSource interface {
	ReceiverCounters() ReceiverCounters
}

// ErrNoNode says a node number has no data in the table.
var ErrNoNode = errors.New("no such node in the table")

// TableSource reads the shared-memory table recvstats writes.
type TableSource struct {
	t   *beostat.Table
	dir string

	hmu  sync.Mutex // the history reader is not safe for concurrent use
	hist *shm.HistoryReader
}

// OpenTable opens the table in dir ("" for the default, /var/shm).
func OpenTable(dir string) (*TableSource, error) {
	t, err := beostat.Open(dir)
	if err != nil {
		return nil, err
	}
	return &TableSource{t: t, dir: dir}, nil
}

// History implements HistorySource: the history file beside the table,
// opened at the first call that finds it (recvstats may start keeping
// one after beostatus started).
func (s *TableSource) History(node int, now time.Time) (History, error) {
	s.hmu.Lock()
	defer s.hmu.Unlock()
	if s.hist == nil {
		r, err := shm.OpenHistoryReader(s.dir)
		if errors.Is(err, fs.ErrNotExist) {
			return History{}, fmt.Errorf("node %d: %w (recvstats keeps none: --history-nodes 0, or another --shm-dir)", node, ErrNoHistory)
		}
		if err != nil {
			return History{}, err
		}
		s.hist = r
	}
	minutes, fine, ok, err := s.hist.Read(node, now.Add(-MinuteWindow))
	if err != nil {
		return History{}, err
	}
	if !ok {
		return History{}, fmt.Errorf("node %d: %w (not heard from since recvstats keeps history, or beyond --history-nodes)", node, ErrNoHistory)
	}
	h := History{Node: node}
	if st, err := s.t.Detail(node); err == nil {
		h.MemTotal = st.MemTotal
	}
	h.Fine, h.Minutes = Charts(minutes, fine, now, s.t.Info().DownAfter)
	return h, nil
}

// Path is the table file.
func (s *TableSource) Path() string { return s.t.Path() }

// Close releases the table and the history.
func (s *TableSource) Close() error {
	s.hmu.Lock()
	if s.hist != nil {
		s.hist.Close()
		s.hist = nil
	}
	s.hmu.Unlock()
	return s.t.Close()
}

// ReceiverCounters implements CounterSource.
func (s *TableSource) ReceiverCounters() ReceiverCounters {
	info := s.t.Info()
	c := info.Counters
	r := ReceiverCounters{Received: c.Received, Stored: c.Stored, NodesUp: c.NodesUp, NodesDown: c.NodesDown,
		Capacity: info.Capacity, EventOverflow: c.EventOverflow,
		Drops: []Drop{{"kernel", info.KernelDrops}}}
	for i, name := range shm.DropReasons {
		r.Drops = append(r.Drops, Drop{name, c.Drops[i]})
	}
	return r
}

// Snapshot implements Source.
func (s *TableSource) Snapshot() (Snapshot, error) {
	info := s.t.Info()
	st, err := s.t.Status()
	snap := Snapshot{
		Time:        time.Now(),
		DownAfter:   info.DownAfter,
		WriterAlive: info.WriterPID != 0,
		Nodes:       make([]Node, len(st)),
	}
	for i := range st {
		snap.Nodes[i] = nodeOf(&st[i], info.DownAfter)
	}
	return snap, err
}

// Detail implements Source.
func (s *TableSource) Detail(node int) (Detail, error) {
	d, err := s.t.Detail(node)
	if errors.Is(err, beostat.ErrNoSuchNode) || errors.Is(err, beostat.ErrNeverSeen) {
		return Detail{}, fmt.Errorf("node %d: %w", node, ErrNoNode)
	}
	if err != nil {
		return Detail{}, err
	}
	return detailOf(&d, s.t.Info().DownAfter), nil
}

// Details implements Source.
func (s *TableSource) Details(f func(*Detail)) error {
	nodes, err := s.t.Nodes()
	if err != nil {
		return err
	}
	down := s.t.Info().DownAfter
	for _, n := range nodes {
		d, err := s.t.Detail(n)
		if errors.Is(err, beostat.ErrNoSuchNode) || errors.Is(err, beostat.ErrNeverSeen) {
			continue // the table shrank between the two reads
		}
		if err != nil {
			return err
		}
		v := detailOf(&d, down)
		f(&v)
	}
	return nil
}

func nodeOf(s *beostat.Status, downAfter time.Duration) Node {
	return Node{
		Node:          s.Node,
		Addr:          s.Addr,
		State:         stateOf(s.Up, s.AgeSeconds, downAfter),
		LastSeen:      s.LastSeen,
		AgeSeconds:    s.AgeSeconds,
		SampleTime:    s.SampleTime,
		BootTime:      s.BootTime,
		BootID:        s.BootID,
		CPUs:          s.CPUs,
		CPUPercent:    s.CPUPercent,
		MemTotal:      s.MemTotal,
		MemUsed:       s.MemUsed,
		MemFree:       s.MemFree,
		MemAvailable:  s.MemAvailable,
		MemBuffers:    s.MemBuffers,
		MemCached:     s.MemCached,
		MemShared:     s.MemShared,
		SwapTotal:     s.SwapTotal,
		SwapFree:      s.SwapFree,
		Load1:         s.Load1,
		Load5:         s.Load5,
		Load15:        s.Load15,
		ProcsRunning:  s.Running,
		ProcsTotal:    s.Procs,
		RxBytesPerSec: s.RxBytesPerSec,
		TxBytesPerSec: s.TxBytesPerSec,
	}
}

func detailOf(d *beostat.Detail, downAfter time.Duration) Detail {
	out := Detail{
		Node:   nodeOf(&d.Status, downAfter),
		PerCPU: make([]CPU, len(d.PerCPU)),
		Net:    make([]NetDev, len(d.Net)),
	}
	for i, c := range d.PerCPU {
		t := c.Ticks
		out.PerCPU[i] = CPU{
			CPU: c.CPU, Percent: c.Percent, MHz: c.MHz, Model: c.Model,
			Ticks: Ticks{User: t.User, Nice: t.Nice, System: t.System, Idle: t.Idle,
				IOWait: t.IOWait, IRQ: t.IRQ, SoftIRQ: t.SoftIRQ, Steal: t.Steal},
		}
	}
	for i, n := range d.Net {
		out.Net[i] = NetDev{
			Name: n.Name, RxBytes: n.RxBytes, RxPackets: n.RxPackets, RxErrors: n.RxErrors, RxDrops: n.RxDrops,
			TxBytes: n.TxBytes, TxPackets: n.TxPackets, TxErrors: n.TxErrors, TxDrops: n.TxDrops,
			RxBytesPerSec: n.RxBytesPerSec, TxBytesPerSec: n.TxBytesPerSec,
		}
	}
	return out
}
