package e2e_test

import (
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/hoststat/hoststat/internal/netlab"
	"github.com/hoststat/hoststat/shm"
)

// TestHistoryKeptByRecvstats: a real recvstats keeps the history of what a
// real sendstats sends, and `beostat --history` prints it: full-resolution
// points in time order with the memory this machine has in use, and
// --history-nodes 0 keeps none.
func TestHistoryKeptByRecvstats(t *testing.T) {
	recvstats, sendstats := bins(t)
	beostat := filepath.Join(netlab.BuildCommands(t, "./cmd/beostat"), "beostat")
	dir, port := t.TempDir(), strconv.Itoa(freePort(t))
	nodeMap := writeNodeMap(t, "3 127.0.0.1")
	rc := exec.Command(recvstats, "-d", "--listen", "127.0.0.1", "-p", port, "--shm-dir", dir, "--node-map", nodeMap)
	if err := rc.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rc.Process.Kill(); rc.Wait() })
	sc := exec.Command(sendstats, "-d", "-a", "127.0.0.1:"+port, "--node", "3", "-r", "0.2")
	if err := sc.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sc.Process.Kill(); sc.Wait() })

	type point struct {
		Time       time.Time `json:"time"`
		Resolution string    `json:"resolution"`
		Up         bool      `json:"up"`
		MemUsed    uint64    `json:"mem_used"`
	}
	var fine []point
	netlab.WaitFor(t, 15*time.Second, "five history points of node 3", func() error {
		out, err := exec.Command(beostat, "--shm-dir", dir, "--history", "3", "--json").Output()
		if err != nil {
			return err
		}
		var h struct {
			Points []point `json:"points"`
		}
		if err := json.Unmarshal(out, &h); err != nil {
			return err
		}
		fine = fine[:0]
		for _, p := range h.Points {
			if p.Resolution == "full" {
				fine = append(fine, p)
			}
		}
		if len(fine) < 5 {
			return errNotYet(len(fine))
		}
		return nil
	})
	for i, p := range fine {
		if !p.Up || p.MemUsed == 0 {
			t.Errorf("point %d: %+v: want up with memory in use", i, p)
		}
		if i > 0 {
			// Times print to the second; sendstats samples every 200 ms.
			if gap := p.Time.Sub(fine[i-1].Time); gap < 0 || gap > 2*time.Second {
				t.Errorf("points %d and %d are %v apart; sendstats samples every 200ms", i-1, i, gap)
			}
		}
	}

	// Without history: no file, and the table still works.
	dir2, port2 := t.TempDir(), strconv.Itoa(freePort(t))
	r2 := exec.Command(recvstats, "-d", "--listen", "127.0.0.1", "-p", port2, "--shm-dir", dir2, "--history-nodes", "0")
	if err := r2.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r2.Process.Kill(); r2.Wait() })
	netlab.WaitFor(t, 10*time.Second, "the second table", func() error {
		r, err := shm.OpenReader(dir2)
		if err == nil {
			r.Close()
		}
		return err
	})
	if _, err := shm.OpenHistoryReader(dir2); err == nil {
		t.Error("--history-nodes 0 still made a history file")
	}
}

type errNotYet int

func (e errNotYet) Error() string { return strconv.Itoa(int(e)) + " points so far" }
