package capacity

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hoststat/hoststat/shm"
	"github.com/hoststat/hoststat/telemetry/recv"
)

// Mode is the receiver a point measures.
type Mode string

// The receivers, in the order a sweep runs them for each node count.
const (
	ModeBare       Mode = "bare"         // barerecv: count datagrams only
	ModeBackground Mode = "recvstats"    // recvstats as deployed, in the background
	ModeDebug      Mode = "recvstats -d" // recvstats in the foreground, debug output on
)

// Modes are every receiver, in sweep order.
var Modes = []Mode{ModeBare, ModeBackground, ModeDebug}

// Options of a measurement.
type Options struct {
	// Bin holds the commands recvstats, loadgen and barerecv.
	Bin   string
	Nodes []int   // node counts of a sweep
	Rate  float64 // samples a node sends a second
	// Warmup runs before the window: every node is seen and the table
	// has grown before anything is measured.
	Warmup time.Duration
	Window time.Duration // what is measured
	// Repeat runs the whole set of receivers this many times per node
	// count, alternating, so the table shows the spread.
	Repeat int
	// KeyFile signs the generator's packets and is given to recvstats;
	// when empty a fresh key is made for each point.
	KeyFile string
	// ReadBuffer is the bare receiver's socket buffer; default
	// DefaultReadBuffer, recvstats' own.
	ReadBuffer int
	// Progress gets a line per point; nil discards.
	Progress io.Writer
	// PerfDir, when set, profiles each receiver over its window with
	// perf(1) and keeps there perf.data and a text report per point.
	// The profiler costs CPU too: such a sweep finds where the time
	// goes, and its CPU figures are not the clean ones.
	PerfDir string
}

