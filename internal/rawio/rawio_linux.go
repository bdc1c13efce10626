package rawio

import (
	"errors"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Pread is pread(2) of fd, retried on EINTR.
func Pread(fd int, b []byte, off int64) (int, error) {
	var p unsafe.Pointer
	if len(b) > 0 {
		p = unsafe.Pointer(&b[0])
	}
	for {
		n, _, e := unix.RawSyscall6(unix.SYS_PREAD64, uintptr(fd), uintptr(p), uintptr(len(b)), uintptr(off), 0, 0)
		switch e {
		case 0:
			return int(n), nil
		case unix.EINTR:
			continue
		}
		return 0, e
	}
}

// SendTo is sendto(2) of b to to on the UDP socket fd, without waiting: it
// returns unix.EAGAIN when the socket buffer is full. An IPv4 address
// (or IPv4-mapped one) needs an AF_INET socket, others AF_INET6.
func SendTo(fd int, b []byte, to netip.AddrPort) error {
	var sa4 unix.RawSockaddrInet4
	var sa6 unix.RawSockaddrInet6
	var sa unsafe.Pointer
	var salen uintptr
	port := to.Port()
	port = port<<8 | port>>8 // network byte order
	if a := to.Addr(); a.Is4() || a.Is4In6() {
		sa4 = unix.RawSockaddrInet4{Family: unix.AF_INET, Port: port, Addr: a.Unmap().As4()}
		sa, salen = unsafe.Pointer(&sa4), unsafe.Sizeof(sa4)
	} else {
		sa6 = unix.RawSockaddrInet6{Family: unix.AF_INET6, Port: port, Addr: a.As16()}
		if z := a.Zone(); z != "" {
			return errors.New("rawio: zoned IPv6 addresses are not supported")
		}
		sa, salen = unsafe.Pointer(&sa6), unsafe.Sizeof(sa6)
	}
	var p unsafe.Pointer
	if len(b) > 0 {
		p = unsafe.Pointer(&b[0])
	}
	for {
		_, _, e := unix.RawSyscall6(unix.SYS_SENDTO, uintptr(fd), uintptr(p), uintptr(len(b)), unix.MSG_DONTWAIT, uintptr(sa), salen)
		switch e {
		case 0:
			return nil
		case unix.EINTR:
			continue
		}
		return e
	}
}

// Alarm delivers a value on C when the time set with Reset has passed,
// like a time.Timer, but from a timerfd that a goroutine waits for
// through the network poller: while it is armed the runtime has no timer,
// so nothing but the expiry wakes the process. Create it with NewAlarm;
// Reset and Stop are for one goroutine at a time.
type Alarm struct {
	C <-chan struct{}

	c    chan struct{}
	f    *os.File
	fd   int
	done chan struct{}
	once sync.Once
}

// NewAlarm returns a disarmed Alarm.
func NewAlarm() (*Alarm, error) {
	fd, err := unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_NONBLOCK|unix.TFD_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("timerfd_create", err)
	}
	c := make(chan struct{}, 1)
	a := &Alarm{C: c, c: c, f: os.NewFile(uintptr(fd), "timerfd"), fd: fd, done: make(chan struct{})}
	rc, err := a.f.SyscallConn()
	if err != nil {
		a.f.Close()
		return nil, err
	}
	go a.wait(rc)
	return a, nil
}

// wait forwards each expiry to C; a value still unread is not doubled.
func (a *Alarm) wait(rc syscall.RawConn) {
	defer close(a.done)
	var buf [8]byte
	read := func(fd uintptr) bool {
		_, _, e := unix.RawSyscall(unix.SYS_READ, fd, uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)))
		return e != unix.EAGAIN && e != unix.EINTR
	}
	for {
		if err := rc.Read(read); err != nil {
			return // closed
		}
		select {
		case a.c <- struct{}{}:
		default:
		}
	}
}

// Reset arms the alarm to go off after d (at once if d ≤ 0), replacing
// any earlier setting. A value of an earlier setting may still be on C.
func (a *Alarm) Reset(d time.Duration) error {
	d = max(d, 1) // a zero value would disarm
	spec := unix.ItimerSpec{Value: unix.NsecToTimespec(int64(d))}
	return a.settime(&spec)
}

// Stop disarms the alarm.
func (a *Alarm) Stop() error { return a.settime(&unix.ItimerSpec{}) }

func (a *Alarm) settime(spec *unix.ItimerSpec) error {
	_, _, e := unix.RawSyscall6(unix.SYS_TIMERFD_SETTIME, uintptr(a.fd), 0, uintptr(unsafe.Pointer(spec)), 0, 0, 0)
	if e != 0 {
		return os.NewSyscallError("timerfd_settime", e)
	}
	return nil
}

// Close releases the timerfd and ends the waiting goroutine.
func (a *Alarm) Close() error {
	var err error
	a.once.Do(func() {
		err = a.f.Close()
		<-a.done
	})
	return err
}
