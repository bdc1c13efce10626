package shm

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hoststat/hoststat/telemetry/rates"
	"github.com/hoststat/hoststat/telemetry/sample"
)

// Hostname, disks with their rates and filesystems go through the table
// as given; a node without them (an older sendstats) reads back without
// them; Last gives back the disk counters rates are derived from.
func TestDetailsRoundTrip(t *testing.T) {
	dir := t.TempDir()
	w := create(t, dir, WriterOptions{})
	defer w.Close()
	s := counterSample(100, 2, 2)
	s.Hostname = "node-0017.cluster.example.org.with-a-long-suffix"
	s.Disks = []sample.Disk{{Name: "nvme0n1", Reads: 1, Writes: 2, ReadBytes: 3 << 30, WriteBytes: 4 << 30, IOMillis: 5},
		{Name: "sda", Reads: 6, Writes: 7, ReadBytes: 8, WriteBytes: 9, IOMillis: 10}}
	s.Filesystems = []sample.Filesystem{{Mount: "/", Type: "ext4", Total: 100 << 30, Free: 40 << 30, Avail: 35 << 30, Files: 1e6, FilesFree: 5e5},
		{Mount: "/home", Type: "nfs4", NotAnswering: true}}
	var fig rates.Rates
	fig.Between(nil, s)
	fig.Disk[0] = rates.Disk{ReadBytesPerSec: 1e6, WriteBytesPerSec: 2e6, BusyPercent: 37.5}
	if err := w.PutRates(3, addrOf(3), base, s, &fig); err != nil {
		t.Fatal(err)
	}
	plain := counterSample(100, 2, 2) // no details
	if err := w.Put(4, addrOf(4), base, plain); err != nil {
		t.Fatal(err)
	}

	r := openReader(t, dir)
	var rec Record
	if ok, err := r.Read(3, &rec); !ok || err != nil {
		t.Fatal(ok, err)
	}
	if want := s.Hostname[:hostnameSize]; rec.Hostname() != want || rec.Sample.Hostname != want {
		t.Errorf("hostname %q / %q, want %q (cut to the record's room)", rec.Hostname(), rec.Sample.Hostname, want)
	}
	if rec.Disks != 2 || rec.Filesystems != 2 || !slices.Equal(rec.Sample.Disks, s.Disks) || !slices.Equal(rec.Sample.Filesystems, s.Filesystems) {
		t.Errorf("disks %+v filesystems %+v, want %+v %+v", rec.Sample.Disks, rec.Sample.Filesystems, s.Disks, s.Filesystems)
	}
	if !slices.Equal(rec.DiskRates, []DiskRate{{1e6, 2e6, 37.5}, {}}) {
		t.Errorf("disk rates %+v", rec.DiskRates)
	}
	sum, ok, err := r.Summary(3)
	if !ok || err != nil || sum.Hostname() != s.Hostname[:hostnameSize] {
		t.Errorf("Summary hostname %q, %v, %v", sum.Hostname(), ok, err)
	}
	if ok, err := r.Read(4, &rec); !ok || err != nil {
		t.Fatal(ok, err)
	}
	if rec.Hostname() != "" || len(rec.Sample.Disks) != 0 || len(rec.Sample.Filesystems) != 0 || len(rec.DiskRates) != 0 {
		t.Errorf("node without details reads %q %v %v", rec.Hostname(), rec.Sample.Disks, rec.Sample.Filesystems)
	}

	var last sample.Sample
	if !w.Last(3, &last) || len(last.Disks) != 2 || last.Disks[0].Name != "nvme0n1" || last.Disks[0].ReadBytes != 3<<30 ||
		last.Disks[0].WriteBytes != 4<<30 || last.Disks[0].IOMillis != 5 {
		t.Errorf("Last disks = %+v", last.Disks)
	}
	// A node that loses its details moves to a smaller need and reads
	// back without them; figures that do not fit are refused.
	if err := w.PutRates(3, addrOf(3), base.Add(time.Second), s, &rates.Rates{CPUPercent: fig.CPUPercent, Net: fig.Net}); err == nil ||
		!strings.Contains(err.Error(), "disks") {
		t.Errorf("figures without disks: %v", err)
	}
	if err := w.Put(3, addrOf(3), base.Add(time.Second), plain); err != nil {
		t.Fatal(err)
	}
	if ok, err := r.Read(3, &rec); !ok || err != nil || rec.Hostname() != "" || len(rec.Sample.Disks) != 0 {
		t.Errorf("after details went: %q %v %v %v", rec.Hostname(), rec.Sample.Disks, ok, err)
	}
}

// PutRatesKeepingDetails stores a sample's own figures but leaves the
// hostname, disks (with their rates) and filesystems as the record held
// them, also when the sample needs a larger slot (more CPUs); a sample
// with details of its own is refused, and a node without a record keeps
// nothing.
func TestPutKeepingDetails(t *testing.T) {
	dir := t.TempDir()
	w := create(t, dir, WriterOptions{})
	defer w.Close()
	s := counterSample(100, 2, 2)
	s.Hostname = "node-5"
	s.Disks = []sample.Disk{{Name: "sda", ReadBytes: 7 << 20}}
	s.Filesystems = []sample.Filesystem{{Mount: "/", Type: "ext4", Total: 1 << 40, Free: 1 << 39}}
	var fig rates.Rates
	fig.Between(nil, s)
	fig.Disk[0] = rates.Disk{ReadBytesPerSec: 4096, BusyPercent: 12.5}
	if err := w.PutRates(5, addrOf(5), base, s, &fig); err != nil {
		t.Fatal(err)
	}
	if err := w.PutRatesKeepingDetails(5, addrOf(5), base, s, &fig); err == nil {
		t.Error("a sample with details of its own was stored as keeping the old ones")
	}
	r := openReader(t, dir)
	var rec Record
	for i, cpus := range []int{2, 16} { // 16 CPUs: a larger slot
		plain := counterSample(uint64(101+i), cpus, 2)
		var pf rates.Rates
		pf.Between(nil, plain)
		if err := w.PutRatesKeepingDetails(5, addrOf(5), base.Add(time.Duration(i+1)*time.Second), plain, &pf); err != nil {
			t.Fatal(err)
		}
		if ok, err := r.Read(5, &rec); !ok || err != nil {
			t.Fatal(ok, err)
		}
		if rec.Hostname() != "node-5" || !slices.Equal(rec.Sample.Disks, s.Disks) || !slices.Equal(rec.Sample.Filesystems, s.Filesystems) ||
			!slices.Equal(rec.DiskRates, []DiskRate{{ReadBytesPerSec: 4096, BusyPercent: 12.5}}) {
			t.Errorf("%d CPUs: kept %q %+v %+v %+v", cpus, rec.Hostname(), rec.Sample.Disks, rec.Sample.Filesystems, rec.DiskRates)
		}
		if len(rec.Sample.CPUs) != cpus || rec.Sample.Load.One != plain.Load.One {
			t.Errorf("%d CPUs: the sample's own figures not stored: %d CPUs, load %v", cpus, len(rec.Sample.CPUs), rec.Sample.Load.One)
		}
	}
	plain := counterSample(103, 2, 2)
	var pf rates.Rates
	pf.Between(nil, plain)
	if err := w.PutRatesKeepingDetails(6, addrOf(6), base, plain, &pf); err != nil {
		t.Fatal(err)
	}
	if ok, err := r.Read(6, &rec); !ok || err != nil || rec.Hostname() != "" || len(rec.Sample.Disks) != 0 {
		t.Errorf("new node kept %q %v (%v %v)", rec.Hostname(), rec.Sample.Disks, ok, err)
	}
}