func (o *Options) defaults() {
	if o.Rate <= 0 {
		o.Rate = 1
	}
	if o.Warmup <= 0 {
		o.Warmup = 3 * time.Second
	}
	if o.Window <= 0 {
		o.Window = 30 * time.Second
	}
	if o.Repeat <= 0 {
		o.Repeat = 1
	}
	if o.ReadBuffer <= 0 {
		o.ReadBuffer = DefaultReadBuffer
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
}

// Point is one receiver measured beside the generator at one node count.
type Point struct {
	Mode   Mode    `json:"mode"`
	Nodes  int     `json:"nodes"`
	Rate   float64 `json:"rate"`
	Window float64 `json:"window_s"` // seconds measured
	Sent   Sent    `json:"sent"`     // the whole run, warm-up included
	// Received is what reached the receiver over the run: datagrams
	// counted by barerecv, samples stored in the table by recvstats
	// (the table header's count of records written).
	Received         uint64 `json:"received"`
	ReceivedInWindow uint64 `json:"received_in_window"`
	// TableNodes and FreshNodes (recvstats only) count the nodes in the
	// table, and those of them whose last update came in the window.
	TableNodes int `json:"table_nodes,omitempty"`
	FreshNodes int `json:"fresh_nodes,omitempty"`
	// KernelDrops is the socket's drop counter (/proc/net/udp) at the
	// end of the run; WindowDrops its growth over the window.
	KernelDrops uint64 `json:"kernel_drops"`
	// ReadBuffer is the receive buffer the receiver's socket was
	// granted (ss -m; 0 when unknown): bare and recvstats must match.
	ReadBuffer  int    `json:"read_buffer,omitempty"`
	WindowDrops uint64 `json:"window_drops"`
	// CPU is the share of one CPU each process used over the window,
	// by the kernel's accounting (utime+stime of all threads).
	ReceiverCPU  float64    `json:"receiver_cpu"`
	GeneratorCPU float64    `json:"generator_cpu"`
	ReceiverPID  int        `json:"receiver_pid"`
	Memory       Memory     `json:"receiver_memory"` // at the end of the window
	Load         [2]float64 `json:"load1"`           // 1-minute load average at the window's start and end
	Start        time.Time  `json:"start"`
	Profile      string     `json:"profile,omitempty"` // perf.data of the window, with a .txt report beside
}

// Lost is what was sent and never reached the receiver (or the table).
func (p *Point) Lost() int64 { return int64(p.Sent.Samples) - int64(p.Received) }

// CPUPerPacket is the receiver's CPU time per datagram it took in the
// window.
func (p *Point) CPUPerPacket() time.Duration {
	if p.ReceivedInWindow == 0 {
		return 0
	}
	return time.Duration(p.ReceiverCPU * p.Window * float64(time.Second) / float64(p.ReceivedInWindow))
}

// Sweep measures every receiver at every node count of o, alternating.
func Sweep(ctx context.Context, o Options) ([]Point, error) {
	o.defaults()
	var points []Point
	for _, n := range o.Nodes {
		for rep := 0; rep < o.Repeat; rep++ {
			for _, m := range Modes {
				p, err := Measure(ctx, o, m, n)
				if err != nil {
					return points, fmt.Errorf("%d nodes, %s: %w", n, m, err)
				}
				fmt.Fprintf(o.Progress, "%7d nodes %-13s cpu %5.1f %% (%v/pkt) generator %5.1f %%  sent %d received %d lost %d kernel drops %d (window %d)  fresh %d  peak RSS %.1f MiB  load %.1f–%.1f\n",
					n, m, 100*p.ReceiverCPU, p.CPUPerPacket(), 100*p.GeneratorCPU, p.Sent.Samples, p.Received, p.Lost(),
					p.KernelDrops, p.WindowDrops, p.FreshNodes, float64(p.Memory.Peak)/(1<<20), p.Load[0], p.Load[1])
				points = append(points, p)
			}
		}
	}
	return points, nil
}

// Measure runs one receiver beside the generator playing nodes: warm-up,
// then the window, then the generator stops and the receiver drains.
func Measure(ctx context.Context, o Options, mode Mode, nodes int) (Point, error) {
	o.defaults()
	p := Point{Mode: mode, Nodes: nodes, Rate: o.Rate}
	dir, err := os.MkdirTemp("", "hoststat-capacity-")
	if err != nil {
		return p, err
	}
	defer os.RemoveAll(dir)
	keyFile := o.KeyFile
	if keyFile == "" {
		if keyFile, err = writeKey(dir); err != nil {
			return p, err
		}
	}
	if keyFile, err = filepath.Abs(keyFile); err != nil { // background recvstats runs in /
		return p, err
	}
	port, err := freePort()
	if err != nil {
		return p, err
	}

	rc, err := startReceiver(ctx, o, mode, dir, keyFile, port, nodes)
	if err != nil {
		return p, err
	}
	defer rc.stop()
	p.ReceiverPID = rc.pid
	p.ReadBuffer = ReceiveBuffer(port)

	gen := newProc(filepath.Join(o.Bin, "loadgen"), "--to", fmt.Sprintf("127.0.0.1:%d", port),
		"--nodes", strconv.Itoa(nodes), "--rate", strconv.FormatFloat(o.Rate, 'g', -1, 64), "--key-file", keyFile)
	if err := gen.start(); err != nil {
		return p, err
	}
	defer gen.kill()

	if err := sleep(ctx, o.Warmup); err != nil {
		return p, err
	}
	before, err := rc.snapshot(gen.pid)
	if err != nil {
		return p, err
	}
	var perf *proc
	if o.PerfDir != "" {
		p.Profile = filepath.Join(o.PerfDir, fmt.Sprintf("%d-%s.perf.data", nodes, strings.ReplaceAll(string(mode), " ", "")))
		perf = newProc("perf", "record", "-q", "-F", "499", "-g", "-p", strconv.Itoa(rc.pid), "-o", p.Profile)
		if err := perf.start(); err != nil {
			return p, fmt.Errorf("perf: %w", err)
		}
		defer perf.kill()
	}
	if err := sleep(ctx, o.Window); err != nil {
		return p, err
	}
	after, err := rc.snapshot(gen.pid)
	if err != nil {
		return p, err
	}
	if p.Memory, err = ProcessMemory(rc.pid); err != nil {
		return p, err
	}

	if perf != nil {
		if err := stopPerf(perf); err != nil {
			return p, err
		}
	}
	if err := gen.stop(); err != nil {
		return p, fmt.Errorf("loadgen: %w\n%s", err, gen.stderr.String())
	}
	if err := json.Unmarshal(gen.lastLine(), &p.Sent); err != nil {
		return p, fmt.Errorf("loadgen output %q: %v", gen.stdout.String(), err)
	}
	// Let the receiver take what is still queued.
	if err := sleep(ctx, 500*time.Millisecond); err != nil {
		return p, err
	}
	end, err := rc.snapshot(0)
	if err != nil {
		return p, err
	}
	if mode != ModeBare {
		if p.TableNodes, p.FreshNodes, err = countNodes(rc.table, before.at); err != nil {
			return p, err
		}
	}

	w := after.at.Sub(before.at)
	p.Start, p.Window = before.at, w.Seconds()
	p.ReceiverCPU = (after.receiverCPU - before.receiverCPU).Seconds() / w.Seconds()
	p.GeneratorCPU = (after.generatorCPU - before.generatorCPU).Seconds() / w.Seconds()
	p.ReceivedInWindow = after.received - before.received
	p.Received = end.received
	p.KernelDrops, p.WindowDrops = end.drops, after.drops-before.drops
	p.Load = [2]float64{before.load, after.load}
	if err := rc.stop(); err != nil {
		return p, err
	}
	if perf != nil {
		return p, perfReport(p.Profile)
	}
	return p, nil
}

// receiver is the process under measurement.
type receiver struct {
	mode  Mode
	proc  *proc // the command started; for the background mode, the parent that has exited
	pid   int   // the process that receives
	port  uint16
	table *shm.Reader
	done  bool
}

type snapshot struct {
	at                        time.Time
	receiverCPU, generatorCPU time.Duration
	received, drops           uint64
	load                      float64
}

func startReceiver(ctx context.Context, o Options, mode Mode, dir, keyFile string, port uint16, nodes int) (*receiver, error) {
	r := &receiver{mode: mode, port: port}
	shmDir := filepath.Join(dir, "shm")
	switch mode {
	case ModeBare:
		r.proc = newProc(filepath.Join(o.Bin, "barerecv"), "--listen", fmt.Sprintf("127.0.0.1:%d", port),
			"--read-buffer", strconv.Itoa(o.ReadBuffer))
	case ModeBackground, ModeDebug:
		args := []string{"--listen", "127.0.0.1", "-p", strconv.Itoa(int(port)), "--shm-dir", shmDir, "--key-file", keyFile}
		if nodes > recv.DefaultMaxNodes {
			// As the admin of a cluster that large raises it.
			args = append(args, "--max-nodes", strconv.Itoa(nodes))
		}
		if mode == ModeDebug {
			args = append([]string{"-d"}, args...)
		}
		r.proc = newProc(filepath.Join(o.Bin, "recvstats"), args...)
		if mode == ModeDebug {
			// -d output can be large: it goes to a file, as an operator's
			// terminal or journal would take it, not into memory.
			f, err := os.Create(filepath.Join(dir, "recvstats.log"))
			if err != nil {
				return nil, err
			}
			defer f.Close()
			r.proc.cmd.Stderr = f
		}
	default:
		return nil, fmt.Errorf("unknown mode %q", mode)
	}
	if err := r.proc.start(); err != nil {
		return nil, err
	}
	r.pid = r.proc.pid
	if mode == ModeBackground {
		// The parent returns once the background child serves.
		if err := r.proc.wait(ctx, 30*time.Second); err != nil {
			r.proc.kill()
			return nil, fmt.Errorf("recvstats: %w\n%s", err, r.proc.stderr.String())
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := r.ready(shmDir)
		if err == nil {
			return r, nil
		}
		if (mode != ModeBackground && r.proc.exited()) || time.Now().After(deadline) {
			r.stop()
			return nil, fmt.Errorf("%s did not start: %v\n%s", mode, err, r.proc.stderr.String())
		}
		if err := sleep(ctx, 20*time.Millisecond); err != nil {
			r.stop()
			return nil, err
		}
	}
}

// ready checks that the socket is bound and, for recvstats, that the
// table names the process that writes it.
func (r *receiver) ready(shmDir string) error {
	sock, err := UDPSocket(r.port)
	if err != nil {
		return err
	}
	if r.mode == ModeBare {
		return r.owns(sock.Inode)
	}
	if r.table == nil {
		t, err := shm.OpenReader(shmDir)
		if err != nil {
			return err
		}
		r.table = t
	}
	pid := r.table.Info().WriterPID
	switch {
	case pid == 0:
		return errors.New("no writer in the table yet")
	case r.mode == ModeDebug && pid != r.pid:
		return fmt.Errorf("table written by pid %d, not by recvstats %d", pid, r.pid)
	}
	r.pid = pid // the background child
	return r.owns(sock.Inode)
}

// owns checks that the socket bound to the port is the receiver's, so
// the drops read are its own.
func (r *receiver) owns(inode uint64) error {
	ok, err := OwnsSocket(r.pid, inode)
	if err == nil && !ok {
		err = fmt.Errorf("the socket on port %d (inode %d) is not pid %d's", r.port, inode, r.pid)
	}
	return err
}

// snapshot reads the counters; generator CPU too when gen is not 0.
func (r *receiver) snapshot(gen int) (snapshot, error) {
	s := snapshot{at: time.Now()}
	var err error
	if s.receiverCPU, err = ProcessCPU(r.pid); err != nil {
		return s, err
	}
	if gen != 0 {
		if s.generatorCPU, err = ProcessCPU(gen); err != nil {
			return s, err
		}
	}
	sock, err := UDPSocket(r.port)
	if err != nil {
		return s, err
	}
	s.drops = sock.Drops
	if s.load, err = LoadAverage(); err != nil {
		return s, err
	}
	if r.mode == ModeBare {
		var c Received
		if err := r.proc.ask(syscall.SIGUSR1, &c); err != nil {
			return s, fmt.Errorf("barerecv counts: %w", err)
		}
		s.received = c.Datagrams
	} else {
		s.received = r.table.Info().Puts
	}
	return s, nil
}

// stop ends the receiver; it is safe to call again.
func (r *receiver) stop() error {
	if r.done {
		return nil
	}
	r.done = true
	if r.table != nil {
		r.table.Close()
	}
	if r.mode != ModeBackground {
		return r.proc.stop()
	}
	if r.pid == r.proc.pid {
		return nil // the child never showed
	}
	// The background daemon is not our child: signal it and watch
	// /proc until it is gone.
	if err := syscall.Kill(r.pid, syscall.SIGTERM); err != nil {
		return fmt.Errorf("recvstats pid %d: %w", r.pid, err)
	}
	for i := 0; i < 500; i++ {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", r.pid)); err != nil {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	syscall.Kill(r.pid, syscall.SIGKILL)
	return fmt.Errorf("recvstats pid %d did not stop on SIGTERM within 10 s", r.pid)
}

// countNodes counts the nodes in the table and those last updated at or
// after since.
func countNodes(t *shm.Reader, since time.Time) (inTable, fresh int, err error) {
	info := t.Info()
	for n := 0; n < info.NodeLimit; n++ {
		s, ok, err := t.Summary(n)
		if err != nil {
			return inTable, fresh, err
		}
		if !ok {
			continue
		}
		inTable++
		if !s.LastSeen.Before(since) {
			fresh++
		}
	}
	return inTable, fresh, nil
}

// proc is a command started by the harness, with its output kept.
type proc struct {
	cmd            *exec.Cmd
	pid            int
	stdout, stderr lockedBuffer
	waited         chan struct{}
	err            error
}

func newProc(name string, args ...string) *proc {
	p := &proc{cmd: exec.Command(name, args...), waited: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
	return p
}

func (p *proc) start() error {
	if err := p.cmd.Start(); err != nil {
		return err
	}
	p.pid = p.cmd.Process.Pid
	go func() { p.err = p.cmd.Wait(); close(p.waited) }()
	return nil
}

func (p *proc) exited() bool {
	select {
	case <-p.waited:
		return true
	default:
		return false
	}
}

func (p *proc) wait(ctx context.Context, timeout time.Duration) error {
	select {
	case <-p.waited:
		return p.err
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(timeout):
		return fmt.Errorf("%s still running after %v", p.cmd.Path, timeout)
	}
}

// stop sends SIGTERM and waits for the exit (SIGKILL after 10 s).
func (p *proc) stop() error {
	if p.exited() {
		return p.err
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.waited:
		return p.err
	case <-time.After(10 * time.Second):
		p.kill()
		return fmt.Errorf("%s did not stop on SIGTERM within 10 s", p.cmd.Path)
	}
}

func (p *proc) kill() {
	if !p.exited() {
		p.cmd.Process.Kill()
		<-p.waited
	}
}

// ask sends sig and decodes the JSON line the process prints in answer.
func (p *proc) ask(sig os.Signal, v any) error {
	lines := p.stdout.lines()
	if err := p.cmd.Process.Signal(sig); err != nil {
		return err
	}
	for i := 0; i < 250; i++ {
		if p.stdout.lines() > lines {
			return json.Unmarshal(p.lastLine(), v)
		}
		if p.exited() {
			return fmt.Errorf("exited: %v\n%s", p.err, p.stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	return fmt.Errorf("no answer to %v within 2.5 s", sig)
}

// lastLine is the last complete line of the standard output.
func (p *proc) lastLine() []byte {
	b := bytes.TrimRight([]byte(p.stdout.String()), "\n")
	return b[bytes.LastIndexByte(b, '\n')+1:]
}

// lockedBuffer is an output buffer the harness reads while the process
// writes.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.b.Len() > 1<<20 {
		return len(p), nil // keep the start; the harness reads only short output
	}
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (l *lockedBuffer) lines() int { return strings.Count(l.String(), "\n") }

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// freePort finds a UDP port on loopback that nothing uses now.
func freePort() (uint16, error) {
	c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:0")))
	if err != nil {
		return 0, err
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).AddrPort().Port(), nil
}

// writeKey makes a random shared key file in dir, as an operator would
// for sendstats and recvstats.
func writeKey(dir string) (string, error) {
	var k [32]byte
	rand.Read(k[:])
	path := filepath.Join(dir, "key")
	return path, os.WriteFile(path, []byte(base64.StdEncoding.EncodeToString(k[:])+"\n"), 0o600)
}

// stopPerf ends perf record (SIGINT, as at a terminal).
func stopPerf(perf *proc) error {
	perf.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-perf.waited:
		// perf ends by raising SIGINT again once the data is written.
		var ee *exec.ExitError
		if errors.As(perf.err, &ee) {
			if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGINT {
				return nil
			}
		}
		if perf.err != nil {
			return fmt.Errorf("perf record: %v\n%s", perf.err, perf.stderr.String())
		}
		return nil
	case <-time.After(30 * time.Second):
		perf.kill()
		return fmt.Errorf("perf record did not stop on SIGINT")
	}
}

// perfReport writes perf's report beside its data, once the run is
// over: where the receiver's time went, by function.
func perfReport(data string) error {
	out, err := exec.Command("perf", "report", "-i", data, "--stdio", "--no-children",
		"--sort", "dso,symbol", "--percent-limit", "0.5").CombinedOutput()
	if err != nil {
		return fmt.Errorf("perf report %s: %v\n%s", data, err, out)
	}
	return os.WriteFile(strings.TrimSuffix(data, ".data")+".txt", out, 0o644)
}
