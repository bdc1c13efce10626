package nsm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// Store records are small hand-packed byte strings rather than XDR or JSON:
// the 256-bytes-per-host budget is spent mostly on bbolt's own 16-byte
// element header and page slack, so the records themselves stay near the
// size of the host name. Integers are varints; times are Unix milliseconds.

var errRecord = errors.New("nsm: malformed store record")

// uvarint and varint read only the shortest encoding of a number, so every
// record has exactly one byte form and a key found once is found always.
func uvarint(b []byte) (uint64, int) {
	v, n := binary.Uvarint(b)
	if n > 0 && n != len(binary.AppendUvarint(nil, v)) {
		return 0, 0
	}
	return v, n
}

func varint(b []byte) (int64, int) {
	v, n := binary.Varint(b)
	if n > 0 && n != len(binary.AppendVarint(nil, v)) {
		return 0, 0
	}
	return v, n
}

// regKey is mon_name, a NUL, then the uvarint dictionary id of the my_id.
// Validated names never contain NUL, so all registrations of one host are
// one contiguous key range starting at mon_name+"\x00".
func regKey(monName string, id uint64) []byte {
	k := make([]byte, 0, len(monName)+1+binary.MaxVarintLen64)
	k = append(k, monName...)
	k = append(k, 0)
	return binary.AppendUvarint(k, id)
}

func parseRegKey(k []byte) (monName string, id uint64, err error) {
	i := bytes.IndexByte(k, 0)
	if i <= 0 {
		return "", 0, fmt.Errorf("%w: registration key has no host name", errRecord)
	}
	id, n := uvarint(k[i+1:])
	if n <= 0 || i+1+n != len(k) {
		return "", 0, fmt.Errorf("%w: registration key has a bad id", errRecord)
	}
	return string(k[:i]), id, nil
}

// regValue is priv[16] then the registration time.
func regValue(priv [PrivLen]byte, registered time.Time) []byte {
	v := make([]byte, 0, PrivLen+binary.MaxVarintLen64)
	v = append(v, priv[:]...)
	return binary.AppendVarint(v, registered.UnixMilli())
}

func parseRegValue(v []byte) (priv [PrivLen]byte, registered time.Time, err error) {
	if len(v) < PrivLen {
		return priv, time.Time{}, fmt.Errorf("%w: registration value of %d bytes", errRecord, len(v))
	}
	copy(priv[:], v)
	ms, n := varint(v[PrivLen:])
	if n <= 0 || PrivLen+n != len(v) {
		return priv, time.Time{}, fmt.Errorf("%w: registration time", errRecord)
	}
	return priv, time.UnixMilli(ms), nil
}

// myIDKey is the dictionary key of a my_id: the name with its length, then
// prog, vers, proc as uvarints. Lock managers use one or two my_ids for all
// their hosts, so each registration stores a one-byte id instead of this.
func myIDKey(m MyID) []byte {
	k := make([]byte, 0, len(m.Name)+4*binary.MaxVarintLen32)
	k = binary.AppendUvarint(k, uint64(len(m.Name)))
	k = append(k, m.Name...)
	k = binary.AppendUvarint(k, uint64(m.Prog))
	k = binary.AppendUvarint(k, uint64(m.Vers))
	return binary.AppendUvarint(k, uint64(m.Proc))
}

func parseMyIDKey(k []byte) (MyID, error) {
	var m MyID
	l, n := uvarint(k)
	if n <= 0 || l > MaxStrLen || uint64(len(k)-n) < l {
		return m, fmt.Errorf("%w: my_id name", errRecord)
	}
	k = k[n:]
	m.Name = string(k[:l])
	k = k[l:]
	for _, p := range []*uint32{&m.Prog, &m.Vers, &m.Proc} {
		v, n := uvarint(k)
		if n <= 0 || v > 0xffffffff {
			return m, fmt.Errorf("%w: my_id number", errRecord)
		}
		*p = uint32(v)
		k = k[n:]
	}
	if len(k) != 0 {
		return m, fmt.Errorf("%w: %d bytes after my_id", errRecord, len(k))
	}
	return m, nil
}

// owedValue packs an Owed record without its host name (that is the key).
func owedValue(o Owed) []byte {
	v := make([]byte, 0, 4*binary.MaxVarintLen64)
	v = binary.AppendVarint(v, int64(o.State))
	v = binary.AppendVarint(v, o.FirstOwed.UnixMilli())
	v = binary.AppendUvarint(v, uint64(o.Attempts))
	return binary.AppendVarint(v, o.NextTry.UnixMilli())
}

func parseOwedValue(host string, v []byte) (Owed, error) {
	o := Owed{Host: host}
	var vals [4]int64
	for i := range vals {
		var n int
		if i == 2 {
			var u uint64
			u, n = uvarint(v)
			if u > 1<<31 {
				n = 0
			}
			vals[i] = int64(u)
		} else {
			vals[i], n = varint(v)
		}
		if n <= 0 {
			return o, fmt.Errorf("%w: owed notification for %s", errRecord, Quote(host))
		}
		v = v[n:]
	}
	if len(v) != 0 || vals[0] < -1<<31 || vals[0] >= 1<<31 {
		return o, fmt.Errorf("%w: owed notification for %s", errRecord, Quote(host))
	}
	o.State = int32(vals[0])
	o.FirstOwed = time.UnixMilli(vals[1])
	o.Attempts = int(vals[2])
	o.NextTry = time.UnixMilli(vals[3])
	return o, nil
}

// gaveUpValue is the state never heard, then when the notifier gave up.
func gaveUpValue(state int32, at time.Time) []byte {
	v := binary.AppendVarint(nil, int64(state))
	return binary.AppendVarint(v, at.UnixMilli())
}

func parseGaveUpValue(host string, v []byte) (GaveUp, error) {
	st, n := varint(v)
	if n <= 0 || st < -1<<31 || st >= 1<<31 {
		return GaveUp{}, fmt.Errorf("%w: gave-up record for %s", errRecord, Quote(host))
	}
	at, m := varint(v[n:])
	if m <= 0 || n+m != len(v) {
		return GaveUp{}, fmt.Errorf("%w: gave-up record for %s", errRecord, Quote(host))
	}
	return GaveUp{Host: host, State: int32(st), At: time.UnixMilli(at)}, nil
}

func encodeState(s int32) []byte { return binary.BigEndian.AppendUint32(nil, uint32(s)) }

func parseState(v []byte) (int32, error) {
	if len(v) != 4 {
		return 0, fmt.Errorf("%w: state number of %d bytes", errRecord, len(v))
	}
	return int32(binary.BigEndian.Uint32(v)), nil
}
