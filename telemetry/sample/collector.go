package sample

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/prometheus/procfs"
	"golang.org/x/sys/unix"

	"github.com/hoststat/hoststat/internal/rawio"
)

// DefaultCPUInfoInterval is how often Collect re-reads /proc/cpuinfo.
// Parsing it costs more than all the other files together (it grows with the
// CPU count and procfs allocates per field), the model names never change
// and MHz is informational, so once every 10 s is plenty.
const DefaultCPUInfoInterval = 10 * time.Second

// Collector reads samples from a /proc tree. It is not safe for concurrent
// use.
//
// The hot files (/proc/stat, /proc/meminfo, /proc/net/dev, /proc/loadavg) are
// kept open and re-read with pread(2) from offset 0, which regenerates a
// /proc file without the cost of open(2), and parsed in place without
// allocating. Measured on a 2-CPU VM, procfs's Stat+Meminfo+NetDev+LoadAvg
// cost about 90 µs and 290 allocations per sample, most of it open(2),
// fmt.Sscanf and maps; this path costs a tenth of that. procfs still parses
// /proc/cpuinfo, whose format differs per architecture, and the tests check
// every fixture against procfs's reading of the same files.
type Collector struct {
	// CPUInfoInterval is how often /proc/cpuinfo is re-read; it is also
	// re-read whenever /proc/stat shows a CPU it has not described.
	CPUInfoInterval time.Duration
	// FilesystemInterval is how often the mount table, the mounts' use
	// and the hostname are re-read (DefaultFilesystemInterval).
	FilesystemInterval time.Duration
	// StatfsTimeout bounds the wait for the mounts' statfs answers in one
	// refresh (DefaultStatfsTimeout); Statfs is the call (unix.Statfs).
	StatfsTimeout time.Duration
	Statfs        StatfsFunc
	// NetworkFilesystems adds NFS, CIFS, Lustre and other network
	// mounts to the filesystems; off by default (see networkTypes).
	NetworkFilesystems bool
	// SkipDisks leaves /proc/diskstats unread and s.Disks as they were:
	// sendstats sends the disks with only every few samples
	// (CollectDisks reads them alone).
	SkipDisks bool

	fs                             procfs.FS
	stat, meminfo, netdev, loadavg procFile
	// Optional files: a /proc without them gives samples without
	// hostname, disks or filesystems.
	hostname, diskstats, mounts procFile
	bootID                      [16]byte

	slowAt      time.Time // last read of mounts, statfs and hostname
	mountList   []mount
	filesystems []Filesystem
	hostnameStr string
	asked       []int
	probes      map[string]*statfsProbe
	warned      map[string]bool

	cpuIDs      []int // /proc/stat CPU numbers of the last sample
	cpuinfoAt   time.Time
	mhzByID     []float64
	modelByID   []string
	cpuinfoWarn bool // warned once that cpuinfo is unreadable
	log         *slog.Logger
}

