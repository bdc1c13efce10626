package netlab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func TestSetupAndPing(t *testing.T) {
	t.Parallel()
	start := time.Now()
	lab := New(t)
	a, b := lab.AddHost("alpha"), lab.AddHost("beta")
	took := time.Since(start)
	t.Logf("lab with 2 hosts set up in %v", took)
	if took > 2*time.Second {
		t.Errorf("setup took %v; want well under a second", took)
	}
	if a.Addr != lab.Net4().Addr().Next() || !lab.Net4().Contains(b.Addr) || !lab.Net6().Contains(b.Addr6) || b.Index != 2 {
		t.Errorf("addresses: a %v %v, b %v %v, nets %v %v", a.Addr, a.Addr6, b.Addr, b.Addr6, lab.Net4(), lab.Net6())
	}
	for _, c := range []struct {
		from *Host
		to   netip.Addr
	}{{a, b.Addr}, {a, b.Addr6}, {b, a.Addr}, {b, a.Addr6}, {a, a.Addr}} {
		if err := c.from.Ping(c.to, 2*time.Second); err != nil {
			t.Errorf("%s ping %v: %v", c.from.Name, c.to, err)
		}
	}
}

// Each host sees its own hostname, interfaces in /sys, /etc/hosts and /run.
func TestHostEnvironment(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t, 30*time.Second)
	lab := New(t)
	a, b := lab.AddHost("a"), lab.AddHost("b")

	out, err := a.Run(ctx, "sh", "-c", "hostname; ls /sys/class/net; getent ahostsv4 b | head -1; ip route show 224.0.0.0/4")
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(out)
	if len(f) < 5 || f[0] != "a" || f[1] != "eth0" || f[2] != "lo" || f[3] != b.Addr.String() || !strings.Contains(out, "224.0.0.0/4 dev eth0") {
		t.Errorf("host a sees:\n%s", out)
	}

	// /run is private per host and not the machine's.
	if _, err := a.Run(ctx, "sh", "-c", "echo a > /run/netlab-mark"); err != nil {
		t.Fatal(err)
	}
	if out, err := b.Run(ctx, "ls", "/run"); err != nil || strings.Contains(out, "netlab-mark") {
		t.Errorf("host b /run: %q %v", out, err)
	}
	if _, err := os.Stat("/run/netlab-mark"); err == nil {
		t.Errorf("host a's /run leaked into the machine's /run")
	}
	if out, err := a.Run(ctx, "sh", "-c", "stat -f -c %T /run /var/lib/nfs; stat -c %U /var/lib/nfs/sm"); err != nil || !strings.HasPrefix(out, "tmpfs\ntmpfs\n") {
		t.Errorf("host a mounts: %q %v", out, err)
	}

	// Command honours Dir and the environment.
	dir := t.TempDir()
	cmd := a.Command("sh", "-c", "pwd; echo $NETLAB_X")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "NETLAB_X=x1")
	if out, err := cmd.CombinedOutput(); err != nil || string(out) != dir+"\nx1\n" {
		t.Errorf("Command with Dir: %q %v", out, err)
	}

	// Run reports failures with the output.
	_, err = a.Run(ctx, "sh", "-c", "echo oops; exit 3")
	if err == nil || !strings.Contains(err.Error(), "oops") || !strings.Contains(err.Error(), "host a") {
		t.Errorf("Run error = %v", err)
	}
}

