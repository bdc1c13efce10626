package daemon

import (
	"fmt"
	"path/filepath"

	"github.com/spf13/pflag"
)

// AbsPaths makes the relative path flags named absolute, since a daemon in
// the background works from /. It sets each to its absolute value and
// returns them as "--name=value" arguments, to append to the command line
// the background process is started with (later flags win).
func AbsPaths(fs *pflag.FlagSet, names ...string) ([]string, error) {
	var out []string
	for _, n := range names {
		f := fs.Lookup(n)
		if f == nil || f.Value.String() == "" {
			continue
		}
		if filepath.IsAbs(f.Value.String()) {
			continue
		}
		abs, err := filepath.Abs(f.Value.String())
		if err != nil {
			return nil, fmt.Errorf("--%s %s: %w", n, f.Value.String(), err)
		}
		if err := f.Value.Set(abs); err != nil {
			return nil, fmt.Errorf("--%s: %w", n, err)
		}
		out = append(out, "--"+n+"="+abs)
	}
	return out, nil
}
