// Package wire is protocol v1 between sendstats and recvstats: status
// samples from nodes and update requests from masters, in UDP datagrams of
// at most MaxDatagram bytes, optionally authenticated with HMAC-SHA-256.
// docs/protocol.md describes the format byte for byte.
//
// A sender encodes with an Encoder. A receiver checks each datagram with a
// Parser, then hands status packets to an Assembler, which puts samples
// split over several datagrams back together and drops what is stale,
// duplicated or replayed; Assembler.Receive does both, checking and
// decoding a one-datagram sample in a single pass. sendstats checks update
// requests with a Guard.
// Every drop is an error that wraps one of the Err values below, so a
// daemon can count drops by reason with errors.Is.
package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/hoststat/hoststat/telemetry/sample"
)

const (
	// Version is the protocol version this package speaks.
	Version = 1
	// MaxDatagram is the largest datagram sent or accepted: an Ethernet
	// MTU less IPv4 and UDP headers, so no datagram is ever fragmented.
	MaxDatagram = 1472
	// DefaultPort is the UDP port of recvstats, 0xbe0 as in libbeostat.
	DefaultPort = 3040
	// NoNode in a status header asks the master to derive the node number
	// from the sender's address; in an update request it means every node.
	NoNode = ^uint32(0)

	// HeaderLen is the length of the fixed header at the start of every
	// datagram.
	HeaderLen = 60
	// KindOffset and SeqOffset are where the header keeps the kind byte
	// and the big-endian sequence number (docs/protocol.md).
	KindOffset = 5
	SeqOffset  = 36
	// MACLen is the length of the HMAC-SHA-256 trailer of an authenticated
	// datagram.
	MACLen = 32

	// MaxParts bounds the datagrams of one sample.
	MaxParts = 1024
	// MaxCPUs and MaxNetDevs bound what one sample may carry: the limits
	// of package sample, which the shared-memory table holds to too.
	MaxCPUs    = sample.MaxCPUs
	MaxNetDevs = sample.MaxNetDevs
	// MaxStringLen bounds a CPU model or device name; longer ones are cut.
	MaxStringLen = sample.MaxNameLen
	// maxModelsPerPart bounds the model table of one datagram, so a
	// decoder can keep it on the stack.
	maxModelsPerPart = 16
)

// magic opens every datagram: "HSTS", hoststat status.
var magic = [4]byte{'H', 'S', 'T', 'S'}

// DefaultGroup is the multicast group of status packets and update
// requests, the default of both recvstats and sendstats: in the
// organisation-local scope (RFC 2365, 239.255/16, never routed off site),
// with 11.224 = 0x0be0, the port, as a reminder.
var DefaultGroup = netip.AddrFrom4([4]byte{239, 255, 11, 224})

// Kind tells what a datagram carries.
type Kind uint8

const (
	KindStatus        Kind = 1 // a sample, or one part of it, from a node
	KindUpdateRequest Kind = 2 // a master asking nodes to send at once
	// KindDetails carries a sample's hostname, disks and filesystems, in
	// one datagram sent before the status parts of the same seq. It came
	// after the first release of v1: older receivers drop it as an
	// unknown kind and still take the status.
	KindDetails Kind = 3
)

// PeekKind returns the kind a datagram's header claims, and false when b
// is too short to hold a header. It checks nothing else, so a receiver can
// skip what it does not want before paying for Parse (and a MAC).
func PeekKind(b []byte) (Kind, bool) {
	if len(b) < HeaderLen {
		return 0, false
	}
	return Kind(b[KindOffset]), true
}

func (k Kind) String() string {
	switch k {
	case KindStatus:
		return "status"
	case KindUpdateRequest:
		return "update request"
	case KindDetails:
		return "details"
	}
	return fmt.Sprintf("kind %d", uint8(k))
}

// FlagAuthenticated marks a datagram that ends with an HMAC-SHA-256 of
// everything before it.
const FlagAuthenticated uint8 = 1 << 0

// Reasons a datagram is dropped. Returned errors wrap one of these.
var (
	ErrVersion   = errors.New("unknown protocol version")
	ErrTruncated = errors.New("truncated datagram")
	ErrOversize  = errors.New("oversized datagram")
	ErrMalformed = errors.New("malformed datagram")
	ErrAuth      = errors.New("missing or bad authentication")
	ErrReplay    = errors.New("replayed datagram")  // from an earlier boot or an earlier process of the sender
	ErrDuplicate = errors.New("duplicate datagram") // a part already held, or of the sample last accepted
	ErrStale     = errors.New("stale datagram")     // older than the newest sample accepted from the sender
)

// Header is the fixed start of every datagram.
type Header struct {
	Kind  Kind
	Flags uint8
	// Node is the sender's node number, or NoNode.
	Node uint32
	// BootID is the sender's /proc/sys/kernel/random/boot_id.
	BootID [16]byte
	// Epoch tells apart the processes that have sent from one boot: the
	// time since boot, in nanoseconds, at which the sending process
	// started. A restarted sender has a larger one.
	Epoch uint64
	// Seq counts the sender's samples (or update requests); all the parts
	// of one sample have the same.
	Seq uint32
	// Part is this datagram's index among the Parts of one sample.
	Part, Parts uint16
	// Time is when the sample was taken, or the request sent.
	Time time.Time
	// BootTime is when the sender booted, by its own clock.
	BootTime time.Time
}

// putHeader writes h into b[:HeaderLen].
func putHeader(b []byte, h *Header) {
	_ = b[HeaderLen-1]
	copy(b[0:4], magic[:])
	b[4] = Version
	b[KindOffset] = byte(h.Kind)
	b[6] = h.Flags
	b[7] = 0
	binary.BigEndian.PutUint32(b[8:], h.Node)
	copy(b[12:28], h.BootID[:])
	binary.BigEndian.PutUint64(b[28:], h.Epoch)
	binary.BigEndian.PutUint32(b[SeqOffset:], h.Seq)
	binary.BigEndian.PutUint16(b[40:], h.Part)
	binary.BigEndian.PutUint16(b[42:], h.Parts)
	binary.BigEndian.PutUint64(b[44:], uint64(unixNano(h.Time)))
	binary.BigEndian.PutUint64(b[52:], uint64(unixNano(h.BootTime)))
}

// readHeader reads b[:HeaderLen], which the caller has checked is there.
func readHeader(b []byte, h *Header) {
	_ = b[HeaderLen-1]
	h.Kind = Kind(b[KindOffset])
	h.Flags = b[6]
	h.Node = binary.BigEndian.Uint32(b[8:])
	copy(h.BootID[:], b[12:28])
	h.Epoch = binary.BigEndian.Uint64(b[28:])
	h.Seq = binary.BigEndian.Uint32(b[SeqOffset:])
	h.Part = binary.BigEndian.Uint16(b[40:])
	h.Parts = binary.BigEndian.Uint16(b[42:])
	h.Time = fromUnixNano(int64(binary.BigEndian.Uint64(b[44:])))
	h.BootTime = fromUnixNano(int64(binary.BigEndian.Uint64(b[52:])))
}

// Times travel as Unix nanoseconds, 0 for an unknown (zero) time.
func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromUnixNano(ns int64) time.Time {
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns)
}
