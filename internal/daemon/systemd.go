package daemon

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"syscall"

	sd "github.com/coreos/go-systemd/v22/daemon"
)

// UnderSystemd reports whether systemd started this process as a
// Type=notify service: it then stays in the foreground (systemd tracks the
// main process) and reports readiness by sd_notify instead of forking.
func UnderSystemd() bool { return os.Getenv("NOTIFY_SOCKET") != "" }

// notifySystemd sends state (READY=1, STOPPING=1, STATUS=...) to systemd
// when it asked for it; elsewhere it does nothing.
func notifySystemd(state string) {
	if UnderSystemd() {
		_, _ = sd.SdNotify(false, state)
	}
}

// journalStream reports whether w is the stream systemd connected to the
// journal (JOURNAL_STREAM names its device and inode), so records can go
// there with priority prefixes and without a second timestamp.
func journalStream(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	dev, ino, ok := strings.Cut(os.Getenv("JOURNAL_STREAM"), ":")
	if !ok {
		return false
	}
	var st syscall.Stat_t
	if syscall.Fstat(int(f.Fd()), &st) != nil {
		return false
	}
	d, err1 := strconv.ParseUint(dev, 10, 64)
	i, err2 := strconv.ParseUint(ino, 10, 64)
	return err1 == nil && err2 == nil && uint64(st.Dev) == d && st.Ino == i
}

// journalWriter writes syslog-priority lines the way journald reads a
// service's stderr: "<3>message" (sd-daemon(3) prefixes).
type journalWriter struct{ w io.Writer }

func (j journalWriter) line(prio int, msg string) error {
	_, err := fmt.Fprintf(j.w, "<%d>%s\n", prio, msg)
	return err
}

func (j journalWriter) Err(m string) error     { return j.line(3, m) }
func (j journalWriter) Warning(m string) error { return j.line(4, m) }
func (j journalWriter) Info(m string) error    { return j.line(6, m) }
func (j journalWriter) Debug(m string) error   { return j.line(7, m) }
