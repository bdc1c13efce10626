package daemon

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"github.com/spf13/pflag"
)

// DefaultConfigFile is where every hoststat command reads its defaults:
// one section per command, "option = value" for any long option.
const DefaultConfigFile = "/etc/hoststat.conf"

// ConfigSections are the sections hoststat.conf(5) may hold; any other
// section name is a mistake worth reporting, not ignoring.
var ConfigSections = []string{"recvstats", "sendstats", "beostat", "beostatus", "rpc.statd", "statdctl"}

// maxConfigSize bounds what a command reads from its configuration file.
const maxConfigSize = 1 << 20

// ConfigError names the file and line of a bad configuration entry.
type ConfigError struct {
	File string
	Line int
	Msg  string
}

func (e *ConfigError) Error() string {
	if e.Line == 0 {
		return fmt.Sprintf("%s: %s", e.File, e.Msg)
	}
	return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
}

// notFromConfig are flags that make no sense in a file.
var notFromConfig = map[string]bool{"help": true, "version": true, "config": true}

// ApplyConfig sets each flag of fs that the command line left unset from
// the [section] of the file at path, so the command line always wins. A
// missing file is not an error unless required. Keys are long option
// names; options that take a list (repeatable on the command line) may
// repeat; any other key given twice, an unknown key or section, or a value
// the flag rejects is an error naming file:line.
func ApplyConfig(flags *pflag.FlagSet, path, section string, required bool) error {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) && !required {
			return nil
		}
		return &ConfigError{File: path, Msg: err.Error()}
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Size() > maxConfigSize {
		return &ConfigError{File: path, Msg: fmt.Sprintf("larger than %d bytes", maxConfigSize)}
	}
	known := map[string]bool{}
	for _, s := range ConfigSections {
		known[s] = true
	}
	cmdline := map[string]bool{}
	flags.Visit(func(f *pflag.Flag) { cmdline[f.Name] = true })
	seen := map[string]int{}
	cur := ""
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 4096), maxConfigSize)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		bad := func(format string, a ...any) error {
			return &ConfigError{File: path, Line: n, Msg: fmt.Sprintf(format, a...)}
		}
		if line[0] == '[' {
			if !strings.HasSuffix(line, "]") {
				return bad("section header %q lacks its closing ]", line)
			}
			cur = strings.TrimSpace(line[1 : len(line)-1])
			if !known[cur] {
				return bad("unknown section [%s] (sections: %s)", cur, strings.Join(ConfigSections, ", "))
			}
			continue
		}
		key, value, ok := strings.Cut(line, "=")
		if !ok {
			return bad("%q is not \"option = value\"", line)
		}
		key, value = strings.TrimSpace(key), unquote(strings.TrimSpace(value))
		if cur == "" {
			return bad("option %q is outside any [section]", key)
		}
		if cur != section {
			continue
		}
		fl := flags.Lookup(key)
		if fl == nil || notFromConfig[key] || fl.Hidden {
			return bad("unknown option %q in [%s]", key, section)
		}
		list := strings.HasSuffix(fl.Value.Type(), "Slice") || strings.HasSuffix(fl.Value.Type(), "Array")
		if first, dup := seen[key]; dup && !list {
			return bad("option %q set twice (first on line %d)", key, first)
		}
		seen[key] = n
		if cmdline[key] || (list && value == "") {
			continue // an empty list entry adds nothing
		}
		if err := flags.Set(key, value); err != nil {
			return bad("option %q: %q is not a valid %s", key, value, fl.Value.Type())
		}
	}
	if err := sc.Err(); err != nil {
		return &ConfigError{File: path, Msg: err.Error()}
	}
	return nil
}

// unquote strips one pair of matching double or single quotes, so values
// with leading or trailing spaces can be written.
func unquote(v string) string {
	if len(v) >= 2 && (v[0] == '"' || v[0] == '\'') && v[len(v)-1] == v[0] {
		return v[1 : len(v)-1]
	}
	return v
}
