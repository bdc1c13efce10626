package netlab

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Lab is one isolated network segment and the hosts plugged into it.
type Lab struct {
	// ID names the lab in logs and in its temporary files.
	ID string

	t         testing.TB
	dir       string
	hostsFile string
	net4      netip.Prefix
	net6      netip.Prefix
	hub       *holder

	mu    sync.Mutex
	hosts []*Host
	names []string // AddName's lines of the hosts file
}

// Bridge is the name of the lab's bridge inside the hub namespace.
const Bridge = "br0"

// holder is a process that keeps a set of namespaces alive. Its stdin is a
// pipe from us: a line "done" ends it quietly; EOF (we died without cleanup)
// makes it kill everything left in its network namespace first.
type holder struct {
	cmd    *exec.Cmd
	stdin  *os.File
	stderr bytes.Buffer
	pid    int
	netns  string // readlink of /proc/PID/ns/net, e.g. "net:[4026532179]"
	mntns  string
	netFD  int // open /proc/PID/ns/net, for setns in Do
	exited chan struct{}
}

// holderTail keeps the namespaces alive until stdin says "done" or closes.
// On EOF it sweeps the namespace (one fork per process, but only on the
// crash path; the normal cleanup sweeps from Go first).
const holderTail = `
set +e
echo ready
read -r line || line=
if [ "$line" != done ]; then
	me=$(readlink /proc/$$/ns/net)
	for round in 1 2 3; do
		for d in /proc/[0-9]*; do
			p=${d#/proc/}
			[ "$p" = $$ ] && continue
			[ "$(readlink "$d/ns/net" 2>/dev/null)" = "$me" ] && kill -9 "$p" 2>/dev/null
		done
	done
fi
exit 0
`

// hubScript makes the bridge. IPv6 is off in the hub so the bridge and the
// hub-side veth ends send no DAD/RS/MLD noise onto the segment; multicast
// snooping is off so every multicast frame is flooded to every host, as on a
// dumb switch (with snooping on, groups without an IGMP querier get lost).
const hubScript = `set -e
echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6
echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6
ip link set lo up
ip link add ` + Bridge + ` type bridge stp_state 0 mcast_snooping 0
ip link set ` + Bridge + ` up
` + holderTail

// hostScript runs in the new namespaces of a host.
// $1 name, $2 hosts file, $3 ip batch file for the host side, $4 hub pid,
// $5 hub-side veth name.
// DAD is off so the IPv6 addresses are usable at once (a tentative address
// cannot be bound). unshare made every mount private, so none of these
// mounts leaks out.
const hostScript = `set -e
echo 0 > /proc/sys/net/ipv6/conf/all/accept_dad
echo 0 > /proc/sys/net/ipv6/conf/default/accept_dad
hostname "$1"
mount -t sysfs -o nosuid,nodev,noexec sysfs /sys
mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run
mkdir -p /var/lib/nfs
mount -t tmpfs -o mode=0755 tmpfs /var/lib/nfs
mkdir /var/lib/nfs/sm /var/lib/nfs/sm.bak
chown statd /var/lib/nfs/sm /var/lib/nfs/sm.bak 2>/dev/null || true
mount --bind "$2" /etc/hosts
ip -batch "$3"
nsenter -t "$4" -n ip link set "$5" master ` + Bridge + ` up
` + holderTail

var labSeq struct {
	mu sync.Mutex
	n  int
}

// New makes an empty lab; it skips the test unless root (fails when CI=true).
func New(t testing.TB) *Lab {
	t.Helper()
	RequireRoot(t)
	for _, c := range []string{"ip", "nsenter", "unshare", "mount"} {
		RequireCommand(t, c)
	}
	labSeq.mu.Lock()
	labSeq.n++
	seq := labSeq.n
	labSeq.mu.Unlock()

	l := &Lab{
		ID:  fmt.Sprintf("nl%d-%d", os.Getpid(), seq),
		t:   t,
		dir: t.TempDir(),
	}
	// The networks only have to be unique within the lab, since nothing
	// leaves it; random ones make packet dumps of parallel labs tell apart.
	var ula [6]byte
	for i := range ula {
		ula[i] = byte(rand.IntN(256))
	}
	l.net4 = netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(64 + rand.IntN(190)), byte(rand.IntN(256)), 0}), 24)
	l.net6 = netip.PrefixFrom(netip.AddrFrom16([16]byte{0xfd, ula[0], ula[1], ula[2], ula[3], ula[4], 0, ula[5]}), 64)
	l.hostsFile = filepath.Join(l.dir, "hosts")
	if err := l.writeHosts(); err != nil {
		t.Fatalf("netlab: %v", err)
	}

	start := time.Now()
	hub, err := startHolder(exec.Command("unshare", "--net", "--", "sh", "-c", hubScript, "hub"), false)
	if err != nil {
		t.Fatalf("netlab %s: hub namespace: %v", l.ID, err)
	}
	l.hub = hub
	t.Cleanup(l.close)
	slog.Debug("netlab: lab up", "lab", l.ID, "net4", l.net4, "net6", l.net6, "hub", hub.pid, "took", time.Since(start))
	return l
}

