package recv_test

import (
	"testing"
	"time"

	"github.com/hoststat/hoststat/shm"
	"github.com/hoststat/hoststat/telemetry/recv"
	"github.com/hoststat/hoststat/telemetry/sample"
)

// The master derives CPU percent and byte rates from a node's previous
// sample of the same boot, and never across a reboot, which the node
// table alone judges (the table file only stores what it is given).
func TestFiguresFollowTheNodeTable(t *testing.T) {
	srv, dir, _ := startServer(t, recv.Config{})
	r := openReader(t, dir)
	t0 := time.Now().Add(-time.Minute).Truncate(time.Second)
	at := func(sec int, boot byte, busy, idle, rx uint64) *sample.Sample {
		s := testSample(boot)
		s.Time = t0.Add(time.Duration(sec) * time.Second)
		s.BootTime = t0.Add(-time.Hour * time.Duration(10-boot))
		s.Total = sample.Ticks{User: busy, Idle: idle}
		s.CPUs = []sample.CPU{{Ticks: s.Total}}
		s.Net = []sample.NetDev{{Name: "eth0", RxBytes: rx, TxBytes: 2 * rx}}
		return s
	}
	steps := []struct {
		what    string
		s       *sample.Sample
		pct     float32
		rx, tx  float64
		devRate shm.Rate
	}{
		{"first sample: since boot", at(0, 1, 100, 300, 1000), 25, 0, 0, shm.Rate{}},
		{"same boot: over the interval", at(2, 1, 150, 350, 5000), 50, 2000, 4000, shm.Rate{RxBytesPerSec: 2000, TxBytesPerSec: 4000}},
		// Rebooted: counters restart; since boot, no rate across it, even
		// though this boot's counters happen to be higher.
		{"rebooted: since boot", at(3, 2, 900, 100, 90000), 90, 0, 0, shm.Rate{}},
		{"same new boot again", at(4, 2, 1000, 200, 91000), 50, 1000, 2000, shm.Rate{RxBytesPerSec: 1000, TxBytesPerSec: 2000}},
	}
	var rec shm.Record
	for i, st := range steps {
		sendAs(t, "127.0.0.1", srv.Addr(), encode(t, nil, 0, uint32(i+1), st.s))
		waitFor(t, 5*time.Second, st.what, func() bool { return srv.Stored() == uint64(i+1) })
		if ok, err := r.Read(0, &rec); !ok || err != nil {
			t.Fatalf("%s: Read = %v, %v", st.what, ok, err)
		}
		if rec.TotalPercent != st.pct || rec.CPUPercent[0] != st.pct || rec.RxBytesPerSec != st.rx ||
			rec.TxBytesPerSec != st.tx || rec.NetRates[0] != st.devRate {
			t.Errorf("%s: percent %v/%v, rates %v/%v, device %v; want %v, %v/%v, %v",
				st.what, rec.TotalPercent, rec.CPUPercent, rec.RxBytesPerSec, rec.TxBytesPerSec, rec.NetRates[0],
				st.pct, st.rx, st.tx, st.devRate)
		}
	}
}
