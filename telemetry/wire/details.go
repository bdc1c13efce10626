package wire

import (
	"encoding/binary"
	"fmt"

	"github.com/hoststat/hoststat/telemetry/sample"
)

// A details payload (kind 3, one datagram, sent just before the status
// parts of the same seq; see docs/protocol.md):
//
//	byte len, hostname
//	uvarint disks, filesystems
//	disks × (byte len, name, 5 uvarint: reads writes read-bytes write-bytes io-ms)
//	filesystems × (byte len, mount, byte len, type, byte flags,
//	               5 uvarint: total free avail files files-free)
//
// A receiver of wire v1 that predates it drops it (unknown kind) and
// still takes the status parts.

// fsNotAnswering is the flag bit of a filesystem whose statfs hung.
const fsNotAnswering = 1

func diskLen(d *sample.Disk) int {
	return 1 + len(clip(d.Name)) + uvarintLen(d.Reads) + uvarintLen(d.Writes) + uvarintLen(d.ReadBytes) +
		uvarintLen(d.WriteBytes) + uvarintLen(d.IOMillis)
}

func fsLen(f *sample.Filesystem) int {
	return 3 + len(clip(f.Mount)) + len(clip(f.Type)) + uvarintLen(f.Total) + uvarintLen(f.Free) +
		uvarintLen(f.Avail) + uvarintLen(f.Files) + uvarintLen(f.FilesFree)
}

func appendString(b []byte, s string) []byte {
	s = clip(s)
	return append(append(b, byte(len(s))), s...)
}

// HasDetails tells whether s carries anything a details datagram sends.
func HasDetails(s *sample.Sample) bool {
	return s.Hostname != "" || len(s.Disks) > 0 || len(s.Filesystems) > 0
}

// AppendDetails appends the details datagram of s (hostname, disks,
// filesystems) to dst, for the sample of the same node and seq that
// AppendStatus encodes; a sender sends it first. What does not fit in one
// datagram is left out, disks first kept, then filesystems, in order, and
// the number left out is returned: a node with a dozen disks and two dozen
// mounts fits.
func (e *Encoder) AppendDetails(dst []byte, node, seq uint32, s *sample.Sample) ([]byte, int) {
	budget := e.budget()
	size := 1 + len(clip(s.Hostname)) + 2*2 // counts of up to 2 bytes each
	disks := min(len(s.Disks), sample.MaxDisks)
	fss := min(len(s.Filesystems), sample.MaxFilesystems)
	nd, nf := 0, 0
	for ; nd < disks && size+diskLen(&s.Disks[nd]) <= budget; nd++ {
		size += diskLen(&s.Disks[nd])
	}
	for ; nf < fss && size+fsLen(&s.Filesystems[nf]) <= budget; nf++ {
		size += fsLen(&s.Filesystems[nf])
	}
	h := Header{Kind: KindDetails, Node: node, BootID: s.BootID, Epoch: e.Epoch, Seq: seq,
		Parts: 1, Time: s.Time, BootTime: s.BootTime}
	start := len(dst)
	b := e.startDatagram(dst, &h)
	b = appendString(b, s.Hostname)
	b = binary.AppendUvarint(b, uint64(nd))
	b = binary.AppendUvarint(b, uint64(nf))
	for i := range s.Disks[:nd] {
		d := &s.Disks[i]
		b = appendString(b, d.Name)
		for _, v := range [...]uint64{d.Reads, d.Writes, d.ReadBytes, d.WriteBytes, d.IOMillis} {
			b = binary.AppendUvarint(b, v)
		}
	}
	for i := range s.Filesystems[:nf] {
		f := &s.Filesystems[i]
		b = appendString(b, f.Mount)
		b = appendString(b, f.Type)
		var flags byte
		if f.NotAnswering {
			flags |= fsNotAnswering
		}
		b = append(b, flags)
		for _, v := range [...]uint64{f.Total, f.Free, f.Avail, f.Files, f.FilesFree} {
			b = binary.AppendUvarint(b, v)
		}
	}
	return e.seal(b, start), len(s.Disks) - nd + len(s.Filesystems) - nf
}

// walkDetails checks a details payload and, with s not nil, stores it in
// s's Hostname, Disks and Filesystems, reusing their strings when equal.
func walkDetails(r *reader, s *sample.Sample) {
	host := r.bytes("hostname")
	nd := int(r.bounded("disks", sample.MaxDisks))
	nf := int(r.bounded("filesystems", sample.MaxFilesystems))
	// Each disk takes at least 6 bytes and each filesystem 8: check
	// before sizing anything by the counts.
	if r.err == nil && len(r.b)-r.off < 6*nd+8*nf {
		r.fail(ErrTruncated, fmt.Sprintf("%d disks and %d filesystems", nd, nf))
	}
	if s != nil && r.err == nil {
		if s.Hostname != string(host) {
			s.Hostname = string(host)
		}
		s.Disks = resizeTo(s.Disks, nd)
		s.Filesystems = resizeTo(s.Filesystems, nf)
	}
	for i := 0; i < nd && r.err == nil; i++ {
		name := r.bytes("disk name")
		var v [5]uint64
		r.uvarints(v[:], "disk counter")
		if s == nil || r.err != nil {
			continue
		}
		d := &s.Disks[i]
		if d.Name != string(name) {
			d.Name = string(name)
		}
		d.Reads, d.Writes, d.ReadBytes, d.WriteBytes, d.IOMillis = v[0], v[1], v[2], v[3], v[4]
	}
	for i := 0; i < nf && r.err == nil; i++ {
		mount := r.bytes("mount")
		typ := r.bytes("filesystem type")
		flags := r.byte("filesystem flags")
		if r.err == nil && flags&^fsNotAnswering != 0 {
			r.fail(ErrMalformed, fmt.Sprintf("filesystem flags %#x", flags))
		}
		var v [5]uint64
		r.uvarints(v[:], "filesystem figure")
		if s == nil || r.err != nil {
			continue
		}
		f := &s.Filesystems[i]
		if f.Mount != string(mount) {
			f.Mount = string(mount)
		}
		if f.Type != string(typ) {
			f.Type = string(typ)
		}
		f.NotAnswering = flags&fsNotAnswering != 0
		f.Total, f.Free, f.Avail, f.Files, f.FilesFree = v[0], v[1], v[2], v[3], v[4]
	}
	if r.err == nil && r.off != len(r.b) {
		r.fail(ErrMalformed, fmt.Sprintf("%d bytes after the last field", len(r.b)-r.off))
	}
	if s != nil && r.err != nil {
		clearDetails(s)
	}
}

// clearDetails empties what a details datagram fills.
func clearDetails(s *sample.Sample) {
	s.Hostname, s.Disks, s.Filesystems = "", s.Disks[:0], s.Filesystems[:0]
}

func resizeTo[T any](s []T, n int) []T {
	if cap(s) < n {
		s = append(s[:cap(s)], make([]T, n-cap(s))...)
	}
	return s[:n]
}
