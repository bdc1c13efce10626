package netlab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"
)

// Host is one machine of the lab.
type Host struct {
	Name  string
	Addr  netip.Addr // IPv4 on eth0
	Addr6 netip.Addr // IPv6 ULA on eth0
	Index int        // 1 for the first host added; the last byte of Addr

	lab    *Lab
	veth   string // the bridge-side end, in the hub
	holder *holder
}

// Iface is the name of every host's interface to the lab's network.
const Iface = "eth0"

// HolderPid is the pid of the process holding the host's namespaces
// (for nsenter -t PID -n -m -u, or /proc/PID/ns/net).
func (h *Host) HolderPid() int { return h.holder.pid }

// Command returns a command that runs inside the host's network, mount and
// UTS namespaces (through nsenter). cmd.Dir, if set, is honoured. The process
// gets SIGKILL if the test binary dies; the lab's cleanup kills it anyway.
func (h *Host) Command(name string, args ...string) *exec.Cmd {
	return h.command(nil, name, args...)
}

func (h *Host) command(ctx context.Context, name string, args ...string) *exec.Cmd {
	// --wd=. opens the directory exec chdir'ed to before entering the mount
	// namespace (nsenter would otherwise land in /).
	nsargs := append([]string{"-t", strconv.Itoa(h.holder.pid), "-n", "-m", "-u", "--wd=.", "--", name}, args...)
	var cmd *exec.Cmd
	if ctx != nil {
		cmd = exec.CommandContext(ctx, nsenterPath(), nsargs...)
	} else {
		cmd = exec.Command(nsenterPath(), nsargs...)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return cmd
}

func nsenterPath() string {
	if p, err := exec.LookPath("nsenter"); err == nil {
		return p
	}
	return "/usr/bin/nsenter"
}

// Run runs a command on the host to completion and returns its combined
// output. The error names the host and command and includes the output.
// A command that leaves a daemon behind holding its output (rpc.statd without
// -F, sm-notify without -d) returns half a second after it exits.
func (h *Host) Run(ctx context.Context, name string, args ...string) (string, error) {
	cmd := h.command(ctx, name, args...)
	cmd.WaitDelay = 500 * time.Millisecond
	out, err := cmd.CombinedOutput()
	if errors.Is(err, exec.ErrWaitDelay) {
		err = nil
	}
	if err != nil {
		return string(out), fmt.Errorf("host %s: %s: %w\n%s", h.Name, strings.Join(append([]string{name}, args...), " "), err, out)
	}
	return string(out), nil
}

// Do runs fn on a locked OS thread switched into the host's network
// namespace, so sockets fn creates (net.Listen, net.Dial, ListenMulticastUDP,
// net.InterfaceByName's netlink socket…) belong to the host; they stay there
// after Do returns. Only fn's own goroutine is in the namespace: goroutines
// it starts are not, but they may use sockets fn made. fn must not call
// t.Fatal (it runs on another goroutine): return an error instead. A panic
// in fn is re-raised in the caller.
func (h *Host) Do(fn func() error) error {
	return doIn(h.holder, "host "+h.Name, fn)
}

// doIn runs fn in hd's network namespace; errors of its own name who.
func doIn(hd *holder, who string, fn func() error) error {
	type result struct {
		err   error
		panic any
	}
	res := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			res <- result{err: fmt.Errorf("%s: %w", who, err)}
			return
		}
		defer unix.Close(orig)
		if err := unix.Setns(hd.netFD, unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			res <- result{err: fmt.Errorf("%s: setns: %w", who, err)}
			return
		}
		defer func() {
			// Give the thread back to the scheduler only once it is in its
			// old namespace again; otherwise it dies with this goroutine.
			if unix.Setns(orig, unix.CLONE_NEWNET) == nil {
				runtime.UnlockOSThread()
			}
		}()
		defer func() {
			if p := recover(); p != nil {
				res <- result{panic: p}
			}
		}()
		res <- result{err: fn()}
	}()
	r := <-res
	if r.panic != nil {
		panic(r.panic)
	}
	return r.err
}

