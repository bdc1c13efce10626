package statd

import (
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// StdinIsSocket reports whether file descriptor 0 is a socket, which is how
// a daemon started by inetd finds its stdin. The NSM protocol assumes statd
// runs from boot to shutdown, so we refuse that mode (as the seed page says).
func StdinIsSocket() bool {
	var st unix.Stat_t
	if err := unix.Fstat(0, &st); err != nil {
		return false
	}
	return st.Mode&unix.S_IFMT == unix.S_IFSOCK
}

// ReadBootID returns the kernel's boot id, which changes at every boot.
func ReadBootID(path string) (string, error) {
	if path == "" {
		path = "/proc/sys/kernel/random/boot_id"
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read boot id: %w", err)
	}
	id := strings.TrimSpace(string(b))
	if id == "" {
		return "", fmt.Errorf("read boot id: %s is empty", path)
	}
	return id, nil
}
