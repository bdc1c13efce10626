package daemon

import (
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

func newFlags() *pflag.FlagSet {
	fs := pflag.NewFlagSet("prog", pflag.ContinueOnError)
	fs.IntP("port", "p", 0, "port")
	fs.BoolP("help", "h", false, "help")
	fs.BoolP("version", "v", false, "version")
	return fs
}

// TestFlagsParse: help and version on stdout with exit 0; every bad
// command line is one line on stderr naming the problem, exit 2.
func TestFlagsParse(t *testing.T) {
	f := Flags{Head: "Usage: prog\n\n", Foot: "More.\n", MaxArgs: 1, ArgsName: "FILE"}
	for _, c := range []struct {
		args     []string
		code     int
		done     bool
		out, err string
	}{
		{[]string{"-h"}, 0, true, "  -h, --help", ""},
		{[]string{"--config", "/nonexistent/hoststat.conf"}, 2, true, "", "prog: /nonexistent/hoststat.conf: open"},
		{[]string{"--help"}, 0, true, "More.", ""},
		{[]string{"-v"}, 0, true, "prog (hoststat) ", ""},
		{[]string{"-p"}, 2, true, "", "prog: flag needs an argument: 'p' in -p (see 'prog --help')\n"},
		{[]string{"--bogus"}, 2, true, "", "prog: unknown flag: --bogus"},
		{[]string{"-p", "x"}, 2, true, "", `invalid argument "x"`},
		{[]string{"a", "b"}, 2, true, "", `unexpected argument "b" after FILE`},
		{[]string{"a"}, 0, false, "", ""},
		{nil, 0, false, "", ""},
	} {
		var out, errb strings.Builder
		code, done := f.Parse(newFlags(), c.args, &out, &errb)
		if code != c.code || done != c.done || !strings.Contains(out.String(), c.out) || !strings.Contains(errb.String(), c.err) ||
			(code == ExitUsage && strings.Count(errb.String(), "\n") != 1) {
			t.Errorf("%q: code %d done %v, stdout %q, stderr %q", c.args, code, done, out.String(), errb.String())
		}
	}
	var out, errb strings.Builder
	if code, _ := ParseFlags(newFlags(), []string{"x"}, "", &out, &errb); code != ExitUsage || !strings.Contains(errb.String(), "takes no arguments") {
		t.Errorf("ParseFlags with an argument: %d %q", code, errb.String())
	}
}
