// Package beostattest fills a shared-memory table with samples whose
// readings are known, for the tests of what reads the table: package
// beostat and the beostat command.
package beostattest

import (
	"net/netip"
	"time"

	"github.com/hoststat/hoststat/shm"
	"github.com/hoststat/hoststat/telemetry/sample"
)

// Addr is where node's samples come from: 10.0.0.node:3040.
func Addr(node int) netip.AddrPort {
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, 0, byte(node)}), 3040)
}

// PutTwoSamples puts two samples of node, 2 s apart, the second one seen
// at seen, so that the table has rates and percents for it:
//
//   - CPU 0 at 3000 MHz 50 % busy, CPU 1 at 2000 MHz 25 % busy (37.5 %
//     overall), both of model "Test CPU";
//   - 4 GiB of 16 GiB of memory used, 0 of 1 GiB of swap;
//   - load 1.50 1.00 0.50, 2 running of 300, last pid 4242;
//   - lo idle, eth0 receiving 1000 B/s and sending 500 B/s, 7 packets
//     received;
//   - from Addr(node), booted an hour before, boot id node, 0, 0, ….
func PutTwoSamples(w *shm.Writer, node int, seen time.Time) error {
	first := seen.Add(-2 * time.Second)
	s := &sample.Sample{
		Time: first, BootTime: first.Add(-time.Hour), BootID: [16]byte{byte(node)},
		Total: sample.Ticks{User: 200, Idle: 200},
		CPUs: []sample.CPU{
			{Ticks: sample.Ticks{User: 100, Idle: 100}, MHz: 3000, Model: "Test CPU"},
			{Ticks: sample.Ticks{User: 100, Idle: 100}, MHz: 2000, Model: "Test CPU"},
		},
		Memory: sample.Memory{Total: 16 << 30, Free: 2 << 30, Available: 12 << 30, SwapTotal: 1 << 30, SwapFree: 1 << 30},
		Load:   sample.Load{One: 1.5, Five: 1, Fifteen: 0.5, Running: 2, Total: 300, LastPID: 4242},
		Net:    []sample.NetDev{{Name: "lo"}, {Name: "eth0", RxBytes: 10000, TxBytes: 10000, RxPackets: 7}},
	}
	if err := w.Put(node, Addr(node), first, s); err != nil {
		return err
	}
	s.Time = seen
	s.Total = sample.Ticks{User: 275, Idle: 325}
	s.CPUs[0].Ticks = sample.Ticks{User: 150, Idle: 150}
	s.CPUs[1].Ticks = sample.Ticks{User: 125, Idle: 175}
	s.Net[1].RxBytes, s.Net[1].TxBytes = 12000, 11000
	return w.Put(node, Addr(node), seen, s)
}
