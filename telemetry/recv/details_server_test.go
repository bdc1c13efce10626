package recv_test

import (
	"testing"
	"time"

	"github.com/hoststat/hoststat/shm"
	"github.com/hoststat/hoststat/telemetry/recv"
	"github.com/hoststat/hoststat/telemetry/sample"
	"github.com/hoststat/hoststat/telemetry/wire"
)

// sendstats sends the hostname, disks and filesystems with one sample in
// a few: the master keeps the last ones (with their disk rates) for the
// samples between, from the same sender process; disk rates span the
// time since the details before; a new sender process that sends none
// shows none.
func TestDetailsKeptBetweenDetailsSamples(t *testing.T) {
	srv, dir, _ := startServer(t, recv.Config{})
	r := openReader(t, dir)
	t0 := time.Now().Add(-time.Minute).Truncate(time.Second)
	enc := wire.NewEncoder(nil)
	at := func(sec int, readBytes uint64) *sample.Sample {
		s := testSample(1)
		s.Time = t0.Add(time.Duration(sec) * time.Second)
		s.Hostname = "node-17"
		s.Disks = []sample.Disk{{Name: "sda", ReadBytes: readBytes, WriteBytes: 2 * readBytes}}
		s.Filesystems = []sample.Filesystem{{Mount: "/", Type: "ext4", Total: 100 << 30, Free: 40 << 30}}
		return s
	}
	seq := uint32(0)
	send := func(e *wire.Encoder, s *sample.Sample, details bool) {
		t.Helper()
		seq++
		bufs, err := e.AppendStatus(nil, 0, seq, s)
		if err != nil || len(bufs) != 1 {
			t.Fatalf("encode: %d datagrams, %v", len(bufs), err)
		}
		if details {
			d, _ := e.AppendDetails(nil, 0, seq, s)
			bufs = append([][]byte{d}, bufs...)
		}
		want := srv.Stored() + 1
		sendAs(t, "127.0.0.1", srv.Addr(), bufs...)
		waitFor(t, 5*time.Second, "sample stored", func() bool { return srv.Stored() == want })
	}
	var rec shm.Record
	check := func(what, host string, disks int, rate float64) {
		t.Helper()
		if ok, err := r.Read(0, &rec); !ok || err != nil {
			t.Fatalf("%s: Read = %v, %v", what, ok, err)
		}
		got := 0.0
		if len(rec.DiskRates) > 0 {
			got = rec.DiskRates[0].ReadBytesPerSec
		}
		if rec.Hostname() != host || len(rec.Sample.Disks) != disks || len(rec.Sample.Filesystems) != disks || got != rate {
			t.Errorf("%s: hostname %q, disks %v, filesystems %v, read rate %v; want %q, %d of each, %v",
				what, rec.Hostname(), rec.Sample.Disks, rec.Sample.Filesystems, got, host, disks, rate)
		}
	}
	send(enc, at(0, 1000), true)
	check("with details", "node-17", 1, 0)
	send(enc, at(1, 9999), false) // what it would have said is not sent
	check("without details: kept", "node-17", 1, 0)
	send(enc, at(2, 9999), false)
	check("without details again: kept", "node-17", 1, 0)
	send(enc, at(4, 5000), true)
	check("details again: rate since the last details (4 s)", "node-17", 1, 1000)
	send(enc, at(5, 9999), false)
	check("without details: kept with its rate", "node-17", 1, 1000)
	if rec.Sample.Disks[0].ReadBytes != 5000 {
		t.Errorf("kept disk counters %d, want 5000", rec.Sample.Disks[0].ReadBytes)
	}

	// Restarted without details (--no-details): a new epoch keeps nothing.
	again := wire.NewEncoder(nil)
	again.Epoch = enc.Epoch + 1
	send(again, at(6, 9999), false)
	check("a new sender process without details", "", 0, 0)
}
