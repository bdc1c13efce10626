package daemon

import (
	"context"
	"io"
	"log/slog"
	"log/syslog"
	"os"
	"path/filepath"
	"sync"
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

// NewLogger returns a logger that writes to syslog (facility daemon) and, in
// the foreground or when no syslog socket answers, to stderr. The returned
// close function releases the syslog connection.
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
	var handlers []slog.Handler
	closer := func() error { return nil }
	w, err := syslog.Dial(o.SyslogNetwork, o.SyslogAddr, syslog.LOG_DAEMON|syslog.LOG_INFO, tag)
	if err == nil {
		handlers = append(handlers, NewSyslogHandler(w, level))
		closer = w.Close
	}
	if err != nil || o.Foreground {
		handlers = append(handlers, slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	}
	l := slog.New(slog.NewMultiHandler(handlers...))
	if err != nil && !o.Foreground {
		l.Warn("no syslog socket; logging to stderr", "err", err)
	}
	return l, closer
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
	shared *syslogShared
	inner  slog.Handler
	level  slog.Leveler
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
	return &syslogHandler{shared: sh, inner: inner, level: level}
}

func (h *syslogHandler) Enabled(_ context.Context, l slog.Level) bool {
	return l >= h.level.Level()
}

func (h *syslogHandler) Handle(ctx context.Context, r slog.Record) error {
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
	return &syslogHandler{shared: h.shared, inner: h.inner.WithAttrs(as), level: h.level}
}

func (h *syslogHandler) WithGroup(name string) slog.Handler {
	return &syslogHandler{shared: h.shared, inner: h.inner.WithGroup(name), level: h.level}
}

func trimNewline(b []byte) []byte {
	for len(b) > 0 && b[len(b)-1] == '\n' {
		b = b[:len(b)-1]
	}
	return b
}
