package nfsutils

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/hoststat/hoststat/nsm"
)

// A line as nfs-utils' statd writes it for the kernel's lock manager
// (NLM 100021 v4, procedure 16) registering client-1.
const nfsLine = "0100007f 000186b5 00000004 00000010 0102030405060708090a0b0c0d0e0f10 client-1.example.org server.example.org\n"

func TestParseMonitorLine(t *testing.T) {
	m, err := ParseMonitorLine(strings.TrimSuffix(nfsLine, "\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := Monitor{MonName: "client-1.example.org", MyID: nsm.MyID{Name: "server.example.org", Prog: 100021, Vers: 4, Proc: 16},
		Priv: [16]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}}
	if m != want {
		t.Fatalf("got %+v\nwant %+v", m, want)
	}
}

func TestParseMonitorLineRefuses(t *testing.T) {
	for _, c := range []struct{ line, want string }{
		{"0100007f 000186b5 00000004 00000010 0102 a b", "priv"},
		{"0100007f 000186b5 00000004 0000001 0102030405060708090a0b0c0d0e0f10 a b", "procedure"},
		{"0100007f 000186b5 0000000g 00000010 0102030405060708090a0b0c0d0e0f10 a b", "version"},
		{"0100007f 000186b5 00000004 00000010 0102030405060708090a0b0c0d0e0f1x a b", "priv"},
		{"0100007f 000186b5 00000004 00000010 0102030405060708090a0b0c0d0e0f10 x/../../etc/passwd b", "'/'"},
		{"0100007f 000186b5 00000004 00000010 0102030405060708090a0b0c0d0e0f10 .hidden b", "starts with '.'"},
		{"0100007f 000186b5 00000004 00000010 0102030405060708090a0b0c0d0e0f10 a %s%n\x01", "not printable"},
		{"0100007f 000186b5 00000004 00000010 0102030405060708090a0b0c0d0e0f10 a", "7"},
		{"", "7"},
	} {
		_, err := ParseMonitorLine(c.line)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("ParseMonitorLine(%q) = %v; want an error saying %q", c.line, err, c.want)
		}
	}
}

func writeFile(t *testing.T, path, s string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestRead reads a state directory laid out as nfs-utils leaves it, with
// hostile entries beside the good ones: those are skipped with a reason,
// the rest is read.
func TestRead(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "state"), string(binary.NativeEndian.AppendUint32(nil, 7)))
	writeFile(t, filepath.Join(dir, "sm", "client-1.example.org"), nfsLine+
		strings.Replace(nfsLine, "00000004", "00000003", 1))
	writeFile(t, filepath.Join(dir, "sm", "bad-line"), "garbage\n")
	writeFile(t, filepath.Join(dir, "sm", ".client-1.example.org.new"), nfsLine) // nfs-utils' temporary file
	writeFile(t, filepath.Join(dir, "sm", "with space"), nfsLine)
	outside := filepath.Join(t.TempDir(), "secret")
	writeFile(t, outside, nfsLine)
	if err := os.Symlink(outside, filepath.Join(dir, "sm", "linked")); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "sm.bak", "client-2.example.org"), strings.Replace(nfsLine, "client-1", "client-2", 1))
	writeFile(t, filepath.Join(dir, "sm.bak", "10.0.0.9"), strings.Replace(nfsLine, "client-1.example.org", "10.0.0.9", 1))

	d, err := Read(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !d.HasState || d.State != 7 {
		t.Errorf("state %d (%v), want 7", d.State, d.HasState)
	}
	if len(d.Monitors) != 2 || d.Monitors[0].Host != "client-1.example.org" || d.Monitors[1].MyID.Vers != 3 {
		t.Errorf("monitors %+v", d.Monitors)
	}
	if !slices.Equal(d.Notify, []string{"10.0.0.9", "client-2.example.org"}) {
		t.Errorf("notify %q", d.Notify)
	}
	skipped := strings.Join(d.Skipped, "\n")
	for _, want := range []string{`sm/"bad-line": line 1`, `"with space"`, `sm/"linked": not a regular file`} {
		if !strings.Contains(skipped, want) {
			t.Errorf("skipped lacks %q:\n%s", want, skipped)
		}
	}
	if len(d.Skipped) != 3 {
		t.Errorf("%d skipped, want 3:\n%s", len(d.Skipped), skipped)
	}
}