// HTTPClient is an HTTP client that dials from the host's network
// namespace, for a daemon's HTTP endpoint on the host's loopback (its
// /metrics). Connections are not kept alive between requests.
func (h *Host) HTTPClient() *http.Client {
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		err := h.Do(func() error {
			var err error
			c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: dial, DisableKeepAlives: true}}
}

// LinkDown unplugs the host: the bridge-side end of its veth goes down, so
// eth0 loses carrier and nothing reaches the host or leaves it, while its
// addresses and routes stay as they are (as with a pulled cable).
func (h *Host) LinkDown() error { return h.setLink("down") }

// LinkUp plugs the host back in. It returns once both ends of the link are
// running again. Peers whose ARP/ND entries for the host (or the host's for
// them) failed while it was down may need up to a second more: a ping is
// answered within about 0.7 s of LinkUp.
func (h *Host) LinkUp() error {
	if err := h.setLink("up"); err != nil {
		return err
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		hostUp, err := running(h.holder, Iface)
		if err != nil {
			return fmt.Errorf("host %s: %w", h.Name, err)
		}
		hubUp, err := running(h.lab.hub, h.veth)
		if err != nil {
			return fmt.Errorf("host %s: hub: %w", h.Name, err)
		}
		if hostUp && hubUp {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("host %s: link not running 5s after LinkUp (host side %v, hub side %v)", h.Name, hostUp, hubUp)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (h *Host) setLink(state string) error {
	// Only the hub's end changes: the host keeps its addresses and routes
	// (taking eth0 itself down would flush its IPv6 address and routes).
	out, err := exec.Command(nsenterPath(), "-t", strconv.Itoa(h.lab.hub.pid), "-n", "ip", "link", "set", h.veth, state).CombinedOutput()
	if err != nil {
		return fmt.Errorf("host %s: link %s: %w: %s", h.Name, state, err, out)
	}
	return nil
}

// running reports whether interface name in hd's namespace is up with carrier.
func running(hd *holder, name string) (bool, error) {
	var up bool
	err := doIn(hd, "netlab", func() error {
		ifi, err := net.InterfaceByName(name)
		if err != nil {
			return err
		}
		up = ifi.Flags&net.FlagRunning != 0
		return nil
	})
	return up, err
}

// Ping sends one ICMP echo request from the host to dst (IPv4 or IPv6) and
// waits up to timeout for the reply.
func (h *Host) Ping(dst netip.Addr, timeout time.Duration) error {
	return h.Do(func() error { return ping(dst, timeout) })
}

func ping(dst netip.Addr, timeout time.Duration) error {
	network, listen, proto := "ip4:icmp", "0.0.0.0", 1
	var req icmp.Type = ipv4.ICMPTypeEcho
	var rep icmp.Type = ipv4.ICMPTypeEchoReply
	if dst.Is6() && !dst.Is4In6() {
		network, listen, proto = "ip6:ipv6-icmp", "::", 58
		req, rep = ipv6.ICMPTypeEchoRequest, ipv6.ICMPTypeEchoReply
	}
	c, err := icmp.ListenPacket(network, listen)
	if err != nil {
		return err
	}
	defer c.Close()
	id := (os.Getpid() ^ int(time.Now().UnixNano())) & 0xffff
	// The kernel fills in the ICMPv6 checksum on raw sockets.
	msg, err := (&icmp.Message{Type: req, Body: &icmp.Echo{ID: id, Seq: 1, Data: []byte("netlab")}}).Marshal(nil)
	if err != nil {
		return err
	}
	if _, err := c.WriteTo(msg, &net.IPAddr{IP: dst.AsSlice()}); err != nil {
		return fmt.Errorf("ping %s: %w", dst, err)
	}
	c.SetReadDeadline(time.Now().Add(timeout))
	buf := make([]byte, 1500)
	for {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			return fmt.Errorf("ping %s: no reply: %w", dst, err)
		}
		m, err := icmp.ParseMessage(proto, buf[:n])
		if err != nil || m.Type != rep {
			continue
		}
		if e, ok := m.Body.(*icmp.Echo); ok && e.ID == id && from.(*net.IPAddr).IP.Equal(dst.AsSlice()) {
			return nil
		}
	}
}
