package recv_test

import (
	"context"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hoststat/hoststat/internal/netlab"
	"github.com/hoststat/hoststat/telemetry/recv"
)

// A burst larger than the socket's receive buffer, sent while the server
// is not reading, is dropped by the kernel: recvstats reads the socket's
// drop counter (SO_RXQ_OVFL), counts it as a drop reason and publishes it
// in the table header for readers.
func TestKernelDropsReachTheTableHeader(t *testing.T) {
	dir := t.TempDir()
	logs := &recordCounter{}
	srv, err := recv.NewServer(recv.Config{Listen: netip.MustParseAddr("127.0.0.1"), ShmDir: dir,
		ReadBuffer: 1, // the kernel's least: a few datagrams
		Logger:     slog.New(logs)})
	if err != nil {
		t.Fatal(err)
	}
	// Not serving yet: the burst queues until the buffer is full, then
	// the kernel drops the rest.
	const burst = 200
	bufs := make([][]byte, burst)
	for i := range bufs {
		bufs[i] = encode(t, nil, 0, uint32(i+1), testSample(1))
	}
	sendAs(t, "127.0.0.1", srv.Addr(), bufs...)
	netlab.Serve(t, srv.Serve, srv.Close)
	// Datagrams carry the drop count as of their queueing: one sent
	// after the burst has it all. Every datagram sent is then either
	// stored or counted as dropped by the kernel.
	r := openReader(t, dir)
	sent := uint64(burst)
	var want uint64
	waitFor(t, 10*time.Second, "the kernel's drops in the table header", func() bool {
		sent++
		sendAs(t, "127.0.0.1", srv.Addr(), encode(t, nil, 0, uint32(sent), testSample(1)))
		time.Sleep(150 * time.Millisecond) // the header is published every 100 ms
		want = r.Info().KernelDrops
		return want > 0 && srv.Stored()+want == sent
	})
	if want < burst/2 {
		t.Errorf("%d of a burst of %d dropped: the receive buffer was not the kernel's least", want, burst)
	}
	if got := srv.Drops()[recv.DropKernel]; got != want {
		t.Errorf("server counts %d kernel drops, want %d", got, want)
	}
	if info := r.Info(); info.ReadBuffer <= 0 || info.ReadBuffer > 64<<10 {
		t.Errorf("header read buffer %d, want the small one granted", info.ReadBuffer)
	}
	srv.Close()
	if !logs.has("receive summary", "kernel=") || !logs.has("the kernel dropped datagrams", "") {
		t.Errorf("kernel drops not in the summary: %v", logs.messages())
	}
}

// With -d, recvstats logs a summary per interval, never a line per
// packet: N packets, stored and dropped, make a handful of records.
func TestDebugLogsPerIntervalNotPerPacket(t *testing.T) {
	logs := &recordCounter{debug: true}
	srv, _, stop := startServer(t, recv.Config{Logger: slog.New(logs)})
	const n = 2000
	var bufs [][]byte
	for i := range n {
		bufs = append(bufs, encode(t, nil, 0, uint32(i+1), testSample(1)), []byte("not a status packet"))
	}
	// Sent in slices, so the socket's buffer is never the limit.
	for i := 0; i < len(bufs); i += 200 {
		sendAs(t, "127.0.0.1", srv.Addr(), bufs[i:i+200]...)
		waitFor(t, 5*time.Second, "the slice received", func() bool {
			d := srv.Drops()
			return srv.Stored()+d.Total() >= uint64(i+200)
		})
	}
	time.Sleep(1200 * time.Millisecond) // one debug interval passes
	stop()
	if d := srv.Drops(); srv.Stored() != n || d.Total() != n {
		t.Fatalf("stored %d, dropped %s; want %d each", srv.Stored(), d.String(), n)
	}
	if got := logs.count(); got > 30 {
		t.Errorf("%d log records for %d packets: debug output is per packet", got, 2*n)
	}
	if !logs.has("receive interval", "last_drop=") || !logs.has("receive interval", "@127.0.0.1=") {
		t.Errorf("no debug interval summary naming a dropped packet and its source: %v", logs.messages())
	}
}

// recordCounter is a slog handler that keeps every record's text.
type recordCounter struct {
	debug bool
	mu    sync.Mutex
	recs  []string
}

func (c *recordCounter) Enabled(_ context.Context, l slog.Level) bool {
	return c.debug || l >= slog.LevelInfo
}

func (c *recordCounter) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(r.Message)
	r.Attrs(func(a slog.Attr) bool {
		b.WriteString(" " + a.String())
		return true
	})
	c.mu.Lock()
	c.recs = append(c.recs, b.String())
	c.mu.Unlock()
	return nil
}

func (c *recordCounter) WithAttrs([]slog.Attr) slog.Handler { return c }
func (c *recordCounter) WithGroup(string) slog.Handler      { return c }

func (c *recordCounter) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.recs)
}

func (c *recordCounter) messages() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.recs...)
}

// has tells whether a record starts with msg and contains attr.
func (c *recordCounter) has(msg, attr string) bool {
	for _, r := range c.messages() {
		if strings.HasPrefix(r, msg) && strings.Contains(r, attr) {
			return true
		}
	}
	return false
}