// TestReadBadState: a state file nfs-utils could not read either (wrong
// size, a symbolic link) is ignored with a reason, as nfs-utils ignores it.
func TestReadBadState(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "state"), "12345")
	if d, err := Read(dir); err != nil || d.HasState || len(d.Skipped) != 1 || !strings.Contains(d.Skipped[0], "5 bytes, want 4") {
		t.Fatalf("Read = %+v, %v", d, err)
	}
	os.Remove(filepath.Join(dir, "state"))
	if err := os.Symlink("/etc/hostname", filepath.Join(dir, "state")); err != nil {
		t.Fatal(err)
	}
	if d, err := Read(dir); err != nil || d.HasState || len(d.Skipped) != 1 || !strings.Contains(d.Skipped[0], "not a regular file") {
		t.Fatalf("Read through a symbolic link = %+v, %v", d, err)
	}
}

func TestReadConf(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nfs.conf")
	writeFile(t, path, `# nfs.conf
[general]
pipefs-directory=/run/rpc_pipefs
[statd]
# debug=0
 Port = 662
outgoing-port=2020 ; trailing comment
name = "server.example.org"
state-directory-path=/srv/nfs
ha-callout=/usr/sbin/callout
[sm-notify]
outgoing-port = 3030
[mountd]
port=20048
`)
	c, err := ReadConf(path)
	if err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]string{"port": "662", "outgoing-port": "2020", "name": "server.example.org",
		"state-directory-path": "/srv/nfs", "ha-callout": "/usr/sbin/callout"} {
		if v, ok := c.Get(k); !ok || v != want {
			t.Errorf("%s = %q, %v; want %q", k, v, ok, want)
		}
	}
	delete(c.Statd, "outgoing-port")
	if v, _ := c.Get("outgoing-port"); v != "3030" {
		t.Errorf("outgoing-port falls back to [sm-notify]'s: got %q", v)
	}
	if c, err := ReadConf(filepath.Join(t.TempDir(), "missing")); err != nil || len(c.Statd) != 0 {
		t.Errorf("missing file: %v %v", c, err)
	}
	writeFile(t, path, "[statd\nport=1\n")
	if _, err := ReadConf(path); err == nil || !strings.Contains(err.Error(), ":1:") {
		t.Errorf("bad section header: %v", err)
	}
}

// FuzzParseMonitorFile: arbitrary sm/ file contents never panic, and every
// record returned passes nsm's name rules.
func FuzzParseMonitorFile(f *testing.F) {
	f.Add([]byte(nfsLine))
	f.Add([]byte(nfsLine + "garbage\n" + nfsLine))
	f.Add([]byte("0100007f 000186b5 00000004 00000010 0102030405060708090a0b0c0d0e0f10 a/b c\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		ms, _ := ParseMonitorFile("host", b)
		for _, m := range ms {
			id := nsm.MonID{MonName: m.MonName, MyID: m.MyID}
			if err := id.Validate(); err != nil {
				t.Fatalf("returned an invalid record %+v: %v", m, err)
			}
		}
	})
}

// FuzzReadConf: arbitrary nfs.conf contents never panic.
func FuzzReadConf(f *testing.F) {
	f.Add([]byte("[statd]\nport=662\n"))
	f.Add([]byte("[sm-notify]\noutgoing-port = \"1\" # x\n[statd \"x\"]\n"))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, b []byte) {
		path := filepath.Join(dir, "nfs.conf")
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		ReadConf(path)
	})
}
