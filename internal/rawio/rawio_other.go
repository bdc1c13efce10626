//go:build !linux

package rawio

import (
	"errors"
	"net/netip"
	"syscall"
	"time"
)

// Pread is pread(2).
func Pread(fd int, b []byte, off int64) (int, error) { return syscall.Pread(fd, b, off) }

// SendTo is not available here: callers send through package net.
func SendTo(fd int, b []byte, to netip.AddrPort) error {
	return errors.ErrUnsupported
}

// Alarm is a time.Timer elsewhere.
type Alarm struct {
	C <-chan struct{}
	c chan struct{}
	t *time.Timer
}

// NewAlarm returns a disarmed Alarm.
func NewAlarm() (*Alarm, error) {
	c := make(chan struct{}, 1)
	a := &Alarm{C: c, c: c}
	a.t = time.AfterFunc(time.Hour, func() {
		select {
		case a.c <- struct{}{}:
		default:
		}
	})
	a.t.Stop()
	return a, nil
}

// Reset arms the alarm to go off after d.
func (a *Alarm) Reset(d time.Duration) error { a.t.Reset(d); return nil }

// Stop disarms the alarm.
func (a *Alarm) Stop() error { a.t.Stop(); return nil }

// Close releases the alarm.
func (a *Alarm) Close() error { a.t.Stop(); return nil }
