package capacity

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// userHZ is the unit of utime and stime in /proc/PID/stat: USER_HZ, 100
// on every Linux architecture Go runs on.
const userHZ = 100

// maxTicks is far beyond any real CPU time (about 87 years) and keeps
// the sum of two within a time.Duration.
const maxTicks = 1 << 38

// ProcessCPU is the CPU time the kernel charged to process pid so far, all
// its threads, user and system (/proc/PID/stat utime+stime).
func ProcessCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("capacity: %w", err)
	}
	return parseStatCPU(b, pid)
}

// parseStatCPU reads utime+stime from the text of /proc/PID/stat.
func parseStatCPU(b []byte, pid int) (time.Duration, error) {
	// The command name is in parentheses and may hold spaces: fields
	// are counted after the last ')'. utime and stime are fields 14 and
	// 15 of the line, 12 and 13 after the name.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("capacity: /proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("capacity: /proc/%d/stat: %d fields after the name, want 13 or more", pid, len(f))
	}
	var ticks uint64
	for _, s := range f[11:13] {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil || v > maxTicks {
			return 0, fmt.Errorf("capacity: /proc/%d/stat: utime/stime %q is not a tick count", pid, s)
		}
		ticks += v
	}
	return time.Duration(ticks) * (time.Second / userHZ), nil
}

// Memory is a process's resident set from /proc/PID/status, in bytes.
type Memory struct {
	RSS  uint64 `json:"rss"`  // VmRSS: now
	Peak uint64 `json:"peak"` // VmHWM: the most it ever was
}

// ProcessMemory reads pid's VmRSS and VmHWM.
func ProcessMemory(pid int) (Memory, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return Memory{}, fmt.Errorf("capacity: %w", err)
	}
	defer f.Close()
	var m Memory
	found := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), ":")
		if !ok || (key != "VmRSS" && key != "VmHWM") {
			continue
		}
		kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(val), " kB"), 10, 64)
		if err != nil {
			return Memory{}, fmt.Errorf("capacity: /proc/%d/status: %s %q: %v", pid, key, val, err)
		}
		if key == "VmRSS" {
			m.RSS = kb << 10
		} else {
			m.Peak = kb << 10
		}
		found++
	}
	if err := sc.Err(); err != nil {
		return Memory{}, fmt.Errorf("capacity: /proc/%d/status: %w", pid, err)
	}
	if found != 2 {
		return Memory{}, fmt.Errorf("capacity: /proc/%d/status: no VmRSS/VmHWM (a zombie?)", pid)
	}
	return m, nil
}

// Socket is one line of /proc/net/udp.
type Socket struct {
	Inode   uint64
	RxQueue uint64 // bytes waiting in the receive queue
	// Drops counts datagrams the kernel dropped for this socket, mostly
	// because its receive buffer was full.
	Drops uint64
}

// UDPSocket finds the unconnected IPv4 UDP socket bound to port in
// /proc/net/udp (of the caller's network namespace).
func UDPSocket(port uint16) (Socket, error) {
	return udpSocket("/proc/net/udp", port)
}

func udpSocket(path string, port uint16) (Socket, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Socket{}, fmt.Errorf("capacity: %w", err)
	}
	return parseUDP(b, path, port)
}

// parseUDP finds port's unconnected socket in the text of /proc/net/udp.
func parseUDP(b []byte, path string, port uint16) (Socket, error) {
	// "sl local_address rem_address st tx_queue:rx_queue tr tm->when
	// retrnsmt uid timeout inode ref pointer drops"
	want := fmt.Sprintf(":%04X", port)
	lines := strings.Split(string(b), "\n")
	for _, line := range lines[1:] {
		f := strings.Fields(line)
		if len(f) < 13 || !strings.HasSuffix(f[1], want) || f[2] != "00000000:0000" {
			continue
		}
		_, rxq, _ := strings.Cut(f[4], ":")
		var s Socket
		var e1, e2, e3 error
		s.RxQueue, e1 = strconv.ParseUint(rxq, 16, 64)
		s.Inode, e2 = strconv.ParseUint(f[9], 10, 64)
		s.Drops, e3 = strconv.ParseUint(f[len(f)-1], 10, 64)
		if e1 != nil || e2 != nil || e3 != nil {
			return Socket{}, fmt.Errorf("capacity: %s: bad line %q", path, line)
		}
		return s, nil
	}
	return Socket{}, fmt.Errorf("capacity: %s: no socket bound to port %d", path, port)
}

// LoadAverage is the 1-minute load average of /proc/loadavg.
func LoadAverage() (float64, error) {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0, fmt.Errorf("capacity: %w", err)
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0, fmt.Errorf("capacity: /proc/loadavg is empty")
	}
	v, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return 0, fmt.Errorf("capacity: /proc/loadavg: %v", err)
	}
	return v, nil
}

var skmemRcvBuf = regexp.MustCompile(`skmem:\(r\d+,rb(\d+),`)

// ReceiveBuffer is the receive buffer the kernel granted the UDP socket
// bound to port (as SO_RCVBUF reports it: twice what was asked), from
// ss(8) of iproute2; 0 when ss is missing or shows no such socket.
// /proc/net/udp does not show it.
func ReceiveBuffer(port uint16) int {
	out, err := exec.Command("ss", "-u", "-a", "-n", "-m", fmt.Sprintf("sport = :%d", port)).Output()
	if err != nil {
		return 0
	}
	m := skmemRcvBuf.FindSubmatch(out)
	if m == nil {
		return 0
	}
	n, _ := strconv.Atoi(string(m[1]))
	return n
}

// OwnsSocket tells whether process pid has the socket with inode open
// (a "socket:[inode]" link in /proc/PID/fd).
func OwnsSocket(pid int, inode uint64) (bool, error) {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return false, fmt.Errorf("capacity: %w", err)
	}
	want := fmt.Sprintf("socket:[%d]", inode)
	for _, e := range ents {
		if l, err := os.Readlink(dir + "/" + e.Name()); err == nil && l == want {
			return true, nil
		}
	}
	return false, nil
}
