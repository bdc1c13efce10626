package sample

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestParsersRejectMalformedInput(t *testing.T) {
	var s Sample
	for _, in := range []string{
		"",
		"cpu 1 2 3\nbtime 5\n",                 // too few tick fields
		"cpu 1 2 3 4\n",                        // no btime
		"cpu 1 2 3 4\ncpux 1 2 3 4\nbtime 5\n", // bad CPU number
		"cpu 1 2 3 4\nbtime -5\n",              // negative boot time
		"cpu 1 2 3 99999999999999999999\nbtime 5", // overflow
	} {
		if _, err := parseStat([]byte(in), &s, nil); !errors.Is(err, errSyntax) {
			t.Errorf("parseStat(%q) err = %v", in, err)
		}
	}
	for _, in := range []string{"", "MemFree: 5 kB\n", "MemTotal: x kB\n", "MemTotal: 18446744073709551615 kB\n"} {
		if err := parseMeminfo([]byte(in), &s.Memory); !errors.Is(err, errSyntax) {
			t.Errorf("parseMeminfo(%q) err = %v", in, err)
		}
	}
	for _, in := range []string{"h\nh\neth0 1 2 3\n", "h\nh\n : 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16\n", "h\nh\neth0: 1 2 3\n"} {
		if _, err := parseNetDev([]byte(in), nil); !errors.Is(err, errSyntax) {
			t.Errorf("parseNetDev(%q) err = %v", in, err)
		}
	}
	for _, in := range []string{"", "1 2 3 4/5", "1 2 3 4 5", "a 2 3 4/5 6", "1 2 3 4/5 6 7", "-1 2 3 4/5 6", "1 2 3 4/99999999999 6"} {
		if err := parseLoadavg([]byte(in), &s.Load); !errors.Is(err, errSyntax) {
			t.Errorf("parseLoadavg(%q) err = %v", in, err)
		}
	}
	for _, in := range []string{"", "0123abcd-4567-89ab-cdef-0123456789a", "0123abcd-4567-89ab-cdef-0123456789ag", "0123abcd04567-89ab-cdef-0123456789ab"} {
		if _, err := ParseBootID([]byte(in)); !errors.Is(err, errSyntax) {
			t.Errorf("ParseBootID(%q) err = %v", in, err)
		}
	}
}

func TestOldKernelStatHasFourTickFields(t *testing.T) {
	var s Sample
	ids, err := parseStat([]byte("cpu 1 2 3 4\ncpu7 1 2 3 4\nbtime 5\n"), &s, nil)
	if err != nil {
		t.Fatal(err)
	}
	if s.Total != (Ticks{User: 1, Nice: 2, System: 3, Idle: 4}) || len(ids) != 1 || ids[0] != 7 {
		t.Errorf("total %+v, ids %v", s.Total, ids)
	}
}

// FuzzParsers feeds the same bytes to every /proc parser: none may panic,
// and what they accept must be self-consistent.
func FuzzParsers(f *testing.F) {
	for _, dir := range []string{"testdata/proc/four", "testdata/proc/vm2"} {
		for _, name := range []string{"stat", "meminfo", "net/dev", "loadavg", "sys/kernel/random/boot_id"} {
			b, err := os.ReadFile(filepath.Join(dir, name))
			if err != nil {
				f.Fatal(err)
			}
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var s Sample
		ids, err := parseStat(b, &s, nil)
		if err == nil && len(ids) != len(s.CPUs) {
			t.Fatalf("%d ids for %d CPUs", len(ids), len(s.CPUs))
		}
		parseMeminfo(b, &s.Memory)
		devs, err := parseNetDev(b, nil)
		if err == nil {
			for _, d := range devs {
				if d.Name == "" {
					t.Fatal("empty device name accepted")
				}
			}
		}
		if err := parseLoadavg(b, &s.Load); err == nil && (s.Load.One < 0 || s.Load.Five < 0 || s.Load.Fifteen < 0) {
			t.Fatalf("negative load %+v", s.Load)
		}
		ParseBootID(b)
	})
}
