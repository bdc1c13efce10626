package sample

import (
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/procfs"
)

func newTestCollector(t *testing.T, root string) *Collector {
	t.Helper()
	c, err := NewCollector(root, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// cpuinfoIsX86 tells whether procfs parses cpuinfo fixtures, which are in
// the x86 format, on this architecture.
var cpuinfoIsX86 = runtime.GOARCH == "amd64" || runtime.GOARCH == "386"

func TestCollectFourCPUs(t *testing.T) {
	c := newTestCollector(t, "testdata/proc/four")
	var s Sample
	before := time.Now()
	if err := c.Collect(&s); err != nil {
		t.Fatal(err)
	}
	if s.Time.Before(before) || time.Since(s.Time) > time.Minute {
		t.Errorf("Time = %v, want about now", s.Time)
	}
	if want := time.Unix(1700000000, 0); !s.BootTime.Equal(want) {
		t.Errorf("BootTime = %v, want %v", s.BootTime, want)
	}
	wantID := [16]byte{0x01, 0x23, 0xab, 0xcd, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab}
	if s.BootID != wantID {
		t.Errorf("BootID = %x, want %x", s.BootID, wantID)
	}
	if want := (Ticks{4000, 100, 2000, 80000, 400, 40, 80, 8}); s.Total != want {
		t.Errorf("Total = %+v, want %+v", s.Total, want)
	}
	wantTicks := []Ticks{
		{1000, 25, 500, 20000, 100, 10, 20, 2},
		{1001, 25, 501, 20001, 101, 11, 21, 3},
		{999, 25, 499, 19999, 99, 9, 19, 1},
		{1000, 25, 500, 20000, 100, 10, 20, 2},
	}
	if len(s.CPUs) != 4 {
		t.Fatalf("%d CPUs, want 4", len(s.CPUs))
	}
	for i, cpu := range s.CPUs {
		if cpu.Ticks != wantTicks[i] {
			t.Errorf("cpu%d ticks = %+v, want %+v", i, cpu.Ticks, wantTicks[i])
		}
		if !cpuinfoIsX86 {
			continue
		}
		wantMHz, wantModel := 3000.125, "Example(R) Big Core @ 3.00GHz"
		if i >= 2 {
			wantMHz, wantModel = 1200.5, "Example(R) Little Core"
		}
		if cpu.MHz != wantMHz || cpu.Model != wantModel {
			t.Errorf("cpu%d = %v MHz %q, want %v MHz %q", i, cpu.MHz, cpu.Model, wantMHz, wantModel)
		}
	}
	const k = 1024
	wantMem := Memory{Total: 16384000 * k, Free: 8192000 * k, Available: 12288000 * k, Buffers: 102400 * k,
		Cached: 2048000 * k, Shared: 51200 * k, SwapTotal: 4096000 * k, SwapFree: 4000000 * k}
	if s.Memory != wantMem {
		t.Errorf("Memory = %+v, want %+v", s.Memory, wantMem)
	}
	if want := (Load{One: 1.25, Five: 0.5, Fifteen: 0.05, Running: 3, Total: 456, LastPID: 7890}); s.Load != want {
		t.Errorf("Load = %+v, want %+v", s.Load, want)
	}
	wantNet := []NetDev{
		{Name: "lo", RxBytes: 5000, RxPackets: 50, TxBytes: 5000, TxPackets: 50},
		{Name: "eth0", RxBytes: math.MaxUint64, RxPackets: 2000, RxErrors: 3, RxDrops: 4, TxBytes: 9000000, TxPackets: 1500, TxErrors: 5, TxDrops: 6},
		{Name: "enp129s0f1", RxBytes: 1, RxPackets: 2, RxErrors: 3, RxDrops: 4, TxBytes: 9, TxPackets: 10, TxErrors: 11, TxDrops: 12},
	}
	if !slices.Equal(s.Net, wantNet) {
		t.Errorf("Net = %+v\nwant %+v", s.Net, wantNet)
	}
}

// TestCollectAgreesWithProcfs reads every fixture tree, and the live /proc,
// both through Collect and through procfs, and compares every field.
func TestCollectAgreesWithProcfs(t *testing.T) {
	roots, _ := filepath.Glob("testdata/proc/*")
	roots = append(roots, "/proc")
	for _, root := range roots {
		t.Run(filepath.Base(root), func(t *testing.T) {
			c := newTestCollector(t, root)
			c.CPUInfoInterval = 0
			var s Sample
			if err := c.Collect(&s); err != nil {
				t.Fatal(err)
			}
			fs, _ := procfs.NewFS(root)
			st, err := fs.Stat()
			if err != nil {
				t.Fatal(err)
			}
			live := root == "/proc" // counters move between the two reads
			if !live {
				if got := ticksFromProcfs(st.CPUTotal); got != s.Total {
					t.Errorf("total %+v, procfs %+v", s.Total, got)
				}
				for i := range s.CPUs {
					if got := ticksFromProcfs(st.CPU[int64(i)]); got != s.CPUs[i].Ticks {
						t.Errorf("cpu%d %+v, procfs %+v", i, s.CPUs[i].Ticks, got)
					}
				}
			}
			if len(s.CPUs) != len(st.CPU) {
				t.Errorf("%d CPUs, procfs %d", len(s.CPUs), len(st.CPU))
			}
			if want := time.Unix(int64(st.BootTime), 0); !live && !s.BootTime.Equal(want) {
				t.Errorf("boot time %v, procfs %v", s.BootTime, want)
			}
			mi, err := fs.Meminfo()
			if err != nil {
				t.Fatal(err)
			}
			if !live {
				want := Memory{*mi.MemTotalBytes, *mi.MemFreeBytes, *mi.MemAvailableBytes, *mi.BuffersBytes,
					*mi.CachedBytes, *mi.ShmemBytes, *mi.SwapTotalBytes, *mi.SwapFreeBytes}
				if s.Memory != want {
					t.Errorf("memory %+v, procfs %+v", s.Memory, want)
				}
			} else if s.Memory.Total != *mi.MemTotalBytes {
				t.Errorf("MemTotal %d, procfs %d", s.Memory.Total, *mi.MemTotalBytes)
			}
			nd, err := fs.NetDev()
			if err != nil {
				t.Fatal(err)
			}
			if len(s.Net) != len(nd) {
				t.Errorf("%d net devices, procfs %d", len(s.Net), len(nd))
			}
			for _, d := range s.Net {
				p, ok := nd[d.Name]
				if !ok {
					t.Errorf("device %q unknown to procfs", d.Name)
					continue
				}
				want := NetDev{d.Name, p.RxBytes, p.RxPackets, p.RxErrors, p.RxDropped, p.TxBytes, p.TxPackets, p.TxErrors, p.TxDropped}
				if !live && d != want {
					t.Errorf("device %+v, procfs %+v", d, want)
				}
			}
			la, err := fs.LoadAvg()
			if err != nil {
				t.Fatal(err)
			}
			if !live && (s.Load.One != la.Load1 || s.Load.Five != la.Load5 || s.Load.Fifteen != la.Load15) {
				t.Errorf("load %+v, procfs %+v", s.Load, la)
			}
			if cpuinfoIsX86 {
				infos, err := fs.CPUInfo()
				if err != nil {
					t.Fatal(err)
				}
				for i, info := range infos {
					if i < len(s.CPUs) && (s.CPUs[i].Model != info.ModelName || !live && s.CPUs[i].MHz != info.CPUMHz) {
						t.Errorf("cpu%d %v MHz %q, procfs %v MHz %q", i, s.CPUs[i].MHz, s.CPUs[i].Model, info.CPUMHz, info.ModelName)
					}
				}
			}
		})
	}
}

// ticksFromProcfs undoes procfs's division by USER_HZ.
func ticksFromProcfs(c procfs.CPUStat) Ticks {
	r := func(v float64) uint64 { return uint64(math.Round(v * 100)) }
	return Ticks{r(c.User), r(c.Nice), r(c.System), r(c.Idle), r(c.Iowait), r(c.IRQ), r(c.SoftIRQ), r(c.Steal)}
}

// copyTree copies a fixture tree so a test can change its files.
func copyTree(t *testing.T, from string) string {
	t.Helper()
	to := t.TempDir()
	err := os.CopyFS(to, os.DirFS(from))
	if err != nil {
		t.Fatal(err)
	}
	return to
}

func TestCPUInfoIsRereadOnlyWhenDue(t *testing.T) {
	if !cpuinfoIsX86 {
		t.Skip("cpuinfo fixtures are in the x86 format")
	}
	root := copyTree(t, "testdata/proc/four")
	c := newTestCollector(t, root)
	c.CPUInfoInterval = time.Hour
	var s Sample
	if err := c.Collect(&s); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(filepath.Join(root, "cpuinfo"))
	b = []byte(strings.ReplaceAll(string(b), "3000.125", "2500.000"))
	if err := os.WriteFile(filepath.Join(root, "cpuinfo"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := c.Collect(&s); err != nil {
		t.Fatal(err)
	}
	if s.CPUs[0].MHz != 3000.125 {
		t.Errorf("MHz = %v before the interval passed, want the cached 3000.125", s.CPUs[0].MHz)
	}
	c.CPUInfoInterval = 0
	if err := c.Collect(&s); err != nil {
		t.Fatal(err)
	}
	if s.CPUs[0].MHz != 2500 {
		t.Errorf("MHz = %v once due, want 2500", s.CPUs[0].MHz)
	}
	if s.CPUs[0].Model != s.CPUs[1].Model || s.CPUs[2].Model == s.CPUs[0].Model {
		t.Errorf("models %q", []string{s.CPUs[0].Model, s.CPUs[1].Model, s.CPUs[2].Model})
	}
}

// A /proc file that changes between samples is read afresh each time,
// and a device that vanishes leaves the list.
func TestCollectSeesChanges(t *testing.T) {
	root := copyTree(t, "testdata/proc/four")
	c := newTestCollector(t, root)
	var s Sample
	if err := c.Collect(&s); err != nil {
		t.Fatal(err)
	}
	dev := "Inter-|\n face |\n  eth0: 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16\n"
	if err := os.WriteFile(filepath.Join(root, "net/dev"), []byte(dev), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "loadavg"), []byte("9.99 8.00 7.00 1/2 3\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := c.Collect(&s); err != nil {
		t.Fatal(err)
	}
	if len(s.Net) != 1 || s.Net[0].Name != "eth0" || s.Net[0].TxDrops != 12 {
		t.Errorf("Net = %+v", s.Net)
	}
	if s.Load != (Load{9.99, 8, 7, 1, 2, 3}) {
		t.Errorf("Load = %+v", s.Load)
	}
}

func TestNewCollectorErrors(t *testing.T) {
	if _, err := NewCollector(t.TempDir(), nil); err == nil {
		t.Error("NewCollector on an empty directory succeeded")
	}
	root := copyTree(t, "testdata/proc/four")
	os.WriteFile(filepath.Join(root, "loadavg"), []byte("1.0 2.0\n"), 0o644)
	_, err := NewCollector(root, nil)
	if err == nil || !strings.Contains(err.Error(), filepath.Join(root, "loadavg")) {
		t.Errorf("err = %v, want one naming the loadavg path", err)
	}
}

func TestCollectLive(t *testing.T) {
	if _, err := os.Stat("/proc/stat"); err != nil {
		t.Skip("no /proc")
	}
	c := newTestCollector(t, "/proc")
	var s Sample
	if err := c.Collect(&s); err != nil {
		t.Fatal(err)
	}
	if len(s.CPUs) == 0 || s.Memory.Total == 0 || s.Total.All() == 0 || s.BootTime.After(s.Time) || len(s.Net) == 0 {
		t.Errorf("implausible sample %+v", s)
	}
	if s.BootID == ([16]byte{}) {
		t.Error("zero boot id")
	}
}

// BenchmarkCollect reads the live /proc as sendstats does; the cpuinfo
// case re-reads /proc/cpuinfo every time, which Collect does only every
// CPUInfoInterval.
func BenchmarkCollect(b *testing.B) {
	for _, bc := range []struct {
		name  string
		every time.Duration
	}{{"default", DefaultCPUInfoInterval}, {"cpuinfo", 0}} {
		b.Run(bc.name, func(b *testing.B) {
			c, err := NewCollector("/proc", nil)
			if err != nil {
				b.Skip(err)
			}
			defer c.Close()
			c.CPUInfoInterval = bc.every
			var s Sample
			c.Collect(&s)
			b.ReportAllocs()
			for b.Loop() {
				if err := c.Collect(&s); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkCollectThroughProcfs reads the same four per-sample files through
// procfs's own readers, opened and parsed anew each time: the cost the
// Collector's kept-open files and allocation-free parsers avoid. Run beside
// BenchmarkCollect to get the ratio (docs/benchmarks.md).
func BenchmarkCollectThroughProcfs(b *testing.B) {
	fs, err := procfs.NewFS("/proc")
	if err != nil {
		b.Skip(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := fs.Stat(); err != nil {
			b.Fatal(err)
		}
		if _, err := fs.Meminfo(); err != nil {
			b.Fatal(err)
		}
		if _, err := fs.NetDev(); err != nil {
			b.Fatal(err)
		}
		if _, err := fs.LoadAvg(); err != nil {
			b.Fatal(err)
		}
	}
}
