package wire

import (
	"bytes"
	"fmt"
	"io"
	"os"
)

// MinKeyLen is the shortest shared key LoadKey accepts.
const MinKeyLen = 16

// maxKeyFile bounds what LoadKey reads.
const maxKeyFile = 4096

// LoadKey reads a shared key from a file that only its owner may access.
// Trailing white space is not part of the key, so a key written as text
// with a final newline works on every host that loads it the same way.
func LoadKey(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("key file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("key file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("key file %s is not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("key file %s has mode %04o: it must not be accessible by group or others (chmod 600 %s)", path, perm, path)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxKeyFile+1))
	if err != nil {
		return nil, fmt.Errorf("key file %s: %w", path, err)
	}
	if len(b) > maxKeyFile {
		return nil, fmt.Errorf("key file %s is larger than %d bytes", path, maxKeyFile)
	}
	b = bytes.TrimRight(b, " \t\r\n")
	if len(b) < MinKeyLen {
		return nil, fmt.Errorf("key file %s holds %d bytes of key: at least %d are needed", path, len(b), MinKeyLen)
	}
	return b, nil
}
