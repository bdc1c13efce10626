package daemon

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

func testFlags() (*pflag.FlagSet, *int, *string, *[]string, *time.Duration, *bool) {
	fs := pflag.NewFlagSet("sendstats", pflag.ContinueOnError)
	port := fs.IntP("port", "p", 3040, "")
	key := fs.String("key-file", "", "")
	addrs := fs.StringArrayP("address", "a", nil, "")
	rate := fs.Duration("rate", time.Second, "")
	debug := fs.BoolP("debug", "d", false, "")
	fs.BoolP("help", "h", false, "")
	fs.String("secret-test-knob", "", "")
	fs.MarkHidden("secret-test-knob")
	return fs, port, key, addrs, rate, debug
}

func writeConf(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "hoststat.conf")
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestConfigSetsWhatTheCommandLineLeft(t *testing.T) {
	p := writeConf(t, `# a comment
[recvstats]
port = 9999
[sendstats]
port = 4000          
key-file = "/etc/hoststat/key"
address = master1:3040
address = master2
rate = 5s
debug = true
`)
	fs, port, key, addrs, rate, debug := testFlags()
	if err := fs.Parse([]string{"--port", "5000"}); err != nil {
		t.Fatal(err)
	}
	if err := ApplyConfig(fs, p, "sendstats", true); err != nil {
		t.Fatal(err)
	}
	if *port != 5000 {
		t.Errorf("port %d: the command line must win over the file", *port)
	}
	if *key != "/etc/hoststat/key" || *rate != 5*time.Second || !*debug {
		t.Errorf("key %q rate %v debug %v", *key, *rate, *debug)
	}
	if strings.Join(*addrs, ",") != "master1:3040,master2" {
		t.Errorf("addresses %q: a list option takes every line", *addrs)
	}
}

func TestConfigCommandLineListWins(t *testing.T) {
	p := writeConf(t, "[sendstats]\naddress = from-file\n")
	fs, _, _, addrs, _, _ := testFlags()
	if err := fs.Parse([]string{"-a", "from-cli"}); err != nil {
		t.Fatal(err)
	}
	if err := ApplyConfig(fs, p, "sendstats", true); err != nil {
		t.Fatal(err)
	}
	if strings.Join(*addrs, ",") != "from-cli" {
		t.Errorf("addresses %q", *addrs)
	}
}

func TestConfigErrorsNameFileAndLine(t *testing.T) {
	for _, c := range []struct{ text, want string }{
		{"[sendstats]\n\nportt = 1\n", `:3: unknown option "portt" in [sendstats]`},
		{"[sendstat]\n", `:1: unknown section [sendstat]`},
		{"port = 1\n", `:1: option "port" is outside any [section]`},
		{"[sendstats]\nport = 1\nport = 2\n", `:3: option "port" set twice (first on line 2)`},
		{"[sendstats]\nport = many\n", `:2: option "port": "many" is not a valid int`},
		{"[sendstats]\njust words\n", `:2: "just words" is not "option = value"`},
		{"[sendstats\n", `:1: section header "[sendstats" lacks its closing ]`},
		{"[sendstats]\nhelp = true\n", `:2: unknown option "help"`},
		{"[sendstats]\nsecret-test-knob = x\n", `:2: unknown option "secret-test-knob"`},
	} {
		p := writeConf(t, c.text)
		fs, _, _, _, _, _ := testFlags()
		_ = fs.Parse(nil)
		err := ApplyConfig(fs, p, "sendstats", true)
		if err == nil || !strings.HasPrefix(err.Error(), p) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: error %v, want %s%s", c.text, err, p, c.want)
		}
	}
}

func TestConfigOtherSectionsAreNotChecked(t *testing.T) {
	// recvstats' options are not sendstats' business: only the section
	// names are checked for everyone.
	p := writeConf(t, "[recvstats]\nshm-dir = /x\n[sendstats]\nport = 1\n")
	fs, port, _, _, _, _ := testFlags()
	_ = fs.Parse(nil)
	if err := ApplyConfig(fs, p, "sendstats", true); err != nil || *port != 1 {
		t.Fatalf("err %v port %d", err, *port)
	}
}

func TestConfigMissingFile(t *testing.T) {
	fs, _, _, _, _, _ := testFlags()
	_ = fs.Parse(nil)
	missing := filepath.Join(t.TempDir(), "none.conf")
	if err := ApplyConfig(fs, missing, "sendstats", false); err != nil {
		t.Errorf("optional missing file: %v", err)
	}
	if err := ApplyConfig(fs, missing, "sendstats", true); err == nil || !strings.Contains(err.Error(), missing) {
		t.Errorf("required missing file: %v", err)
	}
}

// TestGeneratedConfigReadsBack: the commented section --generate=config
// writes, uncommented, is a valid configuration that changes nothing.
func TestGeneratedConfigReadsBack(t *testing.T) {
	fs, _, _, _, _, _ := testFlags()
	var b strings.Builder
	writeConfigSection(&b, fs)
	var lines []string
	for _, l := range strings.Split(b.String(), "\n") {
		if strings.HasPrefix(l, "#") && strings.Contains(l, " =") {
			l = strings.TrimPrefix(l, "#")
		}
		lines = append(lines, l)
	}
	p := writeConf(t, strings.Join(lines, "\n"))
	fs2, port, key, addrs, rate, debug := testFlags()
	_ = fs2.Parse(nil)
	if err := ApplyConfig(fs2, p, "sendstats", true); err != nil {
		t.Fatalf("%v\n%s", err, strings.Join(lines, "\n"))
	}
	if *port != 3040 || *key != "" || len(*addrs) != 0 || *rate != time.Second || *debug {
		t.Errorf("defaults changed: port %d key %q addrs %q rate %v debug %v", *port, *key, *addrs, *rate, *debug)
	}
	if strings.Contains(b.String(), "secret-test-knob") || strings.Contains(b.String(), "help") {
		t.Errorf("hidden or command-line-only options in the file:\n%s", b.String())
	}
}
