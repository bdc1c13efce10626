// Package nsm is the core of the Network Status Monitor (rpc.statd): the
// SM_PROG protocol types of X/Open XNFS chapter 11, name validation, the
// durable store of registrations and owed notifications, the reboot-versus-
// restart decision, the notification retry schedule as a pure state machine,
// and the matching of received SM_NOTIFY calls to registrations.
//
// Nothing here opens a socket; the daemon wires these pieces to oncrpc.
package nsm

import (
	"fmt"

	"github.com/hoststat/hoststat/oncrpc/xdr"
)

// Program, version and procedure numbers of SM_PROG.
const (
	Program = 100024
	Version = 1

	ProcNull      = 0 // void SM_NULL(void)
	ProcStat      = 1 // sm_stat_res SM_STAT(sm_name)
	ProcMon       = 2 // sm_stat_res SM_MON(mon)
	ProcUnmon     = 3 // sm_stat SM_UNMON(mon_id)
	ProcUnmonAll  = 4 // sm_stat SM_UNMON_ALL(my_id)
	ProcSimuCrash = 5 // void SM_SIMU_CRASH(void)
	ProcNotify    = 6 // void SM_NOTIFY(stat_chge)
)

// MaxStrLen is SM_MAXSTRLEN, the longest mon_name or my_name on the wire.
const MaxStrLen = 1024

// PrivLen is the size of the opaque cookie a registrant hands to SM_MON and
// gets back in its callback; fixed-length on the wire, so no length word.
const PrivLen = 16

// Result is the res enum of sm_stat_res.
type Result int32

const (
	StatSucc Result = 0
	StatFail Result = 1
)

func (r Result) String() string {
	switch r {
	case StatSucc:
		return "stat_succ"
	case StatFail:
		return "stat_fail"
	}
	return fmt.Sprintf("res(%d)", int32(r))
}

// Name is sm_name, the argument of SM_STAT.
type Name struct {
	MonName string
}

// MyID is my_id: who to call back, and how, when a monitored host reboots.
// The wire type of the numbers is int; program numbers are conventionally
// unsigned, so they are kept as uint32 with the same bits.
type MyID struct {
	Name string // my_name
	Prog uint32 // my_prog
	Vers uint32 // my_vers
	Proc uint32 // my_proc
}

// MonID is mon_id, the argument of SM_UNMON.
type MonID struct {
	MonName string
	MyID    MyID
}

// Mon is mon, the argument of SM_MON.
type Mon struct {
	ID   MonID
	Priv [PrivLen]byte
}

// StatChange is stat_chge, the argument of SM_NOTIFY.
type StatChange struct {
	MonName string
	State   int32
}

// Stat is sm_stat, the reply of SM_UNMON and SM_UNMON_ALL.
type Stat struct {
	State int32
}

// StatRes is sm_stat_res, the reply of SM_STAT and SM_MON.
type StatRes struct {
	Res   Result
	State int32
}

// Status is the argument of the callback to my_prog/my_vers/my_proc.
type Status struct {
	MonName string
	State   int32
	Priv    [PrivLen]byte
}

func encodeString(e *xdr.Encoder, what, s string) error {
	if len(s) > MaxStrLen {
		return fmt.Errorf("nsm: %s is %d bytes, more than %d", what, len(s), MaxStrLen)
	}
	e.String(s)
	return nil
}

func decodePriv(d *xdr.Decoder, p *[PrivLen]byte) {
	copy(p[:], d.FixedOpaque(PrivLen))
}

func (n *Name) Encode(e *xdr.Encoder) error { return encodeString(e, "mon_name", n.MonName) }

func (n *Name) Decode(d *xdr.Decoder) error {
	n.MonName = d.String("mon_name", MaxStrLen)
	return d.Err()
}

func (m *MyID) Encode(e *xdr.Encoder) error {
	if err := encodeString(e, "my_name", m.Name); err != nil {
		return err
	}
	e.Uint32(m.Prog)
	e.Uint32(m.Vers)
	e.Uint32(m.Proc)
	return nil
}

func (m *MyID) Decode(d *xdr.Decoder) error {
	m.Name = d.String("my_name", MaxStrLen)
	m.Prog = d.Uint32()
	m.Vers = d.Uint32()
	m.Proc = d.Uint32()
	return d.Err()
}

func (m *MonID) Encode(e *xdr.Encoder) error {
	if err := encodeString(e, "mon_name", m.MonName); err != nil {
		return err
	}
	return m.MyID.Encode(e)
}

func (m *MonID) Decode(d *xdr.Decoder) error {
	m.MonName = d.String("mon_name", MaxStrLen)
	return m.MyID.Decode(d)
}

func (m *Mon) Encode(e *xdr.Encoder) error {
	if err := m.ID.Encode(e); err != nil {
		return err
	}
	e.FixedOpaque(m.Priv[:])
	return nil
}

func (m *Mon) Decode(d *xdr.Decoder) error {
	if err := m.ID.Decode(d); err != nil {
		return err
	}
	decodePriv(d, &m.Priv)
	return d.Err()
}

func (s *StatChange) Encode(e *xdr.Encoder) error {
	if err := encodeString(e, "mon_name", s.MonName); err != nil {
		return err
	}
	e.Int32(s.State)
	return nil
}

func (s *StatChange) Decode(d *xdr.Decoder) error {
	s.MonName = d.String("mon_name", MaxStrLen)
	s.State = d.Int32()
	return d.Err()
}

func (s *Stat) Encode(e *xdr.Encoder) error {
	e.Int32(s.State)
	return nil
}

func (s *Stat) Decode(d *xdr.Decoder) error {
	s.State = d.Int32()
	return d.Err()
}

func (s *StatRes) Encode(e *xdr.Encoder) error {
	e.Int32(int32(s.Res))
	e.Int32(s.State)
	return nil
}

// Decode accepts only the two defined res values: an enum outside its
// declaration is malformed XDR.
func (s *StatRes) Decode(d *xdr.Decoder) error {
	r := Result(d.Int32())
	s.State = d.Int32()
	if d.Err() == nil && r != StatSucc && r != StatFail {
		d.Fail(fmt.Errorf("nsm: sm_stat_res res_stat %d is neither stat_succ nor stat_fail", int32(r)))
	}
	s.Res = r
	return d.Err()
}

func (s *Status) Encode(e *xdr.Encoder) error {
	if err := encodeString(e, "mon_name", s.MonName); err != nil {
		return err
	}
	e.Int32(s.State)
	e.FixedOpaque(s.Priv[:])
	return nil
}

func (s *Status) Decode(d *xdr.Decoder) error {
	s.MonName = d.String("mon_name", MaxStrLen)
	s.State = d.Int32()
	decodePriv(d, &s.Priv)
	return d.Err()
}
