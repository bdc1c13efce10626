package etcdstore

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/hoststat/hoststat/nsm"
)

func (s *Store) stateKey() string             { return s.prefix + "state" }
func (s *Store) bootKey() string              { return s.prefix + "boot" }
func (s *Store) magicKey() string             { return s.prefix + "magic" }
func (s *Store) regsPrefix() string           { return s.prefix + "r/" }
func (s *Store) owedPrefix() string           { return s.prefix + "o/" }
func (s *Store) gaveUpPrefix() string         { return s.prefix + "g/" }
func (s *Store) owedKey(host string) string   { return s.owedPrefix() + host }
func (s *Store) gaveUpKey(host string) string { return s.gaveUpPrefix() + host }

// regKey is a registration's key after the registrations prefix: mon_name
// first, so keys sort by it, then my_id; validated names hold no NUL.
func regKey(monName string, my nsm.MyID) string {
	return monName + "\x00" + my.Name + "\x00" + strconv.FormatUint(uint64(my.Prog), 10) + "\x00" +
		strconv.FormatUint(uint64(my.Vers), 10) + "\x00" + strconv.FormatUint(uint64(my.Proc), 10)
}

// parseRegKey reverses regKey, refusing anything regKey would not write.
func parseRegKey(k string) (string, nsm.MyID, error) {
	f := strings.Split(k, "\x00")
	if len(f) != 5 {
		return "", nsm.MyID{}, fmt.Errorf("registration key %s: %d fields, want 5", nsm.Quote(k), len(f))
	}
	if err := nsm.ValidateMonName(f[0]); err != nil {
		return "", nsm.MyID{}, fmt.Errorf("registration key: %w", err)
	}
	if err := nsm.ValidateMyName(f[1]); err != nil {
		return "", nsm.MyID{}, fmt.Errorf("registration key: %w", err)
	}
	var n [3]uint32
	for i, s := range f[2:] {
		v, err := strconv.ParseUint(s, 10, 32)
		if err != nil || strconv.FormatUint(v, 10) != s {
			return "", nsm.MyID{}, fmt.Errorf("registration key %s: bad number %s", nsm.Quote(k), nsm.Quote(s))
		}
		n[i] = uint32(v)
	}
	return f[0], nsm.MyID{Name: f[1], Prog: n[0], Vers: n[1], Proc: n[2]}, nil
}

type regRecord struct {
	Priv       []byte    `json:"priv"`
	Registered time.Time `json:"registered"`
}

func regValue(r nsm.Registration) []byte {
	b, _ := json.Marshal(regRecord{Priv: r.Priv[:], Registered: r.Registered.UTC()})
	return b
}

func parseRegValue(k string, v []byte) (priv [nsm.PrivLen]byte, at time.Time, err error) {
	var rec regRecord
	if err := json.Unmarshal(v, &rec); err != nil {
		return priv, at, fmt.Errorf("registration %s: %w", nsm.Quote(k), err)
	}
	if len(rec.Priv) != nsm.PrivLen {
		return priv, at, fmt.Errorf("registration %s: priv of %d bytes, want %d", nsm.Quote(k), len(rec.Priv), nsm.PrivLen)
	}
	copy(priv[:], rec.Priv)
	return priv, rec.Registered, nil
}

func owedValue(o nsm.Owed) []byte {
	b, _ := json.Marshal(o)
	return b
}

func gaveUpValue(g nsm.GaveUp) []byte {
	b, _ := json.Marshal(g)
	return b
}

func parseOwed(host string, v []byte) (nsm.Owed, error) {
	return parseHostRecord(host, v, "owed", func(o nsm.Owed) string { return o.Host })
}

func parseGaveUp(host string, v []byte) (nsm.GaveUp, error) {
	return parseHostRecord(host, v, "gave-up", func(g nsm.GaveUp) string { return g.Host })
}

// parseHostRecord decodes a record kept under a host's key, which must
// name the same host.
func parseHostRecord[T any](host string, v []byte, what string, hostOf func(T) string) (T, error) {
	var r T
	if err := json.Unmarshal(v, &r); err != nil {
		return r, fmt.Errorf("%s record %s: %w", what, nsm.Quote(host), err)
	}
	if h := hostOf(r); h != host {
		return r, fmt.Errorf("%s record %s names host %s", what, nsm.Quote(host), nsm.Quote(h))
	}
	return r, nil
}

func parseState(v []byte) (int32, error) {
	n, err := strconv.ParseInt(string(v), 10, 32)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("state number %s is not a non-negative int32", nsm.Quote(string(v)))
	}
	return int32(n), nil
}

func stateValue(n int32) string { return strconv.FormatInt(int64(n), 10) }
