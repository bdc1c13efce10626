package recv

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseNodeMap(t *testing.T) {
	m, err := ParseNodeMap(strings.NewReader("# cluster\n0 10.0.0.10\n1\t10.0.0.11   # rack 2\n\n2 fd00::2\n3 ::ffff:10.0.0.13\n"), "nodes")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int{"10.0.0.10": 0, "10.0.0.11": 1, "fd00::2": 2, "10.0.0.13": 3}
	if len(m) != len(want) {
		t.Fatalf("got %v", m)
	}
	for a, n := range want {
		if m[netip.MustParseAddr(a)] != n {
			t.Errorf("%s → %d, want %d", a, m[netip.MustParseAddr(a)], n)
		}
	}
}

func TestParseNodeMapErrors(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"0 10.0.0.1\nx 10.0.0.2\n", `nodes:2: node number "x"`},
		{"-1 10.0.0.2\n", `nodes:1: node number "-1"`},
		{"0 10.0.0.1 extra\n", "nodes:1: want"},
		{"# c\n\n0 host.example\n", `nodes:3: address "host.example"`},
		{"0 10.0.0.1\n0 10.0.0.2\n", "nodes:2: node 0 already mapped on line 1"},
		{"0 10.0.0.1\n1 10.0.0.1\n", "nodes:2: address 10.0.0.1 already mapped"},
		{"5\n", "nodes:1: want"},
	} {
		_, err := ParseNodeMap(strings.NewReader(tc.in), "nodes")
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want it to contain %q", tc.in, err, tc.want)
		}
	}
}

func TestLoadNodeMapMissing(t *testing.T) {
	p := filepath.Join(t.TempDir(), "none")
	if _, err := LoadNodeMap(p); err == nil || !strings.Contains(err.Error(), p) {
		t.Errorf("missing file: %v, want an error naming %s", err, p)
	}
	os.WriteFile(p, []byte("1 10.0.0.1\n"), 0o644)
	if m, err := LoadNodeMap(p); err != nil || len(m) != 1 {
		t.Errorf("LoadNodeMap: %v %v", m, err)
	}
}
