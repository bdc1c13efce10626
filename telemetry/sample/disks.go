package sample

import (
	"bytes"
	"fmt"
)

// sectorBytes is the unit of /proc/diskstats' sector counts, whatever the
// device's own sector size.
const sectorBytes = 512

// parseDiskstats reads the whole disks of /proc/diskstats into disks
// (reused): at most MaxDisks, in file order. Partitions are left out (their
// I/O is counted again in their disk), as are loop, ram, zram and floppy
// devices, which are not disks a cluster admin watches.
func parseDiskstats(b []byte, disks []Disk) ([]Disk, error) {
	n := 0
	for len(b) > 0 && n < MaxDisks {
		var line []byte
		line, b = nextLine(b)
		_, rest := nextField(line) // major
		_, rest = nextField(rest)  // minor
		name, rest := nextField(rest)
		if len(name) == 0 {
			continue // blank line
		}
		var v [10]uint64
		for i := range v {
			var f []byte
			f, rest = nextField(rest)
			x, ok := parseUint(f)
			if !ok {
				return disks[:n], fmt.Errorf("%q field %d: %w", name, i+4, errSyntax)
			}
			v[i] = x
		}
		if skipDisk(name) || isPartition(name, disks[:n]) {
			continue
		}
		if n == len(disks) {
			disks = append(disks, Disk{})
		}
		d := &disks[n]
		if d.Name != string(name) {
			d.Name = string(name)
		}
		// reads, merged, sectors read, ms reading, writes, merged,
		// sectors written, ms writing, in flight, ms doing I/O
		d.Reads, d.ReadBytes = v[0], v[2]*sectorBytes
		d.Writes, d.WriteBytes = v[4], v[6]*sectorBytes
		d.IOMillis = v[9]
		n++
	}
	return disks[:n], nil
}

func skipDisk(name []byte) bool {
	for _, p := range [...]string{"loop", "ram", "zram", "fd"} {
		if bytes.HasPrefix(name, []byte(p)) && allDigits(name[len(p):]) {
			return true
		}
	}
	return false
}

// isPartition tells whether name is a partition of a disk listed before
// it, as the kernel names them: sda1 of sda, nvme0n1p1 of nvme0n1,
// mmcblk0p1 of mmcblk0 ("p" when the disk's name ends in a digit).
func isPartition(name []byte, disks []Disk) bool {
	for i := range disks {
		d := disks[i].Name
		if len(name) <= len(d) || string(name[:len(d)]) != d {
			continue
		}
		rest := name[len(d):]
		if c := d[len(d)-1]; c >= '0' && c <= '9' {
			if rest[0] != 'p' {
				continue
			}
			rest = rest[1:]
		}
		if allDigits(rest) {
			return true
		}
	}
	return false
}

func allDigits(b []byte) bool {
	for _, c := range b {
		if c < '0' || c > '9' {
			return false
		}
	}
	return len(b) > 0
}
