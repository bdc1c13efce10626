package e2e_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hoststat/hoststat/internal/netlab"
	"github.com/hoststat/hoststat/shm"
)

// Real sendstats → recvstats → beostat on loopback: the table shows this
// machine's hostname, its root filesystem with the size statfs gives, and
// its disks, in the table and in --node's text and JSON.
func TestHostnameFilesystemsDisksEndToEnd(t *testing.T) {
	recvstats, sendstats := bins(t)
	beostat := filepath.Join(netlab.BuildCommands(t, "./cmd/beostat"), "beostat")
	dir := t.TempDir()
	port := strconv.Itoa(freePort(t))
	nodeMap := writeNodeMap(t, "3 127.0.0.1")
	if r := runCmd(t, 30*time.Second, recvstats, "--listen", "127.0.0.1", "-p", port, "--shm-dir", dir, "--node-map", nodeMap); r.code != 0 {
		t.Fatalf("recvstats: exit %d, stderr %q", r.code, r.stderr)
	}
	tr, err := shm.OpenReader(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	pid := tr.Info().WriterPID
	t.Cleanup(func() { killPID(t, pid) })
	sargs := []string{"-a", "127.0.0.1:" + port, "--node", "3", "-r", "0.2"}
	if r := runCmd(t, 30*time.Second, sendstats, sargs...); r.code != 0 {
		t.Fatalf("sendstats: exit %d, stderr %q", r.code, r.stderr)
	}
	spid := daemonPID(t, sendstats, sargs...)
	t.Cleanup(func() { killPID(t, spid) })

	host, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	var root unix.Statfs_t
	if err := unix.Statfs("/", &root); err != nil {
		t.Fatal(err)
	}
	netlab.WaitFor(t, 10*time.Second, "node 3 with its details", func() error {
		var rec shm.Record
		if ok, err := tr.Read(3, &rec); err != nil || !ok {
			return fmt.Errorf("node 3: %v %v", ok, err)
		}
		if rec.Hostname() == "" || len(rec.Sample.Filesystems) == 0 {
			return fmt.Errorf("node 3 has hostname %q and %d filesystems", rec.Hostname(), len(rec.Sample.Filesystems))
		}
		return nil
	})

	want := host
	if len(want) > 32 {
		want = want[:32]
	}
	r := runCmd(t, 30*time.Second, beostat, "--shm-dir", dir)
	if r.code != 0 || !strings.Contains(r.stdout, " "+want+" ") {
		t.Errorf("beostat table lacks hostname %q: exit %d\n%s%s", want, r.code, r.stdout, r.stderr)
	}
	r = runCmd(t, 30*time.Second, beostat, "--shm-dir", dir, "--node", "3")
	if r.code != 0 || !strings.Contains(r.stdout, "node 3  "+want+"  ") || !strings.Contains(r.stdout, "MOUNT") {
		t.Errorf("beostat --node 3: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = runCmd(t, 30*time.Second, beostat, "--shm-dir", dir, "--node", "3", "--json")
	var ds []struct {
		Hostname    string  `json:"hostname"`
		Uptime      float64 `json:"uptime_seconds"`
		Filesystems []struct {
			Mount string `json:"mount"`
			Total uint64 `json:"total"`
		} `json:"filesystems"`
		Disks []struct {
			Name string `json:"name"`
		} `json:"disks"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &ds); err != nil || len(ds) != 1 {
		t.Fatalf("beostat --node 3 --json: %v\n%s", err, r.stdout)
	}
	d := ds[0]
	if d.Hostname != want || d.Uptime <= 0 {
		t.Errorf("hostname %q uptime %v, want %q and > 0", d.Hostname, d.Uptime, want)
	}
	var rootTotal uint64
	for _, f := range d.Filesystems {
		if f.Mount == "/" {
			rootTotal = f.Total
		}
	}
	if want := root.Blocks * uint64(root.Frsize); rootTotal != want {
		t.Errorf("/ total %d, statfs says %d (filesystems %+v)", rootTotal, want, d.Filesystems)
	}
	if b, err := os.ReadFile("/proc/diskstats"); err == nil && strings.Contains(string(b), " vda ") {
		found := false
		for _, k := range d.Disks {
			found = found || k.Name == "vda"
		}
		if !found {
			t.Errorf("disks %+v lack vda", d.Disks)
		}
	}
}
