// Package netlab is a multi-host test lab built from Linux namespaces, for
// integration tests that need several real hosts on one network: telemetry
// over real multicast, rpcbind and rpc.statd talking across hosts.
//
// A Lab is one isolated Ethernet segment: a bridge living in its own "hub"
// network namespace. Each Host has its own network, mount and UTS namespaces,
// an interface eth0 plugged into the bridge, an IPv4 address on the lab's
// 10.x.y.0/24 and an IPv6 ULA address on the lab's fdxx:…/64, a multicast
// route (224.0.0.0/4 dev eth0), its hostname set to its name, an /etc/hosts
// naming every host of the lab, a fresh sysfs on /sys (so /sys/class/net shows
// the host's own interfaces) and private tmpfs mounts on /run and
// /var/lib/nfs, so each host can run its own rpcbind and rpc.statd.
//
//	func TestSomething(t *testing.T) {
//		lab := netlab.New(t) // skips unless root (fails when CI=true)
//		a, b := lab.AddHost("a"), lab.AddHost("b")
//		bin := netlab.BuildCommands(t, "./cmd/recvstats")
//		recv := a.Start(filepath.Join(bin, "recvstats"), "-d", "-i", "eth0")
//		out, err := b.Run(ctx, "rpcinfo", "-p", a.Addr.String())
//		err = b.Do(func() error { c, err := net.Dial("udp", …); … })
//		netlab.WaitFor(t, 5*time.Second, "node b in table", func() error { … })
//	}
//
// Nothing is created in the caller's network namespace, so names cannot clash
// between labs running in parallel (in one test binary or in several), and
// nothing shows in `ip link` or `ip netns list` of the machine. Everything is
// torn down by t.Cleanup, also when the test fails: every process found in a
// host's namespaces is killed, and with the last process the namespaces go.
// If the test binary dies without running its cleanups (a -timeout panic, a
// SIGKILL), each namespace's holder process sees its stdin pipe close and
// kills whatever still runs in its namespace before it exits.
//
// Processes enter a host through nsenter(1) with the host holder's namespaces
// (-n -m -u); unlike `ip netns exec` no /etc/netns bind mounts are applied,
// but none are needed: the holder mounted the host's own /sys once, at start.
// To look inside a host while a test runs: nsenter -t HOLDERPID -n -m -u sh
// (HolderPid is logged by AddHost with `go test -v`).
//
// # Real NFS daemons in the lab (Debian bookworm: rpcbind 1.2.6, nfs-common 2.6.2)
//
// rpcbind keeps its lock and local socket in /run (/run/rpcbind.lock,
// /run/rpcbind.sock, /run/rpcbind/), which is private per host, so each host
// runs its own:
//
//	rpcb := h.Start("rpcbind", "-f", "-w") // -f: stay in the foreground; -w: warm start
//	netlab.WaitFor(t, 5*time.Second, "rpcbind", func() error { _, err := h.Run(ctx, "rpcinfo", "-p"); return err })
//
// It drops privileges to _rpc by itself. rpc.statd, in the foreground, logging
// to stderr (captured by Start), not running sm-notify itself:
//
//	statd := h.Start("rpc.statd", "-F", "-d", "-L")            // state in the host's /var/lib/nfs
//	statd := h.Start("rpc.statd", "-F", "-d", "-L", "-P", dir) // state in dir
//
// and `rpcinfo -p` on the host then lists program 100024 ("status") on udp
// and tcp. With -P the directory must already hold sm/ and sm.bak/ (statd
// exits with "Failed to stat DIR/sm" otherwise; see MakeStatdDir); statd runs
// as the owner of DIR/sm (root if root owns it). The host's /var/lib/nfs is
// prepared like Debian's package does (sm and sm.bak owned by statd). Useful
// further flags: -n NAME (my name), -p PORT and -o PORT (fixed ports).
//
// nfs-utils' statd starts /usr/sbin/sm-notify without passing -P on, so with
// -P run statd with -L and run sm-notify yourself:
//
//	out, err := h.Run(ctx, "sm-notify", "-d", "-f", "-P", dir) // -d: foreground, -f: even if already run this "boot"
//
// add "-v", NAME to send a chosen name. sm-notify moves DIR/sm/* to DIR/sm.bak/
// and deletes each record once that host's statd acknowledged SM_NOTIFY; with
// -d it keeps retrying an unreachable host for 15 minutes (-m MINUTES), so
// use a context with a deadline for negative tests. Without -f, a second run in the same
// host finds /run/sm-notify.pid and does nothing.
package netlab
