package daemon

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"log/syslog"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// LogOptions says where the daemon's records go.
type LogOptions struct {
	Debug      bool      // -d: debug records too (errors are always logged)
	Foreground bool      // -F: also copy every record to Stderr
	Stderr     io.Writer // defaults to os.Stderr
	Tag        string    // syslog tag, defaults to the program name
	// SyslogNetwork and SyslogAddr override the local syslog socket (tests).
	SyslogNetwork, SyslogAddr string
}

// NewLogger returns a logger that writes to syslog (facility daemon) and,
// in the foreground, to stderr as well. While no syslog socket answers
// (none yet at boot, or syslogd restarting) records go to stderr instead,
// or, when stderr goes nowhere (a daemon in the background has it on
// /dev/null), to the kernel log: never nowhere. The socket is dialled
// again from time to time. The returned close function releases it.
func NewLogger(o LogOptions) (*slog.Logger, func() error) {
	level := slog.LevelInfo
	if o.Debug {
		level = slog.LevelDebug
	}
	stderr := o.Stderr
	if stderr == nil {
		stderr = os.Stderr
	}
	tag := o.Tag
	if tag == "" {
		tag = filepath.Base(os.Args[0])
	}
	// Under systemd with stderr on the journal: one copy, with priorities,
	// and the journal's own timestamp.
	if journalStream(stderr) {
		return slog.New(NewSyslogHandler(journalWriter{stderr}, level)), func() error { return nil }
	}
	rd := &redialSyslog{network: o.SyslogNetwork, addr: o.SyslogAddr, tag: tag}
	err := rd.dial(time.Now())
	var fallback slog.Handler
	if !o.Foreground {
		out := stderr
		if goesNowhere(stderr) {
			if k, kerr := os.OpenFile("/dev/kmsg", os.O_WRONLY, 0); kerr == nil {
				out = &kmsgWriter{f: k, tag: tag}
			}
		}
		fallback = slog.NewTextHandler(out, &slog.HandlerOptions{Level: level})
	}
	handlers := []slog.Handler{newSyslogHandler(rd, level, fallback)}
	if o.Foreground {
		handlers = append(handlers, slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	}
	l := slog.New(slog.NewMultiHandler(handlers...))
	if err != nil && !o.Foreground {
		l.Warn("no syslog socket yet; logging to stderr until one answers", "err", err)
	}
	return l, rd.Close
}

// redialEvery is the least time between two attempts to reach syslog.
var redialEvery = 10 * time.Second

// redialSyslog is a syslog connection that is made again when it is lost
// or was never there.
type redialSyslog struct {
	network, addr, tag string
	mu                 sync.Mutex
	w                  *syslog.Writer
	last               time.Time
}

var errNoSyslog = errors.New("no syslog socket")

func (r *redialSyslog) dial(now time.Time) error {
	r.last = now
	w, err := syslog.Dial(r.network, r.addr, syslog.LOG_DAEMON|syslog.LOG_INFO, r.tag)
	if err != nil {
		return err
	}
	r.w = w
	return nil
}

func (r *redialSyslog) write(f func(*syslog.Writer, string) error, m string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.w == nil {
		if now := time.Now(); now.Sub(r.last) < redialEvery || r.dial(now) != nil {
			return errNoSyslog
		}
	}
	if err := f(r.w, m); err != nil {
		r.w.Close()
		r.w = nil
		return err
	}
	return nil
}

func (r *redialSyslog) Debug(m string) error   { return r.write((*syslog.Writer).Debug, m) }
func (r *redialSyslog) Info(m string) error    { return r.write((*syslog.Writer).Info, m) }
func (r *redialSyslog) Warning(m string) error { return r.write((*syslog.Writer).Warning, m) }
func (r *redialSyslog) Err(m string) error     { return r.write((*syslog.Writer).Err, m) }

// Close releases the connection, if any.
func (r *redialSyslog) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.w == nil {
		return nil
	}
	err := r.w.Close()
	r.w = nil
	return err
}

// goesNowhere tells whether w is /dev/null.
func goesNowhere(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	if err != nil {
		return true
	}
	null, err := os.Stat(os.DevNull)
	return err == nil && os.SameFile(fi, null)
}

// kmsgWriter writes each line to the kernel log, under the daemon's tag.
type kmsgWriter struct {
	f   *os.File
	tag string
}

func (k *kmsgWriter) Write(p []byte) (int, error) {
	if _, err := k.f.Write(append([]byte(k.tag+": "), p...)); err != nil {
		return 0, err
	}
	return len(p), nil
}

// SyslogWriter is the part of *syslog.Writer the handler uses.
type SyslogWriter interface {
	Debug(string) error
	Info(string) error
	Warning(string) error
	Err(string) error
}

// syslogHandler formats records as logfmt text without time or level (syslog
// adds both) and writes each at the matching syslog priority.
type syslogHandler struct {
	shared   *syslogShared
	inner    slog.Handler
	level    slog.Leveler
	fallback slog.Handler // takes the records syslog refuses; may be nil
}

type syslogShared struct {
	mu  sync.Mutex
	w   SyslogWriter
	buf []byte
}

func (s *syslogShared) Write(p []byte) (int, error) {
	s.buf = append(s.buf, p...)
	return len(p), nil
}

// NewSyslogHandler returns a slog.Handler writing to w at priorities that
// follow each record's level.
func NewSyslogHandler(w SyslogWriter, level slog.Leveler) slog.Handler {
	return newSyslogHandler(w, level, nil)
}

func newSyslogHandler(w SyslogWriter, level slog.Leveler, fallback slog.Handler) *syslogHandler {
	sh := &syslogShared{w: w}
	inner := slog.NewTextHandler(sh, &slog.HandlerOptions{
		Level: slog.LevelDebug,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && (a.Key == slog.TimeKey || a.Key == slog.LevelKey) {
				return slog.Attr{}
			}
			return a
		},
	})
	return &syslogHandler{shared: sh, inner: inner, level: level, fallback: fallback}
}

func (h *syslogHandler) Enabled(_ context.Context, l slog.Level) bool {
	return l >= h.level.Level()
}

func (h *syslogHandler) Handle(ctx context.Context, r slog.Record) error {
	err := h.send(ctx, r)
	if err != nil && h.fallback != nil {
		return h.fallback.Handle(ctx, r)
	}
	return err
}

func (h *syslogHandler) send(ctx context.Context, r slog.Record) error {
	s := h.shared
	s.mu.Lock()
	defer s.mu.Unlock()
	s.buf = s.buf[:0]
	if err := h.inner.Handle(ctx, r); err != nil {
		return err
	}
	msg := string(trimNewline(s.buf))
	switch {
	case r.Level >= slog.LevelError:
		return s.w.Err(msg)
	case r.Level >= slog.LevelWarn:
		return s.w.Warning(msg)
	case r.Level >= slog.LevelInfo:
		return s.w.Info(msg)
	default:
		return s.w.Debug(msg)
	}
}

func (h *syslogHandler) WithAttrs(as []slog.Attr) slog.Handler {
	c := *h
	c.inner = h.inner.WithAttrs(as)
	if h.fallback != nil {
		c.fallback = h.fallback.WithAttrs(as)
	}
	return &c
}

func (h *syslogHandler) WithGroup(name string) slog.Handler {
	c := *h
	c.inner = h.inner.WithGroup(name)
	if h.fallback != nil {
		c.fallback = h.fallback.WithGroup(name)
	}
	return &c
}

func trimNewline(b []byte) []byte {
	for len(b) > 0 && b[len(b)-1] == '\n' {
		b = b[:len(b)-1]
	}
	return b
}
