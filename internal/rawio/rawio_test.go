package rawio

import (
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestPread(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, []byte("hello, world"), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 64)
	n, err := Pread(int(f.Fd()), b, 7)
	if err != nil || string(b[:n]) != "world" {
		t.Fatalf("Pread = %q, %v", b[:n], err)
	}
	if _, err := Pread(-1, b, 0); err == nil {
		t.Error("Pread of a bad descriptor: no error")
	}
}

func TestSendTo(t *testing.T) {
	for _, c := range []struct{ network, addr string }{{"udp4", "127.0.0.1:0"}, {"udp6", "[::1]:0"}} {
		sink, err := net.ListenPacket(c.network, c.addr)
		if err != nil {
			t.Logf("%s: %v", c.network, err)
			continue
		}
		defer sink.Close()
		out, err := net.ListenPacket(c.network, c.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer out.Close()
		rc, err := out.(*net.UDPConn).SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		to := sink.LocalAddr().(*net.UDPAddr).AddrPort()
		var serr error
		if err := rc.Control(func(fd uintptr) { serr = SendTo(int(fd), []byte("ping"), to) }); err != nil || serr != nil {
			t.Fatalf("%s: SendTo: %v %v", c.network, err, serr)
		}
		sink.SetReadDeadline(time.Now().Add(5 * time.Second))
		b := make([]byte, 16)
		n, from, err := sink.ReadFrom(b)
		if err != nil || string(b[:n]) != "ping" || from.(*net.UDPAddr).AddrPort() != out.LocalAddr().(*net.UDPAddr).AddrPort() {
			t.Fatalf("%s: got %q from %v, %v", c.network, b[:n], from, err)
		}
	}
	// An IPv4-mapped destination goes out of an IPv4 socket.
	sink, _ := net.ListenPacket("udp4", "127.0.0.1:0")
	defer sink.Close()
	out, _ := net.ListenPacket("udp4", "127.0.0.1:0")
	defer out.Close()
	rc, _ := out.(*net.UDPConn).SyscallConn()
	to := sink.LocalAddr().(*net.UDPAddr).AddrPort()
	mapped := netip.AddrPortFrom(netip.AddrFrom16(to.Addr().As16()), to.Port())
	var serr error
	rc.Control(func(fd uintptr) { serr = SendTo(int(fd), []byte("x"), mapped) })
	if serr != nil {
		t.Fatalf("mapped: %v", serr)
	}
}

func TestAlarm(t *testing.T) {
	a, err := NewAlarm()
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	select {
	case <-a.C:
		t.Fatal("a new alarm went off")
	case <-time.After(20 * time.Millisecond):
	}
	start := time.Now()
	a.Reset(30 * time.Millisecond)
	<-a.C
	if d := time.Since(start); d < 30*time.Millisecond {
		t.Errorf("went off after %v, set for 30ms", d)
	}
	// A later setting replaces an earlier one; Stop disarms.
	a.Reset(time.Hour)
	a.Reset(0)
	select {
	case <-a.C:
	case <-time.After(5 * time.Second):
		t.Fatal("Reset(0) did not go off")
	}
	a.Reset(20 * time.Millisecond)
	a.Stop()
	select {
	case <-a.C:
		t.Fatal("a stopped alarm went off")
	case <-time.After(60 * time.Millisecond):
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	a.Close() // twice is fine
}
