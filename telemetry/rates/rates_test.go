package rates

import (
	"slices"
	"testing"
	"time"

	"github.com/hoststat/hoststat/telemetry/sample"
)

var t0 = time.Date(2026, 11, 30, 6, 0, 0, 0, time.UTC)

func ticks(busy, idle uint64) sample.Ticks { return sample.Ticks{User: busy, Idle: idle} }

// smp is a sample at t0+sec with the given total and per-CPU ticks
// (busy, idle pairs) and devices.
func smp(sec int, total sample.Ticks, cpus []sample.Ticks, devs ...sample.NetDev) *sample.Sample {
	s := &sample.Sample{Time: t0.Add(time.Duration(sec) * time.Second), Total: total, Net: devs}
	for _, c := range cpus {
		s.CPUs = append(s.CPUs, sample.CPU{Ticks: c})
	}
	return s
}

func dev(name string, rx, tx uint64) sample.NetDev {
	return sample.NetDev{Name: name, RxBytes: rx, TxBytes: tx}
}

func TestBetween(t *testing.T) {
	tests := []struct {
		name      string
		prev, cur *sample.Sample
		want      Rates
	}{{
		name: "first sample: since boot, no rates",
		cur:  smp(1, ticks(25, 75), []sample.Ticks{ticks(10, 30), ticks(15, 45)}, dev("eth0", 1000, 2000)),
		want: Rates{TotalPercent: 25, CPUPercent: []float32{25, 25}, Net: []Net{{}}},
	}, {
		name: "steady interval",
		prev: smp(0, ticks(200, 200), []sample.Ticks{ticks(100, 100), ticks(100, 100)}, dev("lo", 1000, 1000), dev("eth0", 1000, 5000)),
		cur:  smp(2, ticks(275, 325), []sample.Ticks{ticks(150, 150), ticks(125, 175)}, dev("lo", 3000, 3000), dev("eth0", 3000, 9000)),
		want: Rates{TotalPercent: 37.5, CPUPercent: []float32{50, 25},
			Net: []Net{{1000, 1000}, {1000, 2000}}, RxBytesPerSec: 1000, TxBytesPerSec: 2000}, // lo left out of the totals
	}, {
		name: "counters reset after a reboot the table missed: since boot, no rate across",
		prev: smp(0, ticks(9000, 9000), []sample.Ticks{ticks(9000, 9000)}, dev("eth0", 1<<40, 1<<40)),
		cur:  smp(1, ticks(10, 30), []sample.Ticks{ticks(10, 30)}, dev("eth0", 5, 5)),
		want: Rates{TotalPercent: 25, CPUPercent: []float32{25}, Net: []Net{{}}},
	}, {
		name: "byte counter wrapped: zero, never a huge rate",
		prev: smp(0, ticks(0, 100), nil, dev("eth0", 1<<64-100, 50)),
		cur:  smp(1, ticks(0, 200), nil, dev("eth0", 100, 150)),
		want: Rates{Net: []Net{{}}},
	}, {
		name: "idle went back alone: since boot",
		prev: smp(0, ticks(10, 100), []sample.Ticks{ticks(10, 100)}),
		cur:  smp(1, ticks(30, 90), []sample.Ticks{ticks(30, 90)}),
		want: Rates{TotalPercent: 25, CPUPercent: []float32{25}, Net: []Net{}},
	}, {
		name: "zero interval: since boot, no rates",
		prev: smp(5, ticks(50, 50), []sample.Ticks{ticks(50, 50)}, dev("eth0", 100, 100)),
		cur:  &sample.Sample{Time: t0.Add(5 * time.Second), Total: ticks(50, 50), CPUs: []sample.CPU{{Ticks: ticks(50, 50)}}, Net: []sample.NetDev{dev("eth0", 300, 300)}},
		want: Rates{TotalPercent: 50, CPUPercent: []float32{50}, Net: []Net{{}}},
	}, {
		name: "clock went back: no rates",
		prev: smp(5, ticks(0, 10), nil, dev("eth0", 100, 100)),
		cur:  smp(4, ticks(0, 20), nil, dev("eth0", 300, 300)),
		want: Rates{Net: []Net{{}}},
	}, {
		name: "devices appear, disappear and move",
		prev: smp(0, ticks(0, 10), nil, dev("eth0", 100, 100), dev("ib0", 0, 0), dev("gone", 5, 5)),
		cur:  smp(2, ticks(0, 20), nil, dev("ib0", 400, 200), dev("new0", 9000, 9000), dev("eth0", 300, 500)),
		want: Rates{Net: []Net{{200, 100}, {}, {100, 200}}, RxBytesPerSec: 300, TxBytesPerSec: 300},
	}, {
		name: "a CPU came online: since boot for it alone",
		prev: smp(0, ticks(10, 10), []sample.Ticks{ticks(10, 10)}),
		cur:  smp(1, ticks(30, 70), []sample.Ticks{ticks(20, 20), ticks(10, 30)}),
		want: Rates{TotalPercent: 25, CPUPercent: []float32{50, 25}, Net: []Net{}},
	}, {
		name: "all busy clamps at 100",
		prev: smp(0, ticks(0, 0), []sample.Ticks{ticks(5, 0)}),
		cur:  smp(1, ticks(100, 0), []sample.Ticks{ticks(15, 0)}),
		want: Rates{TotalPercent: 100, CPUPercent: []float32{100}, Net: []Net{}},
	}}
	var r Rates // reused across cases, as recvstats does
	for _, tt := range tests {
		r.Between(tt.prev, tt.cur)
		if r.TotalPercent != tt.want.TotalPercent || !slices.Equal(r.CPUPercent, tt.want.CPUPercent) ||
			!slices.Equal(r.Net, tt.want.Net) || r.RxBytesPerSec != tt.want.RxBytesPerSec || r.TxBytesPerSec != tt.want.TxBytesPerSec {
			t.Errorf("%s:\n got %+v\nwant %+v", tt.name, r, tt.want)
		}
	}
}