// A datagram sent by host b to a multicast group reaches a receiver that
// joined the group on host a's eth0: it crosses the bridge for real.
func TestMulticast(t *testing.T) {
	t.Parallel()
	lab := New(t)
	a, b, c := lab.AddHost("a"), lab.AddHost("b"), lab.AddHost("c")
	for _, tc := range []struct{ network, group string }{{"udp4", "239.12.34.56"}, {"udp6", "ff15::3040"}} {
		t.Run(tc.network, func(t *testing.T) {
			group := netip.MustParseAddr(tc.group)
			var conns []*net.UDPConn
			for _, h := range []*Host{a, c} {
				var conn *net.UDPConn
				err := h.Do(func() error {
					ifi, err := net.InterfaceByName(Iface)
					if err != nil {
						return err
					}
					conn, err = net.ListenMulticastUDP(tc.network, ifi, &net.UDPAddr{IP: group.AsSlice(), Port: 3040})
					return err
				})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { conn.Close() })
				conns = append(conns, conn)
			}
			err := b.Do(func() error {
				var dst *net.UDPAddr
				if group.Is4() {
					dst = &net.UDPAddr{IP: group.AsSlice(), Port: 3040}
				} else {
					dst = &net.UDPAddr{IP: group.AsSlice(), Port: 3040, Zone: Iface}
				}
				s, err := net.DialUDP(tc.network, nil, dst)
				if err != nil {
					return err
				}
				defer s.Close()
				_, err = s.Write([]byte("hello from b"))
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			for i, conn := range conns {
				conn.SetReadDeadline(time.Now().Add(3 * time.Second))
				buf := make([]byte, 100)
				n, from, err := conn.ReadFromUDP(buf)
				if err != nil {
					t.Fatalf("receiver %d: %v", i, err)
				}
				want := b.Addr
				if !group.Is4() {
					want = b.Addr6
				}
				if string(buf[:n]) != "hello from b" || from.AddrPort().Addr().Unmap() != want {
					t.Errorf("receiver %d got %q from %v", i, buf[:n], from)
				}
			}
		})
	}
}

// Debian's rpcbind runs on two hosts at once, each host's rpcinfo talks to
// its own, and rpcinfo reaches the other host's across the lab. rpc.statd
// registers with its host's rpcbind, and sm-notify -P notifies it.
func TestRPCBindAndStatd(t *testing.T) {
	t.Parallel()
	rpcbind := RequireCommand(t, "rpcbind")
	statd := RequireCommand(t, "rpc.statd")
	smnotify := RequireCommand(t, "sm-notify")
	RequireCommand(t, "rpcinfo")
	ctx := ctxT(t, 60*time.Second)
	lab := New(t)
	a, b := lab.AddHost("ha"), lab.AddHost("hb")

	for _, h := range []*Host{a, b} {
		h.Start(rpcbind, "-f", "-w")
	}
	for _, h := range []*Host{a, b} {
		WaitFor(t, 5*time.Second, "rpcbind on "+h.Name, func() error {
			_, err := h.Run(ctx, "rpcinfo", "-p")
			return err
		})
	}
	// statd on a only: so a's listing and b's listing differ.
	sa := a.Start(statd, "-F", "-d", "-L")
	WaitFor(t, 5*time.Second, "rpc.statd registered on ha", func() error {
		out, err := a.Run(ctx, "rpcinfo", "-p")
		if err != nil {
			return err
		}
		if strings.Count(out, "100024") != 2 {
			return fmt.Errorf("no status on udp and tcp:\n%s", out)
		}
		return nil
	})
	if out, err := b.Run(ctx, "rpcinfo", "-p"); err != nil || strings.Contains(out, "100024") || !strings.Contains(out, "portmapper") {
		t.Errorf("hb's own rpcbind:\n%s %v", out, err)
	}
	for _, peer := range []string{a.Addr.String(), "ha"} {
		if out, err := b.Run(ctx, "rpcinfo", "-p", peer); err != nil || strings.Count(out, "100024") != 2 {
			t.Errorf("rpcinfo -p %s from hb:\n%s %v", peer, out, err)
		}
	}
	for _, proto := range []string{"udp", "tcp"} {
		if out, err := b.Run(ctx, "rpcinfo", "-T", proto, a.Addr.String(), "100024", "1"); err != nil || !strings.Contains(out, "ready and waiting") {
			t.Errorf("rpcinfo -T %s to ha's statd: %q %v", proto, out, err)
		}
	}
	if out, err := b.Run(ctx, "rpcinfo", "-s", a.Addr6.String()); err != nil || !strings.Contains(out, "100024") {
		t.Errorf("rpcinfo -s over IPv6:\n%s %v", out, err)
	}

	// hb "reboots": its statd state dir owes ha a notification; sm-notify -P
	// delivers it to ha's statd and drops the record once acknowledged.
	dir := MakeStatdDir(t)
	rec := "00000000 000186b5 00000003 00000010 " + strings.Repeat("00", 16) + " ha hb\n"
	if err := os.WriteFile(filepath.Join(dir, "sm", "ha"), []byte(rec), 0o644); err != nil {
		t.Fatal(err)
	}
	sb := b.Start(statd, "-F", "-d", "-L", "-P", dir)
	WaitFor(t, 5*time.Second, "rpc.statd -P registered on hb", func() error {
		out, err := b.Run(ctx, "rpcinfo", "-p")
		if err == nil && !strings.Contains(out, "100024") {
			err = errors.New("not registered")
		}
		return err
	})
	nctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	out, err := b.Run(nctx, smnotify, "-d", "-f", "-P", dir)
	if err != nil {
		t.Fatalf("sm-notify: %v", err)
	}
	left, _ := filepath.Glob(filepath.Join(dir, "sm*", "*"))
	if len(left) != 0 {
		t.Errorf("sm-notify left %v; output:\n%s", left, out)
	}
	WaitFor(t, 5*time.Second, "ha's statd to log hb's SM_NOTIFY", func() error {
		if !strings.Contains(sa.Output(), "hb") {
			return fmt.Errorf("statd output:\n%s", sa.Output())
		}
		return nil
	})
	if err := sb.Stop(); err != nil {
		t.Logf("rpc.statd on SIGTERM: %v", err)
	}
	if !sb.Exited() {
		t.Error("statd still running after Stop")
	}
}

// LinkDown makes a host unreachable and LinkUp brings it back.
func TestLinkDownUp(t *testing.T) {
	t.Parallel()
	lab := New(t)
	a, b := lab.AddHost("a"), lab.AddHost("b")
	if err := b.Ping(a.Addr, 2*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := a.LinkDown(); err != nil {
		t.Fatal(err)
	}
	if err := b.Ping(a.Addr, 300*time.Millisecond); err == nil {
		t.Error("a answers ping over IPv4 while its link is down")
	}
	if err := b.Ping(a.Addr6, 300*time.Millisecond); err == nil {
		t.Error("a answers ping over IPv6 while its link is down")
	}
	if err := a.Ping(b.Addr, 300*time.Millisecond); err == nil {
		t.Error("a reaches b while its link is down")
	}
	up := time.Now()
	if err := a.LinkUp(); err != nil {
		t.Fatal(err)
	}
	t.Logf("LinkUp took %v", time.Since(up))
	for _, dst := range []netip.Addr{a.Addr, a.Addr6} {
		WaitFor(t, 5*time.Second, "a reachable again at "+dst.String(), func() error {
			return b.Ping(dst, 200*time.Millisecond)
		})
	}
	t.Logf("reachable %v after LinkUp", time.Since(up))
}

func TestProc(t *testing.T) {
	t.Parallel()
	lab := New(t)
	h := lab.AddHost("p")

	p := h.Start("sh", "-c", `trap 'echo got TERM; exit 0' TERM; echo started; while :; do sleep 0.05; done`)
	WaitFor(t, 5*time.Second, "started", func() error {
		if !strings.Contains(p.Output(), "started") {
			return errors.New("no output yet")
		}
		return nil
	})
	if p.Exited() || p.Pid() <= 0 {
		t.Fatal("exited early")
	}
	if err := p.Stop(); err != nil || !strings.Contains(p.Output(), "got TERM") {
		t.Errorf("Stop: %v, output %q", err, p.Output())
	}
	if err := p.Signal(os.Interrupt); !errors.Is(err, os.ErrProcessDone) {
		t.Errorf("Signal after exit: %v", err)
	}

	k := h.Start("sleep", "100")
	k.Kill()
	if !k.Exited() || k.Wait() == nil {
		t.Errorf("Kill: exited %v, wait %v", k.Exited(), k.Wait())
	}

	// A process ignoring SIGTERM is killed by Stop after 5 s.
	if testing.Short() {
		return
	}
	s := h.Start("sh", "-c", `trap '' TERM; echo ready; while :; do sleep 0.05; done`)
	WaitFor(t, 5*time.Second, "ready", func() error {
		if !strings.Contains(s.Output(), "ready") {
			return errors.New("not yet")
		}
		return nil
	})
	begin := time.Now()
	var ee *exec.ExitError
	if err := s.Stop(); !errors.As(err, &ee) || time.Since(begin) < 5*time.Second {
		t.Errorf("Stop of a TERM-ignoring process: %v after %v", err, time.Since(begin))
	}
}

func TestDo(t *testing.T) {
	t.Parallel()
	lab := New(t)
	h := lab.AddHost("d")
	self, err := os.Readlink("/proc/thread-self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	hostNS := fmt.Sprintf("/proc/%d/ns/net", h.HolderPid())
	want, _ := os.Readlink(hostNS)
	var wg sync.WaitGroup
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := h.Do(func() error {
				got, err := os.Readlink("/proc/thread-self/ns/net")
				if err != nil || got != want {
					return fmt.Errorf("in Do: net ns %q, want %q (%v)", got, want, err)
				}
				return nil
			})
			if err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	// The threads Do used went back to the scheduler in our namespace.
	for i := 0; i < 50; i++ {
		if got, _ := os.Readlink("/proc/thread-self/ns/net"); got != self {
			t.Fatalf("thread left in namespace %s", got)
		}
		time.Sleep(time.Millisecond)
	}
	if err := h.Do(func() error { return errors.New("boom") }); err == nil || err.Error() != "boom" {
		t.Errorf("Do error = %v", err)
	}
	func() {
		defer func() {
			if r := recover(); r != "pan" {
				t.Errorf("recovered %v", r)
			}
		}()
		h.Do(func() error { panic("pan") })
	}()
}

// TestHTTPClient: a host's HTTPClient reaches a server on that host's
// loopback, and another host's does not.
func TestHTTPClient(t *testing.T) {
	t.Parallel()
	lab := New(t)
	a, b := lab.AddHost("a"), lab.AddHost("b")
	var ln net.Listener
	if err := a.Do(func() error {
		var err error
		ln, err = net.Listen("tcp4", "127.0.0.1:8080")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "served on a") })}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	resp, err := a.HTTPClient().Get("http://127.0.0.1:8080/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "served on a" {
		t.Errorf("body %q", body)
	}
	if resp, err := b.HTTPClient().Get("http://127.0.0.1:8080/"); err == nil {
		resp.Body.Close()
		t.Error("b's client reached a's loopback")
	}
}

func TestBuildCommands(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t, 120*time.Second)
	lab := New(t)
	h := lab.AddHost("builder")
	dirs := make([]string, 3)
	var wg sync.WaitGroup
	for i := range dirs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			dirs[i] = BuildCommands(t, "./internal/netlab/testdata/hello")
		}()
	}
	wg.Wait()
	if dirs[0] == "" || dirs[0] != dirs[1] || dirs[1] != dirs[2] {
		t.Fatalf("dirs %q", dirs)
	}
	out, err := h.Run(ctx, filepath.Join(dirs[0], "hello"))
	if err != nil || out != "builder lo eth0\n" {
		t.Errorf("hello in the lab: %q %v", out, err)
	}
}