// Net4 and Net6 are the lab's IPv4 and IPv6 networks.
func (l *Lab) Net4() netip.Prefix { return l.net4 }

// Net6 is the lab's IPv6 ULA network.
func (l *Lab) Net6() netip.Prefix { return l.net6 }

// Hosts returns the hosts added so far, in order.
func (l *Lab) Hosts() []*Host {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]*Host(nil), l.hosts...)
}

// AddHost adds a host named name (a valid hostname, unique in the lab). Host
// number n (from 1) gets the addresses .n in Net4 and ::n in Net6. Every
// host's /etc/hosts names all hosts, also those added later. It fails the
// test on error, so call it from the test's goroutine.
func (l *Lab) AddHost(name string) *Host {
	l.t.Helper()
	if !validHostname(name) {
		l.t.Fatalf("netlab: bad host name %q", name)
	}
	l.mu.Lock()
	for _, h := range l.hosts {
		if h.Name == name {
			l.mu.Unlock()
			l.t.Fatalf("netlab: host %q added twice", name)
		}
	}
	n := len(l.hosts) + 1
	if n > 254 {
		l.mu.Unlock()
		l.t.Fatalf("netlab: more than 254 hosts")
	}
	a4 := l.net4.Addr().As4()
	a4[3] = byte(n)
	a6 := l.net6.Addr().As16()
	a6[15] = byte(n)
	h := &Host{Name: name, Addr: netip.AddrFrom4(a4), Addr6: netip.AddrFrom16(a6), Index: n, lab: l, veth: "v" + strconv.Itoa(n) + "-" + truncate(name, 10)}
	l.hosts = append(l.hosts, h)
	err := l.writeHosts()
	l.mu.Unlock()
	if err != nil {
		l.t.Fatalf("netlab: %v", err)
	}

	batch := filepath.Join(l.dir, "ip-"+name)
	cmds := fmt.Sprintf(`link set lo up
link add eth0 type veth peer name %s netns %d
addr add %s dev eth0
addr add %s dev eth0 nodad
link set eth0 up
route add 224.0.0.0/4 dev eth0
`, h.veth, l.hub.pid, netip.PrefixFrom(h.Addr, 24), netip.PrefixFrom(h.Addr6, 64))
	if err := os.WriteFile(batch, []byte(cmds), 0o644); err != nil {
		l.t.Fatalf("netlab: %v", err)
	}
	start := time.Now()
	hd, err := startHolder(exec.Command("unshare", "--net", "--mount", "--uts", "--propagation", "private", "--",
		"sh", "-c", hostScript, "host", name, l.hostsFile, batch, strconv.Itoa(l.hub.pid), h.veth), true)
	if err != nil {
		l.t.Fatalf("netlab %s: host %s: %v", l.ID, name, err)
	}
	h.holder = hd
	slog.Debug("netlab: host up", "lab", l.ID, "host", name, "addr", h.Addr, "addr6", h.Addr6, "holder", hd.pid, "took", time.Since(start))
	l.t.Logf("netlab %s: host %s %s %s (enter: nsenter -t %d -n -m -u)", l.ID, name, h.Addr, h.Addr6, hd.pid)
	return h
}

// AddName adds name for addr to every host's /etc/hosts: a service name on
// an address no host has for good (a floating address a test moves).
func (l *Lab) AddName(name string, addr netip.Addr) {
	l.t.Helper()
	if !validHostname(name) {
		l.t.Fatalf("netlab: bad host name %q", name)
	}
	l.mu.Lock()
	l.names = append(l.names, addr.String()+"\t"+name+"\n")
	err := l.writeHosts()
	l.mu.Unlock()
	if err != nil {
		l.t.Fatalf("netlab: %v", err)
	}
}

