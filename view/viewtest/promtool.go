package viewtest

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/hoststat/hoststat/internal/netlab"
)

// Promtool runs promtool check metrics over a scrape and reports each
// problem as a test error; without promtool (Debian package prometheus)
// the test is skipped, or fails when CI=true. The one problem allowed is
// camelCase in node_memory_<Field>_bytes: those are node_exporter's exact
// names (its own output draws the same), kept so its dashboards apply.
func Promtool(t testing.TB, scrape string) {
	t.Helper()
	path := netlab.RequireCommand(t, "promtool")
	cmd := exec.Command(path, "check", "metrics")
	cmd.Stdin = strings.NewReader(scrape)
	out, err := cmd.CombinedOutput()
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		name, problem, _ := strings.Cut(line, " ")
		if line == "" || strings.HasPrefix(name, "node_memory_") && problem == "metric names should be written in 'snake_case' not 'camelCase'" {
			continue
		}
		t.Errorf("promtool: %s", line)
	}
	if err != nil && len(out) == 0 {
		t.Errorf("promtool: %v", err)
	}
}
