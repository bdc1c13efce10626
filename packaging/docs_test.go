// Package packaging holds the files that install hoststat (systemd units,
// nfpm description, maintainer scripts) and the tests that hold the
// generated manual pages, completions and configuration to the commands.
package packaging

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/hoststat/hoststat/internal/netlab"
)

// commands maps each command to its installed name and manual section.
var commands = []struct{ cmd, installed, section string }{
	{"recvstats", "recvstats", "8"},
	{"sendstats", "sendstats", "8"},
	{"beostat", "beostat", "1"},
	{"beostatus", "beostatus", "1"},
	{"rpc.statd", "hoststat-statd", "8"},
	{"statdctl", "statdctl", "8"},
}

// generated runs scripts/gen-docs once on freshly built commands.
func generated(t *testing.T) (bin, out string) {
	t.Helper()
	var pkgs []string
	for _, c := range commands {
		pkgs = append(pkgs, "./cmd/"+c.cmd)
	}
	bin = netlab.BuildCommands(t, pkgs...)
	out = t.TempDir()
	gen := exec.Command("scripts/gen-docs", bin, out)
	gen.Dir = ".."
	if b, err := gen.CombinedOutput(); err != nil {
		t.Fatalf("scripts/gen-docs: %v\n%s", err, b)
	}
	return bin, out
}

var helpFlag = regexp.MustCompile(`(?m)^\s+(?:-(\w), )?--([\w.-]+)`)

// TestManualPagesMatchHelp: every flag --help shows is in the manual page,
// every page has the classic sections, and groff renders it without a
// single warning (-ww).
func TestManualPagesMatchHelp(t *testing.T) {
	groff := netlab.RequireCommand(t, "groff")
	bin, out := generated(t)
	for _, c := range commands {
		help, err := exec.Command(filepath.Join(bin, c.cmd), "--help").Output()
		if err != nil {
			t.Fatalf("%s --help: %v", c.cmd, err)
		}
		page := filepath.Join(out, "man", c.installed+"."+c.section)
		b, err := os.ReadFile(page)
		if err != nil {
			t.Fatal(err)
		}
		roff := string(b)
		flags := helpFlag.FindAllStringSubmatch(string(help), -1)
		if len(flags) < 3 {
			t.Fatalf("%s --help lists %d flags:\n%s", c.cmd, len(flags), help)
		}
		for _, f := range flags {
			long := `\fB\-\-` + strings.ReplaceAll(f[2], "-", `\-`) + `\fR`
			if !strings.Contains(roff, long) {
				t.Errorf("%s: --%s is in --help but not in %s", c.cmd, f[2], filepath.Base(page))
			}
			if f[1] != "" && !strings.Contains(roff, `\fB\-`+f[1]+`\fR`) {
				t.Errorf("%s: -%s is in --help but not in %s", c.cmd, f[1], filepath.Base(page))
			}
		}
		want := []string{"NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "FILES", "EXIT STATUS", "SEE ALSO"}
		if c.section == "8" && c.cmd != "statdctl" {
			want = append(want, "SIGNALS", "SECURITY", "BUGS")
		}
		for _, s := range want {
			if !strings.Contains(roff, "\n.SH "+s+"\n") && !strings.Contains(roff, "\n.SH \""+s+"\"\n") {
				t.Errorf("%s has no %s section", filepath.Base(page), s)
			}
		}
	}
	pages, _ := filepath.Glob(filepath.Join(out, "man", "*"))
	if len(pages) != len(commands)+1 {
		t.Errorf("pages %v: want one per command and hoststat.conf.5", pages)
	}
	for _, p := range pages {
		warn, err := exec.Command(groff, "-ww", "-man", "-Tutf8", "-z", p).CombinedOutput()
		if err != nil || len(warn) > 0 {
			t.Errorf("groff -ww %s: %v\n%s", filepath.Base(p), err, warn)
		}
	}
}

// TestCompletionsOfferEveryFlag: sourced in bash, each completion offers
// every flag of its command after "--", as a user's Tab would.
func TestCompletionsOfferEveryFlag(t *testing.T) {
	bash := netlab.RequireCommand(t, "bash")
	bin, out := generated(t)
	for _, c := range commands {
		help, err := exec.Command(filepath.Join(bin, c.cmd), "--help").Output()
		if err != nil {
			t.Fatal(err)
		}
		script := `source "$1"; fn=$(complete -p "$2" | sed -n 's/.*-F \([^ ]*\) .*/\1/p'); COMP_WORDS=("$2" --); COMP_CWORD=1; "$fn"; printf '%s\n' "${COMPREPLY[@]}"`
		got, err := exec.Command(bash, "-c", script, "bash", filepath.Join(out, "completions", c.installed), c.installed).CombinedOutput()
		if err != nil {
			t.Fatalf("%s completion: %v\n%s", c.installed, err, got)
		}
		offered := map[string]bool{}
		for _, w := range strings.Fields(string(got)) {
			offered[w] = true
		}
		for _, f := range helpFlag.FindAllStringSubmatch(string(help), -1) {
			if !offered["--"+f[2]] {
				t.Errorf("%s: completion does not offer --%s (offers %s)", c.installed, f[2], got)
			}
		}
	}
}
