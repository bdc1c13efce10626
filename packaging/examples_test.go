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

// The shipped HA examples (packaging/examples, docs/ha.md) cannot run here
// (no cluster manager, no Kubernetes): each is checked by the tool that
// reads it, as far as one is installable.

// dropInUnits writes the package's units and the etcd drop-in (its text
// changed by edit) into a fresh unit directory, /usr/sbin/hoststat-statd
// pointing at the built rpc.statd, as `make install` rewrites it.
func dropInUnits(t *testing.T, statd string, edit func(string) string) string {
	t.Helper()
	dir := t.TempDir()
	units, _ := filepath.Glob("systemd/*.service")
	if len(units) == 0 {
		t.Fatal("no units in packaging/systemd")
	}
	write := func(src, dst string, edit func(string) string) {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		s := strings.ReplaceAll(edit(string(b)), "/usr/sbin/hoststat-statd", statd)
		if err := os.WriteFile(dst, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	same := func(s string) string { return s }
	for _, u := range units {
		write(u, filepath.Join(dir, filepath.Base(u)), same)
	}
	if err := os.Mkdir(filepath.Join(dir, "hoststat-statd.service.d"), 0o755); err != nil {
		t.Fatal(err)
	}
	write("examples/hoststat-statd-etcd.conf", filepath.Join(dir, "hoststat-statd.service.d", "etcd.conf"), edit)
	return filepath.Join(dir, "hoststat-statd.service")
}

// TestEtcdDropInVerifies: systemd-analyze verify accepts hoststat-statd.service
// with the etcd drop-in, and refuses it once the drop-in lacks the empty
// ExecStart= that resets the unit's command (so the drop-in is read).
func TestEtcdDropInVerifies(t *testing.T) {
	analyze := netlab.RequireCommand(t, "systemd-analyze")
	statd := filepath.Join(netlab.BuildCommands(t, "./cmd/rpc.statd"), "rpc.statd")
	verify := func(unit string) (string, error) {
		out, err := exec.Command(analyze, "verify", "--man=no", unit).CombinedOutput()
		return string(out), err
	}
	if out, err := verify(dropInUnits(t, statd, func(s string) string { return s })); err != nil || strings.Contains(out, "hoststat-statd") {
		t.Fatalf("systemd-analyze verify with the drop-in: %v\n%s", err, out)
	}
	noReset := func(s string) string { return strings.Replace(s, "ExecStart=\n", "", 1) }
	if out, err := verify(dropInUnits(t, statd, noReset)); err == nil {
		t.Fatalf("systemd-analyze verify accepts a drop-in adding a second ExecStart= to a Type=notify unit:\n%s", out)
	}
}

var longFlag = regexp.MustCompile(`(?m)(?:^|\s)--([a-z][\w-]*)`)

// TestExamplesUseRealFlags: every option the examples give rpc.statd is
// one rpc.statd --help lists.
func TestExamplesUseRealFlags(t *testing.T) {
	statd := filepath.Join(netlab.BuildCommands(t, "./cmd/rpc.statd"), "rpc.statd")
	help, err := exec.Command(statd, "--help").Output()
	if err != nil {
		t.Fatal(err)
	}
	known := map[string]bool{}
	for _, f := range helpFlag.FindAllStringSubmatch(string(help), -1) {
		known[f[2]] = true
	}
	for _, ex := range []string{"examples/hoststat-statd-etcd.conf", "examples/kubernetes.yaml"} {
		b, err := os.ReadFile(ex)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(strings.TrimSpace(line), "#") {
				continue
			}
			for _, f := range longFlag.FindAllStringSubmatch(line, -1) {
				n++
				if !known[f[1]] {
					t.Errorf("%s: rpc.statd has no --%s", ex, f[1])
				}
			}
		}
		if n < 5 {
			t.Errorf("%s: only %d options found", ex, n)
		}
	}
}

// TestExamplesParse: keepalived -t accepts keepalived.conf, the pcs script
// is valid sh, and kubernetes.yaml is YAML holding the Service and the
// two-replica StatefulSet the docs describe.
func TestExamplesParse(t *testing.T) {
	keepalived := netlab.RequireCommand(t, "keepalived")
	if out, err := exec.Command(keepalived, "-t", "-f", "examples/keepalived.conf").CombinedOutput(); err != nil {
		t.Errorf("keepalived -t: %v\n%s", err, out)
	}
	if out, err := exec.Command("sh", "-n", "examples/pacemaker-pcs.sh").CombinedOutput(); err != nil {
		t.Errorf("sh -n pacemaker-pcs.sh: %v\n%s", err, out)
	}
	python := netlab.RequireCommand(t, "python3")
	script := `import sys, yaml
docs = list(yaml.safe_load_all(open(sys.argv[1])))
print(" ".join("%s:%s" % (d["kind"], d["spec"].get("replicas", "-")) for d in docs))`
	out, err := exec.Command(python, "-c", script, "examples/kubernetes.yaml").CombinedOutput()
	if err != nil {
		t.Fatalf("kubernetes.yaml: %v\n%s", err, out)
	}
	if got := strings.TrimSpace(string(out)); got != "Service:- StatefulSet:2" {
		t.Errorf("kubernetes.yaml holds %q, want a Service and a StatefulSet of 2 replicas", got)
	}
}
