// Package etcdlab runs real etcd members (Debian's etcd-server) on loopback
// for tests: a cluster of one or more members, each with its own data
// directory, that a test can kill -9, restart and stop.
package etcdlab

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hoststat/hoststat/internal/netlab"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Member is one etcd process.
type Member struct {
	Name      string
	ClientURL string
	PeerURL   string
	Dir       string

	bin     string
	cluster string
	t       testing.TB
	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{}
	started bool // started once: restarts join the existing cluster
}

// Cluster is a set of members started together.
type Cluster struct {
	Members []*Member
}

// Start starts an n-member cluster on loopback and waits until it answers.
// The members are killed when the test ends. It fails (CI=true) or skips
// when etcd is not installed.
func Start(t testing.TB, n int) *Cluster {
	t.Helper()
	bin := netlab.RequireCommand(t, "etcd")
	root := t.TempDir()
	c := &Cluster{}
	var initial []string
	for i := range n {
		m := &Member{Name: "m" + strconv.Itoa(i), bin: bin, t: t,
			ClientURL: "http://" + freeAddr(t), PeerURL: "http://" + freeAddr(t),
			Dir: filepath.Join(root, "m"+strconv.Itoa(i))}
		initial = append(initial, m.Name+"="+m.PeerURL)
		c.Members = append(c.Members, m)
	}
	for _, m := range c.Members {
		m.cluster = strings.Join(initial, ",")
		m.Start()
	}
	t.Cleanup(func() {
		for _, m := range c.Members {
			m.Kill()
		}
	})
	for _, m := range c.Members {
		m.WaitHealthy(60 * time.Second)
	}
	return c
}

// Endpoints are the client URLs' host:port, as --store takes them.
func (c *Cluster) Endpoints() []string {
	var out []string
	for _, m := range c.Members {
		out = append(out, m.Endpoint())
	}
	return out
}

// Endpoint is the member's client host:port.
func (m *Member) Endpoint() string { return strings.TrimPrefix(m.ClientURL, "http://") }

// freeAddr is a loopback address with a port nothing listens on now.
func freeAddr(t testing.TB) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// Start starts (or restarts, after Kill) the member's process.
func (m *Member) Start() {
	m.t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cmd != nil {
		m.t.Fatalf("etcdlab: %s already running", m.Name)
	}
	state := "new"
	if m.started {
		state = "existing"
	}
	cmd := exec.Command(m.bin,
		"--name", m.Name, "--data-dir", m.Dir,
		"--listen-client-urls", m.ClientURL, "--advertise-client-urls", m.ClientURL,
		"--listen-peer-urls", m.PeerURL, "--initial-advertise-peer-urls", m.PeerURL,
		"--initial-cluster", m.cluster, "--initial-cluster-state", state,
		"--initial-cluster-token", "etcdlab",
		// Quick elections: the tests kill members and measure failover.
		"--heartbeat-interval", "100", "--election-timeout", "1000",
		"--logger", "zap", "--log-level", "warn")
	out, err := os.Create(filepath.Join(filepath.Dir(m.Dir), m.Name+".log"))
	if err != nil {
		m.t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		out.Close()
		m.t.Fatalf("etcdlab: starting %s: %v", m.Name, err)
	}
	m.cmd, m.started = cmd, true
	m.exited = make(chan struct{})
	go func(exited chan struct{}) { cmd.Wait(); out.Close(); close(exited) }(m.exited)
}

// Kill sends SIGKILL and waits for the process to exit: nothing is flushed.
func (m *Member) Kill() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cmd == nil {
		return
	}
	m.cmd.Process.Signal(syscall.SIGKILL)
	<-m.exited
	m.cmd = nil
}

// Stop pauses the process (SIGSTOP): it holds its sockets but answers
// nothing, as a member cut off by a partition. Cont resumes it.
func (m *Member) Stop() { m.signal(syscall.SIGSTOP) }

// Cont resumes a stopped member.
func (m *Member) Cont() { m.signal(syscall.SIGCONT) }

func (m *Member) signal(s syscall.Signal) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cmd != nil {
		m.cmd.Process.Signal(s)
	}
}

// WaitHealthy waits until the member's /health says true.
func (m *Member) WaitHealthy(timeout time.Duration) {
	m.t.Helper()
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		resp, err := http.Get(m.ClientURL + "/health")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if strings.Contains(string(b), `"health":"true"`) {
				return
			}
			err = fmt.Errorf("health: %s", b)
		}
		last = err
		time.Sleep(100 * time.Millisecond)
	}
	m.t.Fatalf("etcdlab: %s not healthy after %v: %v (log %s)", m.Name, timeout, last, filepath.Join(filepath.Dir(m.Dir), m.Name+".log"))
}

// Metric reads one counter or gauge without labels from the member's
// /metrics (etcd's own Prometheus metrics).
func (m *Member) Metric(name string) (float64, error) {
	resp, err := http.Get(m.ClientURL + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 2 && f[0] == name {
			return strconv.ParseFloat(f[1], 64)
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("etcdlab: metric %s not found at %s/metrics", name, m.ClientURL)
}

// Client is an etcd client to endpoints, closed when the test ends.
func Client(t testing.TB, endpoints ...string) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}