// writeHosts rewrites the lab's hosts file in place: it is bind-mounted as
// /etc/hosts into every host, and a bind mount follows the inode, not the name.
func (l *Lab) writeHosts() error {
	var b strings.Builder
	b.WriteString("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n")
	for _, h := range l.hosts {
		fmt.Fprintf(&b, "%s\t%s\n", h.Addr, h.Name)
	}
	for _, h := range l.hosts {
		fmt.Fprintf(&b, "%s\t%s\n", h.Addr6, h.Name)
	}
	for _, n := range l.names {
		b.WriteString(n)
	}
	f, err := os.OpenFile(l.hostsFile, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	_, err = f.WriteString(b.String())
	return errors.Join(err, f.Close())
}

// close tears the lab down: every process in a host's namespaces, then the
// holders (the namespaces die with their last process), then the hub.
func (l *Lab) close() {
	l.mu.Lock()
	hosts := l.hosts
	l.mu.Unlock()
	for _, h := range hosts {
		if h.holder != nil {
			killNamespace(h.holder)
		}
	}
	for _, h := range hosts {
		if h.holder != nil {
			if err := h.holder.stop(); err != nil {
				l.t.Errorf("netlab %s: host %s: %v", l.ID, h.Name, err)
			}
		}
	}
	killNamespace(l.hub)
	if err := l.hub.stop(); err != nil {
		l.t.Errorf("netlab %s: hub: %v", l.ID, err)
	}
}

// startHolder starts cmd and waits for its "ready" line.
// ownMnt says whether cmd made its own mount namespace: only then may
// killNamespace match processes by mount namespace.
func startHolder(cmd *exec.Cmd, ownMnt bool) (*holder, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	hd := &holder{cmd: cmd, stdin: w, netFD: -1, exited: make(chan struct{})}
	cmd.Stdin = r
	cmd.Stderr = &hd.stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		r.Close()
		w.Close()
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		r.Close()
		w.Close()
		return nil, err
	}
	r.Close()
	hd.pid = cmd.Process.Pid

	ready := make(chan error, 1)
	go func() {
		line, err := bufio.NewReader(out).ReadString('\n')
		if err == nil && line != "ready\n" {
			err = fmt.Errorf("unexpected %q", line)
		}
		ready <- err
		io.Copy(io.Discard, out)
	}()
	fail := func(err error) (*holder, error) {
		w.Close()
		cmd.Process.Kill()
		cmd.Wait()
		return nil, fmt.Errorf("%v: %s", err, strings.TrimSpace(hd.stderr.String()))
	}
	select {
	case err := <-ready:
		if err != nil {
			return fail(err)
		}
	case <-time.After(20 * time.Second):
		return fail(errors.New("no ready after 20s"))
	}

	nsPath := fmt.Sprintf("/proc/%d/ns/", hd.pid)
	if hd.netns, err = os.Readlink(nsPath + "net"); err != nil {
		return fail(err)
	}
	if ownMnt {
		if hd.mntns, err = os.Readlink(nsPath + "mnt"); err != nil {
			return fail(err)
		}
	}
	// Never sweep our own namespaces, whatever went wrong.
	if self, _ := os.Readlink("/proc/self/ns/net"); hd.netns == self {
		return fail(errors.New("holder is in our own network namespace"))
	}
	if self, _ := os.Readlink("/proc/self/ns/mnt"); hd.mntns == self {
		return fail(errors.New("holder is in our own mount namespace"))
	}
	if hd.netFD, err = unix.Open(nsPath+"net", unix.O_RDONLY|unix.O_CLOEXEC, 0); err != nil {
		return fail(err)
	}
	go func() {
		cmd.Wait()
		close(hd.exited)
	}()
	return hd, nil
}

// stop ends the holder with "done" and waits for it, killing it if needed.
func (hd *holder) stop() error {
	if hd.netFD >= 0 {
		unix.Close(hd.netFD)
		hd.netFD = -1
	}
	io.WriteString(hd.stdin, "done\n")
	hd.stdin.Close()
	select {
	case <-hd.exited:
		return nil
	case <-time.After(5 * time.Second):
		hd.cmd.Process.Kill()
		<-hd.exited
		return fmt.Errorf("holder %d did not exit on request; killed", hd.pid)
	}
}

// killNamespace SIGKILLs every process except the holder that lives in the
// holder's network or mount namespace, until none is left. Scanning /proc
// also catches daemons that forked away from the process we started.
func killNamespace(hd *holder) {
	for round := 0; round < 50; round++ {
		pids := namespacePids(hd)
		if len(pids) == 0 {
			return
		}
		for _, pid := range pids {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(time.Duration(round+1) * time.Millisecond)
	}
	slog.Warn("netlab: processes survive SIGKILL", "pids", namespacePids(hd))
}

func namespacePids(hd *holder) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	self := os.Getpid()
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		// Never the test process itself: a goroutine of it may have its
		// thread in the lab (Host.Do), and /proc/PID/ns follows the
		// thread group leader's thread.
		if err != nil || pid == hd.pid || pid == self {
			continue
		}
		// Zombies have no namespaces left and are not counted.
		if n, err := os.Readlink("/proc/" + e.Name() + "/ns/net"); err == nil && n == hd.netns {
			pids = append(pids, pid)
			continue
		}
		if hd.mntns == "" {
			continue
		}
		if m, err := os.Readlink("/proc/" + e.Name() + "/ns/mnt"); err == nil && m == hd.mntns {
			pids = append(pids, pid)
		}
	}
	return pids
}

func validHostname(s string) bool {
	if s == "" || len(s) > 63 || s[0] == '-' {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
