package sample

import (
	"testing"

	"github.com/prometheus/procfs/blockdevice"
)

func TestCollectDisks(t *testing.T) {
	c := newTestCollector(t, "testdata/proc/four")
	var s Sample
	if err := c.Collect(&s); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, d := range s.Disks {
		names = append(names, d.Name)
	}
	want := []string{"sda", "nvme0n1", "mmcblk0", "dm-0"}
	if len(names) != len(want) {
		t.Fatalf("disks %q, want %q (no partitions, loop or ram)", names, want)
	}
	for i := range want {
		if names[i] != want[i] {
			t.Fatalf("disks %q, want %q (no partitions, loop or ram)", names, want)
		}
	}
	// The counters agree with procfs's reading of the same file.
	fs, err := blockdevice.NewFS("testdata/proc/four", "testdata/proc/four")
	if err != nil {
		t.Fatal(err)
	}
	ref, err := fs.ProcDiskstats()
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]blockdevice.Diskstats{}
	for _, d := range ref {
		byName[d.DeviceName] = d
	}
	for _, d := range s.Disks {
		r, ok := byName[d.Name]
		if !ok {
			t.Fatalf("procfs has no %s", d.Name)
		}
		want := Disk{Name: d.Name, Reads: r.ReadIOs, Writes: r.WriteIOs, ReadBytes: r.ReadSectors * 512,
			WriteBytes: r.WriteSectors * 512, IOMillis: r.IOsTotalTicks}
		if d != want {
			t.Errorf("%s = %+v, procfs says %+v", d.Name, d, want)
		}
	}
}

func TestParseDiskstatsErrors(t *testing.T) {
	for _, in := range []string{
		"8 0 sda 1 2 3\n",
		"8 0 sda 1 2 3 4 5 6 7 8 9 x\n",
	} {
		if _, err := parseDiskstats([]byte(in), nil); err == nil {
			t.Errorf("%q: no error", in)
		}
	}
	many := ""
	for i := 0; i < MaxDisks+10; i++ {
		many += "8 0 sd" + string(rune('a'+i%26)) + string(rune('a'+i/26)) + " 1 2 3 4 5 6 7 8 9 10\n"
	}
	ds, err := parseDiskstats([]byte(many), nil)
	if err != nil || len(ds) != MaxDisks {
		t.Errorf("%d disks, %v; want %d", len(ds), err, MaxDisks)
	}
}

// With SkipDisks a sample leaves the disks as they were (sendstats
// sends them with only some samples); CollectDisks reads them alone.
func TestSkipDisks(t *testing.T) {
	c := newTestCollector(t, "testdata/proc/four")
	c.SkipDisks = true
	s := Sample{Disks: []Disk{{Name: "old"}}}
	if err := c.Collect(&s); err != nil {
		t.Fatal(err)
	}
	if len(s.Disks) != 1 || s.Disks[0].Name != "old" {
		t.Errorf("disks %+v after a sample that skips them, want them untouched", s.Disks)
	}
	if err := c.CollectDisks(&s); err != nil {
		t.Fatal(err)
	}
	if len(s.Disks) != 4 || s.Disks[0].Name != "sda" {
		t.Errorf("CollectDisks read %+v, want the fixture's 4 disks", s.Disks)
	}
}
