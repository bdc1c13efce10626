package capacity

import (
	"bytes"
	"fmt"
	"testing"
	"time"
)

// The /proc parsers take text they do not control (a process names
// itself, with any bytes): they return an error, never panic.
func FuzzProcParsers(f *testing.F) {
	f.Add([]byte("1234 (a) b) S 1 1 1 0 -1 4194560 100 0 0 0 25 7 0 0 20 0 3 0 100 1000 200 18446744073709551615"), uint16(0x0be0))
	f.Add([]byte("   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n"+
		" 4182: 0100007F:0BE0 00000000:0000 07 00000000:00000A00 00:00000000 00000000     0        0 1158156 2 000000002fd48681 17\n"), uint16(0x0be0))
	f.Add([]byte("x\n 1: :0BE0 00000000:0000 0 zz:zz 0 0 0 0 0 0 0 0"), uint16(0x0be0))
	f.Fuzz(func(t *testing.T, b []byte, port uint16) {
		if d, err := parseStatCPU(b, 1); err == nil && d < 0 {
			t.Fatalf("negative CPU time %v", d)
		}
		if s, err := parseUDP(b, "fuzz", port); err == nil && (!bytes.Contains(b, fmt.Appendf(nil, ":%04X", port)) || !bytes.Contains(b, []byte("00000000:0000"))) {
			t.Fatalf("socket %+v of port %d found in text without it: %q", s, port, b)
		}
	})
}

func TestParseUDPReadsTheRightLine(t *testing.T) {
	text := []byte("   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n" +
		"   1: 0100007F:C350 0100007F:0BE0 01 00000000:00000000 00:00000000 00000000     0        0 111 2 0000000000000000 0\n" + // the generator's, connected to 3040
		"   2: 0100007F:0BE0 00000000:0000 07 00000000:00000A00 00:00000000 00000000     0        0 222 2 0000000000000000 17\n")
	s, err := parseUDP(text, "t", 3040)
	if err != nil || s != (Socket{Inode: 222, RxQueue: 0xa00, Drops: 17}) {
		t.Fatalf("got %+v, %v", s, err)
	}
	if _, err := parseUDP(text, "t", 50000); err == nil {
		t.Fatal("a connected socket's local port matched")
	}
	d, err := parseStatCPU([]byte("7 (x) y) z) S 1 1 1 0 -1 0 0 0 0 0 250 70 0 0"), 7)
	if err != nil || d != 3200*time.Millisecond {
		t.Fatalf("utime+stime 320 ticks: got %v, %v", d, err)
	}
}
