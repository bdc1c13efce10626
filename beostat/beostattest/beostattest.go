// Package beostattest fills a shared-memory table with samples whose
// readings are known, for the tests of what reads the table: package
// beostat and the beostat command.
package beostattest

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/hoststat/hoststat/shm"
	"github.com/hoststat/hoststat/telemetry/rates"
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
//   - from Addr(node), booted an hour before, boot id node, 0, 0, …,
//     hostname "nodeN";
//   - disk sda reading 2000 B/s and writing 1000 B/s, 25 % busy;
//   - filesystem / (ext4) 60 GiB used of 100 GiB, 35 GiB available, and
//     /scratch (xfs) not answering statfs.
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

		Hostname: fmt.Sprintf("node%d", node),
		Disks:    []sample.Disk{{Name: "sda", Reads: 10, Writes: 20, ReadBytes: 1 << 20, WriteBytes: 2 << 20, IOMillis: 1000}},
		Filesystems: []sample.Filesystem{
			{Mount: "/", Type: "ext4", Total: 100 << 30, Free: 40 << 30, Avail: 35 << 30, Files: 1000, FilesFree: 400},
			{Mount: "/scratch", Type: "xfs", NotAnswering: true},
		},
	}
	if err := w.Put(node, Addr(node), first, s); err != nil {
		return err
	}
	prev := *s
	prev.CPUs, prev.Net, prev.Disks = slices.Clone(s.CPUs), slices.Clone(s.Net), slices.Clone(s.Disks)
	s.Time = seen
	s.Total = sample.Ticks{User: 275, Idle: 325}
	s.CPUs[0].Ticks = sample.Ticks{User: 150, Idle: 150}
	s.CPUs[1].Ticks = sample.Ticks{User: 125, Idle: 175}
	s.Net[1].RxBytes, s.Net[1].TxBytes = 12000, 11000
	s.Disks[0].ReadBytes += 4000
	s.Disks[0].WriteBytes += 2000
	s.Disks[0].IOMillis += 500
	var fig rates.Rates
	fig.Between(&prev, s)
	return w.PutRates(node, Addr(node), seen, s, &fig)
}

// LeaveMidWrite makes node's record in the table in dir look as a writer
// killed in the middle of writing it leaves it: its sequence word odd. It
// finds the record by the layout of docs/shm.md, as any reader could.
func LeaveMidWrite(dir string, node int) error {
	f, err := os.OpenFile(filepath.Join(dir, shm.FileName), os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	word := func(off int64, n int) (uint64, error) {
		var b [8]byte
		if _, err := f.ReadAt(b[:n], off); err != nil {
			return 0, err
		}
		return binary.LittleEndian.Uint64(b[:]), nil
	}
	leaf, err := word(4096+4*int64(node/1024), 4)
	if err != nil || leaf == 0 {
		return fmt.Errorf("node %d has no index leaf: %v", node, err)
	}
	rec, err := word(8192+4096*int64(leaf-1)+4*int64(node%1024), 4)
	if err != nil || rec == 0 {
		return fmt.Errorf("node %d has no record: %v", node, err)
	}
	records, err := word(40, 8)
	if err != nil {
		return err
	}
	off := int64(records) + 320*int64(rec-1)
	seq, err := word(off, 8)
	if err != nil {
		return err
	}
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], seq|1)
	_, err = f.WriteAt(b[:], off)
	return err
}

// SetWriterPID writes pid as the table's writer in the header, as if that
// process had the table open.
func SetWriterPID(dir string, pid int) error {
	f, err := os.OpenFile(filepath.Join(dir, shm.FileName), os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], uint32(pid))
	_, err = f.WriteAt(b[:], 120)
	return err
}