// NewCollector opens the /proc tree at procRoot ("/proc" on a live system)
// and checks that a first sample can be read from it. Warnings go to log
// (slog.Default() when nil): a daemon in the background has no stderr.
func NewCollector(procRoot string, log *slog.Logger) (*Collector, error) {
	if log == nil {
		log = slog.Default()
	}
	fs, err := procfs.NewFS(procRoot)
	if err != nil {
		return nil, err
	}
	id, err := ReadBootID(procRoot)
	if err != nil {
		return nil, err
	}
	c := &Collector{CPUInfoInterval: DefaultCPUInfoInterval, FilesystemInterval: DefaultFilesystemInterval,
		StatfsTimeout: DefaultStatfsTimeout, Statfs: unix.Statfs, fs: fs, bootID: id, log: log}
	files := []struct {
		f    *procFile
		name string
	}{{&c.stat, "stat"}, {&c.meminfo, "meminfo"}, {&c.netdev, "net/dev"}, {&c.loadavg, "loadavg"}}
	for _, x := range files {
		if err := x.f.open(filepath.Join(procRoot, x.name)); err != nil {
			c.Close()
			return nil, err
		}
	}
	optional := []struct {
		f    *procFile
		name string
	}{{&c.hostname, "sys/kernel/hostname"}, {&c.diskstats, "diskstats"}, {&c.mounts, "mounts"}}
	for _, x := range optional {
		if err := x.f.open(filepath.Join(procRoot, x.name)); err != nil {
			log.Warn("optional /proc file unreadable; samples go without it", "err", err)
		}
	}
	var s Sample
	if err := c.Collect(&s); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// Close releases the open /proc files.
func (c *Collector) Close() error {
	return errors.Join(c.stat.close(), c.meminfo.close(), c.netdev.close(), c.loadavg.close(),
		c.hostname.close(), c.diskstats.close(), c.mounts.close())
}

// Collect fills s with a new reading, reusing s's slices and strings. On
// error s may be partly overwritten.
func (c *Collector) Collect(s *Sample) error {
	s.Time = time.Now()
	s.BootID = c.bootID

	b, err := c.stat.read()
	if err != nil {
		return err
	}
	if c.cpuIDs, err = parseStat(b, s, c.cpuIDs[:0]); err != nil {
		return fmt.Errorf("%s: %w", c.stat.path, err)
	}
	c.fillCPUInfo(s)

	if b, err = c.meminfo.read(); err != nil {
		return err
	}
	if err := parseMeminfo(b, &s.Memory); err != nil {
		return fmt.Errorf("%s: %w", c.meminfo.path, err)
	}
	if b, err = c.netdev.read(); err != nil {
		return err
	}
	if s.Net, err = parseNetDev(b, s.Net); err != nil {
		return fmt.Errorf("%s: %w", c.netdev.path, err)
	}
	if b, err = c.loadavg.read(); err != nil {
		return err
	}
	if err := parseLoadavg(b, &s.Load); err != nil {
		return fmt.Errorf("%s: %w", c.loadavg.path, err)
	}
	if !c.SkipDisks {
		// With the sample: rates need counters of the sample's own time.
		if err := c.CollectDisks(s); err != nil {
			return err
		}
	}
	if c.slowAt.IsZero() || s.Time.Sub(c.slowAt) >= c.FilesystemInterval {
		c.slowAt = s.Time
		c.readSlow()
	}
	if s.Hostname != c.hostnameStr {
		s.Hostname = c.hostnameStr
	}
	s.Filesystems = append(s.Filesystems[:0], c.filesystems...)
	return nil
}

// CollectDisks reads /proc/diskstats into s.Disks, reusing them; none
// without the file.
func (c *Collector) CollectDisks(s *Sample) error {
	if c.diskstats.f == nil {
		s.Disks = s.Disks[:0]
		return nil
	}
	b, err := c.diskstats.read()
	if err != nil {
		return err
	}
	if s.Disks, err = parseDiskstats(b, s.Disks); err != nil {
		return fmt.Errorf("%s: %w", c.diskstats.path, err)
	}
	return nil
}

// readSlow re-reads what changes slowly or costs a round trip: the
// hostname, the mount table and the mounts' use. Trouble here never fails
// a sample: it goes out without the figure.
func (c *Collector) readSlow() {
	if c.hostname.f != nil {
		if b, err := c.hostname.read(); err == nil {
			b = bytes.TrimSpace(b)
			if len(b) > MaxNameLen {
				b = b[:MaxNameLen]
			}
			if string(b) != c.hostnameStr {
				c.hostnameStr = string(b)
			}
		}
	}
	if c.mounts.f == nil {
		return
	}
	b, err := c.mounts.read()
	if err != nil {
		return
	}
	c.mountList = parseMounts(b, c.mountList, c.NetworkFilesystems)
	c.refreshFilesystems(c.mountList)
}

// fillCPUInfo sets MHz and model of every CPU, re-reading /proc/cpuinfo
// when it is due or does not describe a CPU of this sample. Without a
// readable cpuinfo the sample still goes out, with MHz 0 and no model.
func (c *Collector) fillCPUInfo(s *Sample) {
	due := c.cpuinfoAt.IsZero() || s.Time.Sub(c.cpuinfoAt) >= c.CPUInfoInterval
	for _, id := range c.cpuIDs {
		if id >= len(c.mhzByID) {
			due = true
			break
		}
	}
	if due {
		c.cpuinfoAt = s.Time
		if err := c.readCPUInfo(); err != nil && !c.cpuinfoWarn {
			c.cpuinfoWarn = true
			c.log.Warn("cpuinfo unreadable; CPUs are sent without MHz and model", "err", err)
		}
	}
	for i, id := range c.cpuIDs {
		cpu := &s.CPUs[i]
		cpu.MHz, cpu.Model = 0, ""
		if id < len(c.mhzByID) {
			cpu.MHz, cpu.Model = c.mhzByID[id], c.modelByID[id]
		}
	}
}

// maxCPUID bounds the tables indexed by CPU number, whatever cpuinfo says.
const maxCPUID = 1 << 16

func (c *Collector) readCPUInfo() error {
	infos, err := c.fs.CPUInfo()
	if err != nil {
		return err
	}
	clear(c.mhzByID)
	for _, info := range infos {
		id := int(info.Processor)
		if id >= maxCPUID {
			continue
		}
		for id >= len(c.mhzByID) {
			c.mhzByID = append(c.mhzByID, 0)
			c.modelByID = append(c.modelByID, "")
		}
		c.mhzByID[id] = info.CPUMHz
		// Keep one string per distinct model, so a sample's CPUs share it.
		model := info.ModelName
		if id > 0 && c.modelByID[id-1] == model {
			model = c.modelByID[id-1]
		}
		if c.modelByID[id] != model {
			c.modelByID[id] = model
		}
	}
	return nil
}

// procFile is a /proc file kept open and re-read from the start.
type procFile struct {
	path string
	f    *os.File
	fd   int // f's descriptor, for rawio
	buf  []byte
}

func (p *procFile) open(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	p.path, p.f, p.fd, p.buf = path, f, int(f.Fd()), make([]byte, 4096)
	return nil
}

func (p *procFile) close() error {
	if p.f == nil {
		return nil
	}
	err := p.f.Close()
	p.f = nil
	return err
}

// maxProcFile bounds one read; /proc/stat of an 8192-CPU machine is ~1 MiB.
const maxProcFile = 16 << 20

// read returns the whole file: preads from offset 0 until one returns
// nothing, as os.File.ReadAt does (a /proc file may come in several
// pieces, one seq_file page at a time), with a buffer that grows to hold
// it all. The preads are raw (package rawio: generating a /proc file never
// blocks), so that a periodic sample wakes no runtime thread.
func (p *procFile) read() ([]byte, error) {
	if p.f == nil {
		return nil, fmt.Errorf("%s: %w", p.path, os.ErrClosed)
	}
	for {
		n := 0
		for n < len(p.buf) {
			m, err := rawio.Pread(p.fd, p.buf[n:], int64(n))
			if err != nil {
				return nil, &os.PathError{Op: "read", Path: p.path, Err: err}
			}
			if m == 0 {
				return p.buf[:n], nil
			}
			n += m
		}
		if len(p.buf) >= maxProcFile {
			return nil, fmt.Errorf("%s: larger than %d bytes", p.path, maxProcFile)
		}
		p.buf = make([]byte, 2*len(p.buf))
	}
}
