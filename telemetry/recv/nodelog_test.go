package recv_test

import (
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hoststat/hoststat/telemetry/recv"
)

// A cluster that reaches a fresh master at once is not a log line per
// node: 600 nodes up in one second make at most 50 "node up" lines and,
// the next second, one line counting the other 550; every node is still
// stored and up. Before, each was a syslog write from the receive loop,
// and at 100,000 nodes the kernel dropped datagrams meanwhile.
func TestNodeEventsLoggedWithinABudget(t *testing.T) {
	clock := &fakeClock{now: time.Now().Truncate(time.Second)}
	logs := &recordCounter{}
	srv, _, _ := startServer(t, recv.Config{Key: testKey, Now: clock.Now, Logger: slog.New(logs)})
	const nodes = 600
	var bufs [][]byte
	for n := range nodes {
		bufs = append(bufs, encode(t, testKey, uint32(n), 1, testSample(byte(n))))
	}
	for i := 0; i < len(bufs); i += 100 {
		// A loaded loopback may lose a datagram: a slice not all stored
		// is sent again (what was stored drops the repeats as replays).
		deadline := time.Now().Add(10 * time.Second)
		for srv.Stored() < uint64(i+100) {
			if time.Now().After(deadline) {
				t.Fatalf("slice %d: %d stored, %d received", i/100, srv.Stored(), srv.Received())
			}
			sendAs(t, "127.0.0.1", srv.Addr(), bufs[i:i+100]...)
			for wait := time.Now().Add(300 * time.Millisecond); srv.Stored() < uint64(i+100) && time.Now().Before(wait); {
				time.Sleep(2 * time.Millisecond)
			}
		}
	}
	lines := func(prefix string) (n int, last string) {
		for _, r := range logs.messages() {
			if strings.HasPrefix(r, prefix) {
				n, last = n+1, r
			}
		}
		return n, last
	}
	if up, _ := lines("node up"); up == 0 || up > 50 {
		t.Errorf("%d \"node up\" lines for %d nodes in one second, want 1 to 50", up, nodes)
	}
	clock.Add(time.Second)
	waitFor(t, 5*time.Second, "the count of the rest", func() bool {
		n, _ := lines("more node events than are logged")
		return n > 0
	})
	up, _ := lines("node up")
	n, summary := lines("more node events than are logged")
	if n != 1 || !strings.Contains(summary, "up="+strconv.Itoa(nodes-up)) {
		t.Errorf("%d summaries, %q, want one counting up=%d", n, summary, nodes-up)
	}
	if srv.Nodes() != nodes {
		t.Errorf("%d nodes in the table, want %d", srv.Nodes(), nodes)
	}
}
