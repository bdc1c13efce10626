// Package etcdlab runs real etcd members (Debian's etcd-server) for tests:
// a cluster of one or more members, each with its own data directory, that
// a test can kill -9, restart and stop. Start puts them on loopback;
// StartInLab puts each on its own netlab host, so a member can also be cut
// off the network (Partition) while it runs.
package etcdlab

import (
	"bufio"
	"context"
	"errors"
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
	"google.golang.org/grpc"
)

// Member is one etcd process.
type Member struct {
	Name      string
	ClientURL string
	PeerURL   string
	Dir       string
	Host      *netlab.Host // the lab host it runs on; nil on loopback

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
	return start(t, n, "m", func(m *Member) {
		m.ClientURL, m.PeerURL = "http://"+freeAddr(t), "http://"+freeAddr(t)
	})
}

// StartInLab starts an n-member cluster whose member i runs on its own new
// host "etcdI" of lab (client port 2379, peer port 2380 on the host's
// address), and waits until it answers. Clients reach it from a lab host
// (ClientIn); the test's own namespace has no route to the lab.
func StartInLab(t testing.TB, lab *netlab.Lab, n int) *Cluster {
	t.Helper()
	return start(t, n, "etcd", func(m *Member) {
		m.Host = lab.AddHost(m.Name)
		m.ClientURL = "http://" + net.JoinHostPort(m.Host.Addr.String(), "2379")
		m.PeerURL = "http://" + net.JoinHostPort(m.Host.Addr.String(), "2380")
	})
}

// start makes n members named name0…, place gives each its URLs (and
// host), then starts them all as one cluster.
func start(t testing.TB, n int, name string, place func(*Member)) *Cluster {
	t.Helper()
	bin := netlab.RequireCommand(t, "etcd")
	root := t.TempDir()
	c := &Cluster{}
	var initial []string
	for i := range n {
		m := &Member{Name: name + strconv.Itoa(i), bin: bin, t: t}
		m.Dir = filepath.Join(root, m.Name)
		place(m)
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
	args := []string{
		"--name", m.Name, "--data-dir", m.Dir,
		"--listen-client-urls", m.ClientURL, "--advertise-client-urls", m.ClientURL,
		"--listen-peer-urls", m.PeerURL, "--initial-advertise-peer-urls", m.PeerURL,
		"--initial-cluster", m.cluster, "--initial-cluster-state", state,
		"--initial-cluster-token", "etcdlab",
		// Quick elections: the tests kill members and measure failover.
		"--heartbeat-interval", "100", "--election-timeout", "1000",
		"--logger", "zap", "--log-level", "warn"}
	cmd := exec.Command(m.bin, args...)
	if m.Host != nil {
		cmd = m.Host.Command(m.bin, args...) // nsenter execs etcd: the pid is etcd's
	}
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

// Partition unplugs the member's host from the lab's network: its peers
// and every client on another host lose it, while it runs on (a minority
// of one, serving nothing that needs a quorum). Heal plugs it back in.
// Only for members started by StartInLab.
func (m *Member) Partition() {
	m.t.Helper()
	if err := m.labHost().LinkDown(); err != nil {
		m.t.Fatalf("etcdlab: partition %s: %v", m.Name, err)
	}
}

// Heal ends a Partition.
func (m *Member) Heal() {
	m.t.Helper()
	if err := m.labHost().LinkUp(); err != nil {
		m.t.Fatalf("etcdlab: heal %s: %v", m.Name, err)
	}
}

func (m *Member) labHost() *netlab.Host {
	if m.Host == nil {
		m.t.Fatalf("etcdlab: %s runs on loopback: only members started by StartInLab can be partitioned", m.Name)
	}
	return m.Host
}

// httpClient reaches the member's client URL: from its lab host, or
// directly on loopback.
func (m *Member) httpClient() *http.Client {
	if m.Host != nil {
		return m.Host.HTTPClient()
	}
	return http.DefaultClient
}

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
		if last = m.health(); last == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	m.t.Fatalf("etcdlab: %s not healthy after %v: %v (log %s)", m.Name, timeout, last, filepath.Join(filepath.Dir(m.Dir), m.Name+".log"))
}

var errHealthy = errors.New("etcdlab: member healthy")

// health is nil when the member's /health says true.
func (m *Member) health() error {
	c := m.httpClient()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, m.ClientURL+"/health", nil)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(b), `"health":"true"`) {
		return fmt.Errorf("health: %s", b)
	}
	return nil
}

// Metric reads one counter or gauge without labels from the member's
// /metrics (etcd's own Prometheus metrics).
func (m *Member) Metric(name string) (float64, error) {
	resp, err := m.httpClient().Get(m.ClientURL + "/metrics")
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
	return newClient(t, clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second})
}

// ClientIn is an etcd client that connects from lab host h, as a statd
// running there would; closed when the test ends.
func ClientIn(t testing.TB, h *netlab.Host, endpoints ...string) *clientv3.Client {
	t.Helper()
	dial := func(ctx context.Context, addr string) (net.Conn, error) {
		var c net.Conn
		err := h.Do(func() error {
			var err error
			c, err = (&net.Dialer{}).DialContext(ctx, "tcp", addr)
			return err
		})
		return c, err
	}
	// Keepalives as rpc.statd's client has them (etcdstore.Config.Client):
	// across a lab partition a connection dies without a reset.
	return newClient(t, clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second,
		DialKeepAliveTime: 5 * time.Second, DialKeepAliveTimeout: 5 * time.Second,
		DialOptions: []grpc.DialOption{grpc.WithContextDialer(dial)}})
}

func newClient(t testing.TB, cfg clientv3.Config) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}
