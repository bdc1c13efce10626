package recv_test

import (
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hoststat/hoststat/shm"
	"github.com/hoststat/hoststat/telemetry/recv"
	"golang.org/x/sys/unix"
)

// A master whose history starts with 4 slots keeps the history of every
// node it stores, 30 of them and then 40: the file grows while a reader
// has it open, shrinks when most are forgotten, a forgotten node's slot
// goes to a new node, and the most slots (--history-nodes) is said once
// when reached.
func TestServerHistoryGrowsWithNodes(t *testing.T) {
	clock := &fakeClock{now: time.Now().Truncate(time.Second)}
	logs := &recordCounter{}
	srv, dir, _ := startServer(t, recv.Config{Key: testKey, InitialNodes: 4, Now: clock.Now, Logger: slog.New(logs),
		History: shm.HistoryOptions{Nodes: 40, Fine: 16, Coarse: 4}, Table: recv.TableConfig{ForgetAfter: time.Hour}})
	hr, err := shm.OpenHistoryReader(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer hr.Close()
	stored := uint64(0)
	send := func(seq uint32, nodes ...int) {
		t.Helper()
		for _, n := range nodes {
			sendAs(t, "127.0.0.1", srv.Addr(), encode(t, testKey, uint32(n), seq, testSample(byte(n))))
		}
		stored += uint64(len(nodes))
		waitFor(t, 5*time.Second, "the samples stored", func() bool { return srv.Stored() == stored })
	}
	points := func(n int) int {
		t.Helper()
		_, fine, ok, err := hr.Read(n, time.Time{})
		if err != nil {
			t.Fatalf("node %d: %v", n, err)
		}
		if !ok {
			return -1
		}
		return len(fine)
	}
	span := func(from, to int) []int {
		var s []int
		for n := from; n < to; n++ {
			s = append(s, n)
		}
		return s
	}

	send(1, span(0, 30)...)
	for n := range 30 {
		if p := points(n); p != 1 {
			t.Errorf("node %d: %d history points, want 1", n, p)
		}
	}
	slots := func() int64 { // the bytes of blocks behind the file
		var st unix.Stat_t
		if err := unix.Stat(filepath.Join(dir, shm.HistoryFileName), &st); err != nil {
			t.Fatal(err)
		}
		return st.Blocks * 512
	}
	grown := slots()

	// Half an hour on, nodes 0-4 speak again; at an hour 5-29 are forgotten.
	clock.Add(30 * time.Minute)
	send(2, span(0, 5)...)
	clock.Add(31 * time.Minute)
	waitFor(t, 5*time.Second, "25 nodes forgotten", func() bool { return srv.Forgotten() == 25 })
	for n := range 30 {
		want := 2
		if n >= 5 {
			want = -1
		}
		if p := points(n); p != want {
			t.Errorf("node %d after the forgetting: %d points, want %d (-1: no history)", n, p, want)
		}
	}
	if s := slots(); s >= grown {
		t.Errorf("history file holds %d bytes with 5 nodes, %d with 30", s, grown)
	}

	// 35 new nodes fill the 40 slots; the next ones find none, said once.
	send(1, span(100, 135)...)
	for n := 100; n < 135; n++ {
		if p := points(n); p != 1 {
			t.Errorf("new node %d: %d points, want 1 (none of a forgotten node's)", n, p)
		}
	}
	send(1, 200, 201, 202)
	if p := points(200); p != -1 {
		t.Errorf("node 200 beyond --history-nodes has %d points", p)
	}
	full := 0
	for _, m := range logs.messages() {
		if strings.HasPrefix(m, "history full") {
			full++
		}
	}
	if full != 1 {
		t.Errorf("history full said %d times, want once", full)
	}
	if d := srv.Drops(); d.Total() != 0 {
		t.Errorf("drops: %v", d.String())
	}
}
