package daemon

import (
	"io"
	"log/slog"
	"log/syslog"
	"os"
	"runtime/debug"
)

// Logger is the log of a daemon: with debug, everything to stderr (the
// program runs in the foreground); in the background, info and above to
// syslog (daemon facility), or nowhere when there is no syslog.
func Logger(name string, debug bool) *slog.Logger {
	if debug {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	var w io.Writer = io.Discard
	if sl, err := syslog.New(syslog.LOG_DAEMON|syslog.LOG_INFO, name); err == nil {
		w = sl
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// Version is the program version: set at link time with
// -ldflags "-X github.com/hoststat/hoststat/internal/daemon.version=1.2.3",
// else the module version or VCS revision the binary was built from.
func Version() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		if v := bi.Main.Version; v != "" && v != "(devel)" {
			return v
		}
		rev, dirty := "", false
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				dirty = s.Value == "true"
			}
		}
		if len(rev) > 12 {
			rev = rev[:12]
		}
		if rev != "" {
			if dirty {
				rev += "-dirty"
			}
			return "devel " + rev
		}
	}
	return "devel"
}

var version string
