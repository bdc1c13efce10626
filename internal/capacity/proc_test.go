package capacity

import (
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A socket whose buffer overflows shows the overflow in the drop counter
// the harness reads: what was read plus the drops is what was sent.
func TestUDPSocketCountsKernelDrops(t *testing.T) {
	rc, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:0")))
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if err := rc.SetReadBuffer(1); err != nil { // the kernel's minimum
		t.Fatal(err)
	}
	port := rc.LocalAddr().(*net.UDPAddr).AddrPort().Port()
	sc, err := net.DialUDP("udp4", nil, rc.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	const sent = 200
	payload := make([]byte, 1000)
	for i := 0; i < sent; i++ {
		if _, err := sc.Write(payload); err != nil {
			t.Fatal(err)
		}
	}
	s, err := UDPSocket(port)
	if err != nil {
		t.Fatal(err)
	}
	if s.Drops == 0 || s.RxQueue == 0 || s.Inode == 0 {
		t.Fatalf("socket %+v: want drops, a queue and an inode", s)
	}
	if ok, err := OwnsSocket(os.Getpid(), s.Inode); !ok || err != nil {
		t.Fatalf("this process does not own socket inode %d: %v", s.Inode, err)
	}
	if ok, _ := OwnsSocket(1, s.Inode); ok {
		t.Fatal("pid 1 owns our socket")
	}
	read := 0
	for {
		rc.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		if _, err := rc.Read(payload); err != nil {
			break
		}
		read++
	}
	if uint64(read)+s.Drops != sent {
		t.Fatalf("read %d + dropped %d != sent %d", read, s.Drops, sent)
	}
	if _, err := UDPSocket(port + 1); err == nil && port < 65535 {
		if s2, _ := UDPSocket(port + 1); s2.Inode == s.Inode {
			t.Fatal("another port matched the same socket")
		}
	}
}

func TestProcessCPUAndMemoryOfThisProcess(t *testing.T) {
	pid := os.Getpid()
	before, err := ProcessCPU(pid)
	if err != nil {
		t.Fatal(err)
	}
	// Spin until the kernel charged us at least one more tick.
	deadline := time.Now().Add(10 * time.Second)
	var after time.Duration
	for x := 0; time.Now().Before(deadline); x++ {
		if x%100000 == 0 {
			if after, err = ProcessCPU(pid); err != nil {
				t.Fatal(err)
			}
			if after > before {
				break
			}
		}
	}
	if after <= before {
		t.Fatalf("CPU time stayed at %v while spinning", before)
	}
	big := make([]byte, 64<<20)
	for i := range big {
		big[i] = 1
	}
	m, err := ProcessMemory(pid)
	if err != nil {
		t.Fatal(err)
	}
	if m.Peak < 64<<20 || m.RSS == 0 || m.RSS > m.Peak {
		t.Fatalf("memory %+v after touching 64 MiB", m)
	}
	_ = big[len(big)-1]
	if _, err := ProcessCPU(1 << 30); err == nil {
		t.Error("no error for a process that does not exist")
	}
	if _, err := LoadAverage(); err != nil {
		t.Error(err)
	}
}

func TestWriteBetweenMarkers(t *testing.T) {
	path := filepath.Join(t.TempDir(), "benchmarks.md")
	doc := "# Benchmarks\n\nbefore\n" + BeginMarker + "\nold table\n" + EndMarker + "\nafter\n"
	if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := WriteBetweenMarkers(path, "| new | table |\n"); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path)
	want := "# Benchmarks\n\nbefore\n" + BeginMarker + "\n| new | table |\n" + EndMarker + "\nafter\n"
	if string(b) != want {
		t.Fatalf("got\n%s\nwant\n%s", b, want)
	}
	os.WriteFile(path, []byte("no markers\n"), 0o644)
	if err := WriteBetweenMarkers(path, "x"); err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("missing markers: err %v, want one naming %s", err, path)
	}
}
