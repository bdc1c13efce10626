package daemon

import (
	"runtime/debug"
)

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
