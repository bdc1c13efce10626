package nfsutils

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// DefaultConfPath is nfs-utils' configuration file.
const DefaultConfPath = "/etc/nfs.conf"

// maxConfSize bounds the configuration file read.
const maxConfSize = 1 << 20

// Conf is the part of nfs.conf rpc.statd uses: the [statd] and
// [sm-notify] sections. A key absent from the file is absent from the map.
type Conf struct {
	Statd    map[string]string
	SMNotify map[string]string
}

// ReadConf reads an nfs.conf file. A missing file is an empty Conf. Keys
// are lower-cased; values lose surrounding quotes and blanks; "#" and ";"
// start comments; other sections are ignored ("include" is not followed:
// rpc.statd takes its options from the main file only).
func ReadConf(path string) (Conf, error) {
	c := Conf{Statd: map[string]string{}, SMNotify: map[string]string{}}
	// /etc is root's: a symbolic link there (configuration management
	// often makes one) is followed, unlike in a state directory.
	b, err := readConfFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return c, nil
	}
	if err != nil {
		return c, fmt.Errorf("%s: %w", path, err)
	}
	var sect map[string]string
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 4096), maxConfSize)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		if line[0] == '[' {
			end := strings.IndexByte(line, ']')
			if end < 0 {
				return c, fmt.Errorf("%s:%d: section header %q lacks ']'", path, n, line)
			}
			name, _, _ := strings.Cut(strings.TrimSpace(line[1:end]), " ")
			switch strings.ToLower(name) {
			case "statd":
				sect = c.Statd
			case "sm-notify":
				sect = c.SMNotify
			default:
				sect = nil
			}
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return c, fmt.Errorf("%s:%d: %q is not key = value", path, n, line)
		}
		if sect == nil {
			continue
		}
		v = strings.TrimSpace(v)
		if i := strings.IndexAny(v, "#;"); i >= 0 && !strings.HasPrefix(v, `"`) {
			v = strings.TrimSpace(v[:i])
		}
		if len(v) >= 2 && v[0] == '"' && strings.LastIndexByte(v, '"') > 0 {
			v = v[1:strings.LastIndexByte(v, '"')]
		}
		sect[strings.ToLower(strings.TrimSpace(k))] = v
	}
	if err := sc.Err(); err != nil {
		return c, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// Get returns the [statd] value of key, and for "outgoing-port" the
// [sm-notify] one when [statd] has none (nfs-utils' statd hands its own to
// sm-notify, which otherwise uses its section's).
func (c Conf) Get(key string) (string, bool) {
	if v, ok := c.Statd[key]; ok {
		return v, true
	}
	if key == "outgoing-port" {
		v, ok := c.SMNotify[key]
		return v, ok
	}
	return "", false
}

func readConfFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if st, err := f.Stat(); err != nil || !st.Mode().IsRegular() {
		return nil, errNotRegular
	}
	b, err := io.ReadAll(io.LimitReader(f, maxConfSize+1))
	if err == nil && len(b) > maxConfSize {
		err = fmt.Errorf("larger than %d bytes", maxConfSize)
	}
	return b, err
}
