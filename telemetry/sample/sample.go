// Package sample holds one node's status as sendstats reads it from /proc:
// the structured fields that travel in wire protocol v1 and that recvstats
// keeps in the shared-memory table. A master never parses /proc text; it
// only ever sees these fields.
package sample

import "time"

// Sample is one reading of a node's /proc.
type Sample struct {
	Time     time.Time // when the node took the sample (node clock)
	BootTime time.Time // from /proc/stat btime
	BootID   [16]byte  // /proc/sys/kernel/random/boot_id; changes on every reboot

	Total Ticks // the aggregate "cpu" line of /proc/stat
	CPUs  []CPU // one per logical CPU, in /proc/stat order

	Memory Memory
	Load   Load
	Net    []NetDev // every device of /proc/net/dev, in file order

	// Hostname is /proc/sys/kernel/hostname; empty when unreadable.
	Hostname string
	// Disks are the whole disks of /proc/diskstats, in file order
	// (partitions, loop, ram and zram devices left out).
	Disks []Disk
	// Filesystems are the node's mounted local filesystems with their
	// use (statfs), in /proc/mounts order; see Collector for which.
	Filesystems []Filesystem
}

// Uptime is how long the node had been up when the sample was taken; 0
// when either time is unknown.
func (s *Sample) Uptime() time.Duration {
	if s.Time.IsZero() || s.BootTime.IsZero() || s.Time.Before(s.BootTime) {
		return 0
	}
	return s.Time.Sub(s.BootTime)
}

// Disk is one line of /proc/diskstats: cumulative counters since boot.
type Disk struct {
	Name                  string
	Reads, Writes         uint64 // completed requests
	ReadBytes, WriteBytes uint64 // sectors × 512, as the kernel counts them
	IOMillis              uint64 // time the device had I/O in flight, ms
}

// Filesystem is one mount and its use, in bytes and inodes.
type Filesystem struct {
	Mount, Type string
	// NotAnswering is set when statfs of the mount did not answer within
	// the collector's timeout (a dead NFS server, a hung device): the
	// figures below are then zero and the mount is reported, not waited
	// for.
	NotAnswering       bool
	Total, Free, Avail uint64 // bytes; Avail is what unprivileged users may use
	Files, FilesFree   uint64 // inodes
}

// Used is the space in use.
func (f *Filesystem) Used() uint64 {
	if f.Free > f.Total {
		return 0
	}
	return f.Total - f.Free
}

// Ticks are cumulative CPU time counters in USER_HZ units (1/100 s), as in
// /proc/stat.
type Ticks struct {
	User, Nice, System, Idle, IOWait, IRQ, SoftIRQ, Steal uint64
}

// Busy is all time that was not idle or waiting for I/O.
func (t Ticks) Busy() uint64 {
	return t.User + t.Nice + t.System + t.IRQ + t.SoftIRQ + t.Steal
}

// All is the sum of every counter.
func (t Ticks) All() uint64 {
	return t.Busy() + t.Idle + t.IOWait
}

// CPU is one logical processor.
type CPU struct {
	Ticks Ticks
	MHz   float64 // current clock from /proc/cpuinfo; 0 when unknown
	Model string  // "model name" from /proc/cpuinfo
}

// Memory is /proc/meminfo in bytes.
type Memory struct {
	Total, Free, Available, Buffers, Cached, Shared, SwapTotal, SwapFree uint64
}

// Used is the memory in use: total less available (or, on kernels without
// MemAvailable, less free, buffers and cache).
func (m Memory) Used() uint64 {
	free := m.Available
	if free == 0 {
		free = m.Free + m.Buffers + m.Cached
	}
	if free > m.Total {
		return 0
	}
	return m.Total - free
}

// SwapUsed is swap in use.
func (m Memory) SwapUsed() uint64 {
	if m.SwapFree > m.SwapTotal {
		return 0
	}
	return m.SwapTotal - m.SwapFree
}

// Load is /proc/loadavg.
type Load struct {
	One, Five, Fifteen float64
	Running, Total     uint32 // runnable and existing scheduling entities
	LastPID            uint32
}

// NetDev is one line of /proc/net/dev.
type NetDev struct {
	Name                                  string
	RxBytes, RxPackets, RxErrors, RxDrops uint64
	TxBytes, TxPackets, TxErrors, TxDrops uint64
}