// Cleanup kills every process of the lab, also daemons that forked away, and
// leaves no namespace, interface or named netns behind.
func TestCleanup(t *testing.T) {
	RequireRoot(t)
	ctx := ctxT(t, 30*time.Second)
	netnsBefore := run(t, "ip", "netns", "list")
	linksBefore := run(t, "ip", "-o", "link")
	var holders []*holder
	var nsIDs []string
	t.Run("lab", func(t *testing.T) {
		lab := New(t)
		holders = append(holders, lab.hub)
		for i := 0; i < 3; i++ {
			h := lab.AddHost("c" + strconv.Itoa(i))
			holders = append(holders, h.holder)
			h.Start("sleep", "1000")
			// A daemon that escapes: its parent exits at once.
			if _, err := h.Run(ctx, "sh", "-c", "setsid sleep 1001 >/dev/null 2>&1 < /dev/null &"); err != nil {
				t.Fatal(err)
			}
		}
		for _, hd := range holders {
			nsIDs = append(nsIDs, hd.netns)
			if hd.mntns != "" {
				nsIDs = append(nsIDs, hd.mntns)
			}
		}
		if n := len(namespacePids(holders[1])); n < 2 {
			t.Fatalf("want at least 2 processes in a host, found %d", n)
		}
	})
	for _, hd := range holders {
		if pids := namespacePids(hd); len(pids) != 0 {
			t.Errorf("processes left in %s: %v", hd.netns, pids)
		}
		if err := syscall.Kill(hd.pid, 0); err == nil {
			if st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", hd.pid)); !strings.Contains(string(st), ") Z") {
				t.Errorf("holder %d still alive", hd.pid)
			}
		}
	}
	// No process or open file anywhere still refers to the namespaces.
	refs, _ := filepath.Glob("/proc/[0-9]*/ns/*")
	fds, _ := filepath.Glob("/proc/self/fd/*")
	for _, p := range append(refs, fds...) {
		if l, err := os.Readlink(p); err == nil && slices.Contains(nsIDs, l) {
			t.Errorf("%s still refers to %s", p, l)
		}
	}
	if after := run(t, "ip", "netns", "list"); after != netnsBefore {
		t.Errorf("ip netns list before:\n%s\nafter:\n%s", netnsBefore, after)
	}
	if after := run(t, "ip", "-o", "link"); ifNames(after) != ifNames(linksBefore) {
		t.Errorf("interfaces before:\n%s\nafter:\n%s", linksBefore, after)
	}
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
	return string(out)
}

// ifNames keeps the interface names of `ip -o link` (counters and states vary).
func ifNames(s string) string {
	var names []string
	for _, line := range strings.Split(s, "\n") {
		if f := strings.Fields(line); len(f) > 1 {
			names = append(names, f[1])
		}
	}
	return strings.Join(names, " ")
}
