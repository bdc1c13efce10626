package recv_test

import (
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hoststat/hoststat/internal/netlab"
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
	// A loaded machine may drop datagrams on loopback (other tests'
	// floods can take the system's UDP memory): a slice not all stored is
	// sent again for a while (the stored ones drop the repeats as
	// replays), and the test goes on with the nodes that came, at least
	// two budgets' worth.
	deadline := time.Now().Add(5 * time.Second)
	for i := 0; i < len(bufs); i += 100 {
		for srv.Stored() < uint64(i+100) && time.Now().Before(deadline) {
			sendAs(t, "127.0.0.1", srv.Addr(), bufs[i:i+100]...)
			for wait := time.Now().Add(300 * time.Millisecond); srv.Stored() < uint64(i+100) && time.Now().Before(wait); {
				time.Sleep(2 * time.Millisecond)
			}
		}
	}
	if came := srv.Stored(); came < 100 {
		t.Fatalf("only %d of %d nodes' samples arrived", came, nodes)
	}
	// What the log says of the nodes: lines before the first count (the
	// first second's budget), and every node up either a line or counted.
	tally := func() (first, lines, counted, summaries int) {
		first = -1
		for _, r := range logs.messages() {
			switch {
			case strings.HasPrefix(r, "node up"):
				lines++
			case strings.HasPrefix(r, "more node events than are logged"):
				if first < 0 {
					first = lines
				}
				summaries++
				for _, f := range strings.Fields(r) {
					if v, ok := strings.CutPrefix(f, "up="); ok {
						n, _ := strconv.Atoi(v)
						counted += n
					}
				}
			}
		}
		return first, lines, counted, summaries
	}
	if _, lines, _, _ := tally(); lines == 0 || lines > 50 {
		t.Errorf("%d \"node up\" lines for %d nodes in one second, want 1 to 50", lines, srv.Stored())
	}
	// A second on (and more while late datagrams still come), the rest
	// is counted.
	netlab.WaitFor(t, 10*time.Second, "every node up logged or counted", func() error {
		clock.Add(time.Second)
		time.Sleep(250 * time.Millisecond) // a tick or two of the server
		first, lines, counted, summaries := tally()
		switch {
		case first < 0 || first > 50 || summaries == 0:
			return fmt.Errorf("%d lines before the first count (%d counts)", first, summaries)
		case lines+counted != srv.Nodes():
			return fmt.Errorf("%d lines + %d counted, %d nodes up", lines, counted, srv.Nodes())
		}
		return nil
	})
}