func TestPercent(t *testing.T) {
	tests := []struct {
		prev *sample.Ticks
		cur  sample.Ticks
		want float32
	}{
		{nil, ticks(1, 3), 25},
		{&sample.Ticks{}, ticks(1, 3), 25},
		{ptr(ticks(1, 3)), ticks(3, 5), 50},
		{ptr(ticks(1, 3)), ticks(1, 3), 25}, // no ticks in between: since boot
		{ptr(ticks(5, 5)), ticks(1, 3), 25}, // went back
		{nil, sample.Ticks{}, 0},            // nothing at all
		{ptr(ticks(0, 10)), sample.Ticks{Idle: 10, IOWait: 10, System: 20}, float32(200.0 / 3)},
	}
	for _, tt := range tests {
		if got := Percent(tt.prev, &tt.cur); got != tt.want {
			t.Errorf("Percent(%v, %v) = %v, want %v", tt.prev, tt.cur, got, tt.want)
		}
	}
}

func ptr[T any](v T) *T { return &v }

func BenchmarkBetween(b *testing.B) {
	prev := smp(0, ticks(400, 400), []sample.Ticks{ticks(100, 100), ticks(100, 100), ticks(100, 100), ticks(100, 100)},
		dev("lo", 1, 1), dev("eth0", 1, 1), dev("ib0", 1, 1))
	cur := smp(1, ticks(500, 700), []sample.Ticks{ticks(120, 180), ticks(120, 180), ticks(120, 180), ticks(140, 160)},
		dev("lo", 9, 9), dev("eth0", 90, 90), dev("ib0", 900, 900))
	var r Rates
	b.ReportAllocs()
	for b.Loop() {
		r.Between(prev, cur)
	}
}

func disk(name string, rd, wr, ioms uint64) sample.Disk {
	return sample.Disk{Name: name, ReadBytes: rd, WriteBytes: wr, IOMillis: ioms}
}

func TestBetweenDisks(t *testing.T) {
	at := func(sec int, disks ...sample.Disk) *sample.Sample {
		return &sample.Sample{Time: t0.Add(time.Duration(sec) * time.Second), Disks: disks}
	}
	tests := []struct {
		name       string
		prev, cur  *sample.Sample
		want       []Disk
		read, writ float64
	}{
		{"first sample: no rates", nil, at(1, disk("sda", 100, 100, 10)), []Disk{{}}, 0, 0},
		{"steady, disks move and appear",
			at(0, disk("sda", 1000, 2000, 100), disk("nvme0n1", 0, 0, 0)),
			at(2, disk("nvme0n1", 4000, 0, 2500), disk("sda", 3000, 6000, 600), disk("sdb", 5, 5, 5)),
			[]Disk{{2000, 0, 100}, {1000, 2000, 25}, {}}, 3000, 2000},
		{"counter went back: zero, never huge",
			at(0, disk("sda", 1<<40, 10, 10)), at(1, disk("sda", 5, 20, 20)), []Disk{{}}, 0, 0},
		{"clock went back: no rates",
			at(5, disk("sda", 0, 0, 0)), at(4, disk("sda", 10, 10, 10)), []Disk{{}}, 0, 0},
	}
	var r Rates
	for _, tt := range tests {
		r.Between(tt.prev, tt.cur)
		if !slices.Equal(r.Disk, tt.want) || r.ReadBytesPerSec != tt.read || r.WriteBytesPerSec != tt.writ {
			t.Errorf("%s: got %+v, %v, %v; want %+v, %v, %v", tt.name, r.Disk, r.ReadBytesPerSec, r.WriteBytesPerSec, tt.want, tt.read, tt.writ)
		}
	}
}
