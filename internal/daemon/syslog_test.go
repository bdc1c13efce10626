package daemon

import (
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

type fakeSyslog struct{ lines []string }

func (f *fakeSyslog) Debug(m string) error   { f.lines = append(f.lines, "debug "+m); return nil }
func (f *fakeSyslog) Info(m string) error    { f.lines = append(f.lines, "info "+m); return nil }
func (f *fakeSyslog) Warning(m string) error { f.lines = append(f.lines, "warning "+m); return nil }
func (f *fakeSyslog) Err(m string) error     { f.lines = append(f.lines, "err "+m); return nil }

func TestSyslogHandlerPriorities(t *testing.T) {
	f := &fakeSyslog{}
	l := slog.New(NewSyslogHandler(f, slog.LevelInfo)).With("pid", 7)
	l.Debug("hidden")
	l.Info("hello", "k", "v")
	l.Warn("careful", "name", fmt.Sprintf("%q", "a%sb\n"))
	l.Error("broken")
	want := []string{
		`info msg=hello pid=7 k=v`,
		`warning msg=careful pid=7 name="\"a%sb\\n\""`,
		`err msg=broken pid=7`,
	}
	if strings.Join(f.lines, "|") != strings.Join(want, "|") {
		t.Fatalf("got\n%s\nwant\n%s", strings.Join(f.lines, "\n"), strings.Join(want, "\n"))
	}
	f.lines = nil
	slog.New(NewSyslogHandler(f, slog.LevelDebug)).Debug("shown")
	if len(f.lines) != 1 || f.lines[0] != "debug msg=shown" {
		t.Fatalf("debug: %q", f.lines)
	}
}

// TestLoggerWritesToSyslogSocket runs a unixgram "syslogd" and checks that a
// debug record arrives with facility daemon (3) and level debug (7): <31>.
func TestLoggerWritesToSyslogSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	pc, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	l, closeLog := NewLogger(LogOptions{Debug: true, SyslogNetwork: "unixgram", SyslogAddr: path})
	defer closeLog()
	l.Debug("probe", "x", 1)
	l.Error("oops")
	buf := make([]byte, 2048)
	got := map[string]bool{}
	for range 2 {
		pc.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := pc.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		got[string(buf[:n])] = true
	}
	var debug, errRec bool
	for m := range got {
		debug = debug || (strings.HasPrefix(m, "<31>") && strings.Contains(m, "msg=probe x=1"))
		errRec = errRec || (strings.HasPrefix(m, "<27>") && strings.Contains(m, "msg=oops"))
	}
	if !debug || !errRec {
		t.Fatalf("records: %v", got)
	}
}

func TestLoggerWithoutDebugDropsDebug(t *testing.T) {
	var sb strings.Builder
	l, closeLog := NewLogger(LogOptions{Foreground: true, Stderr: &sb, SyslogNetwork: "unixgram", SyslogAddr: "/nonexistent/log"})
	defer closeLog()
	l.Debug("nope")
	l.Error("yes")
	if strings.Contains(sb.String(), "nope") || !strings.Contains(sb.String(), "yes") {
		t.Fatalf("stderr: %q", sb.String())
	}
}

// With no syslog socket, a daemon's records go to stderr, never nowhere;
// once a syslogd answers, they go there.
func TestLoggerFallsBackUntilSyslogAnswers(t *testing.T) {
	defer func(d time.Duration) { redialEvery = d }(redialEvery)
	redialEvery = 0
	path := filepath.Join(t.TempDir(), "log")
	var sb strings.Builder
	l, closeLog := NewLogger(LogOptions{Stderr: &sb, SyslogNetwork: "unixgram", SyslogAddr: path})
	defer closeLog()
	l.Info("before syslogd")
	if !strings.Contains(sb.String(), "before syslogd") {
		t.Fatalf("stderr without syslog: %q", sb.String())
	}
	pc, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	l.Info("after syslogd")
	pc.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 2048)
	n, err := pc.Read(buf)
	if err != nil || !strings.Contains(string(buf[:n]), "after syslogd") {
		t.Fatalf("syslog got %q, %v", buf[:n], err)
	}
	if strings.Contains(sb.String(), "after syslogd") {
		t.Error("a record that reached syslog also went to stderr")
	}
}
