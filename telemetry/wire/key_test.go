package wire

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLoadKey(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		os.Chmod(p, mode) // past the umask
		return p
	}
	good := write("good", "0123456789abcdef0123\n", 0o600)
	key, err := LoadKey(good)
	if err != nil || string(key) != "0123456789abcdef0123" {
		t.Errorf("LoadKey = %q, %v", key, err)
	}
	for _, c := range []struct {
		path, want string
	}{
		{write("world", "0123456789abcdef0123", 0o644), "must not be accessible by group or others"},
		{write("group", "0123456789abcdef0123", 0o640), "must not be accessible by group or others"},
		{write("short", "0123456789\n", 0o600), "at least 16"},
		{write("empty", "", 0o400), "at least 16"},
		{write("huge", strings.Repeat("k", 5000), 0o600), "larger than"},
		{filepath.Join(dir, "missing"), "no such file"},
		{dir, "not a regular file"},
	} {
		_, err := LoadKey(c.path)
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), c.path) {
			t.Errorf("LoadKey(%s) err = %v, want one naming the path and saying %q", c.path, err, c.want)
		}
	}
}
