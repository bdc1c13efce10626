package etcdstore

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
)

// Scheme begins a --store value that names etcd.
const Scheme = "etcd://"

// Config is where the store lives and how to reach it: --store
// etcd://HOST:PORT[,HOST:PORT…]/PREFIX plus the client options etcdctl
// takes (--cacert, --cert, --key, --user), here as --etcd-cacert,
// --etcd-cert, --etcd-key, --etcd-user and --etcd-password-file.
type Config struct {
	Endpoints []string // host:port
	Prefix    string   // begins with '/', no trailing '/'

	CACert, Cert, Key string // PEM files; any set means TLS
	User              string
	PasswordFile      string // read at Client; first line is the password
}

// IsURL reports whether a --store value names etcd.
func IsURL(s string) bool { return strings.HasPrefix(s, Scheme) }

// ParseURL parses etcd://HOST:PORT[,HOST:PORT…]/PREFIX. Every endpoint
// needs a port; the prefix is at least one path element and holds no
// empty, "." or ".." elements, so two spellings cannot name one prefix.
func ParseURL(s string) (Config, error) {
	rest, ok := strings.CutPrefix(s, Scheme)
	if !ok {
		return Config{}, fmt.Errorf("--store %q: not an etcd URL (want %sHOST:PORT[,HOST:PORT...]/PREFIX)", s, Scheme)
	}
	hosts, prefix, ok := strings.Cut(rest, "/")
	if !ok || prefix == "" {
		return Config{}, fmt.Errorf("--store %q: no key prefix after the endpoints (want %sHOST:PORT/PREFIX)", s, Scheme)
	}
	var c Config
	for _, h := range strings.Split(hosts, ",") {
		host, port, err := net.SplitHostPort(h)
		if err != nil || host == "" {
			return Config{}, fmt.Errorf("--store %q: endpoint %q is not HOST:PORT", s, h)
		}
		if p, err := strconv.ParseUint(port, 10, 16); err != nil || p == 0 {
			return Config{}, fmt.Errorf("--store %q: endpoint %q has bad port %q", s, h, port)
		}
		c.Endpoints = append(c.Endpoints, h)
	}
	for _, el := range strings.Split(strings.TrimSuffix(prefix, "/"), "/") {
		if el == "" || el == "." || el == ".." {
			return Config{}, fmt.Errorf("--store %q: key prefix %q has an empty, '.' or '..' element", s, prefix)
		}
		for _, r := range el {
			if r < 0x21 || r > 0x7e {
				return Config{}, fmt.Errorf("--store %q: key prefix %q holds a space or a non-printable character", s, prefix)
			}
		}
	}
	c.Prefix = "/" + strings.TrimSuffix(prefix, "/")
	return c, nil
}

// Client connects to the endpoints with the configured TLS and
// credentials. Files are opened without following symbolic links.
func (c Config) Client() (*clientv3.Client, error) {
	// The library's own zap logging is off: its errors come back to the
	// caller, which logs through slog (and a command's error stays one line).
	cc := clientv3.Config{Endpoints: c.Endpoints, DialTimeout: 5 * time.Second, DialKeepAliveTime: 5 * time.Second, DialKeepAliveTimeout: 5 * time.Second,
		DialOptions: DialOptions(), Logger: zap.NewNop()}
	if c.CACert != "" || c.Cert != "" || c.Key != "" {
		if (c.Cert == "") != (c.Key == "") {
			return nil, errors.New("etcd: --etcd-cert and --etcd-key go together")
		}
		for _, f := range []string{c.CACert, c.Cert, c.Key} {
			if err := checkFile(f); err != nil {
				return nil, err
			}
		}
		info := transport.TLSInfo{TrustedCAFile: c.CACert, CertFile: c.Cert, KeyFile: c.Key}
		cfg, err := info.ClientConfig()
		if err != nil {
			return nil, fmt.Errorf("etcd: TLS: %w", err)
		}
		cc.TLS = cfg
	}
	if c.User != "" {
		if c.PasswordFile == "" {
			return nil, errors.New("etcd: --etcd-user needs --etcd-password-file")
		}
		pw, err := readPassword(c.PasswordFile)
		if err != nil {
			return nil, err
		}
		cc.Username, cc.Password = c.User, pw
	} else if c.PasswordFile != "" {
		return nil, errors.New("etcd: --etcd-password-file needs --etcd-user")
	}
	cli, err := clientv3.New(cc)
	if err != nil {
		return nil, fmt.Errorf("etcd %s: %w", strings.Join(c.Endpoints, ","), err)
	}
	return cli, nil
}

// checkFile refuses a symbolic link (a root daemon does not follow one).
func checkFile(path string) error {
	if path == "" {
		return nil
	}
	fi, err := os.Lstat(path)
	if err != nil {
		return fmt.Errorf("etcd: %w", err)
	}
	if fi.Mode()&os.ModeSymlink != 0 {
		return fmt.Errorf("etcd: %s is a symbolic link, which rpc.statd does not follow", path)
	}
	return nil
}

// readPassword reads the first line of a password file that only its
// owner can read or write.
func readPassword(path string) (string, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0)
	if err != nil {
		return "", fmt.Errorf("etcd: password file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("etcd: password file: %w", err)
	}
	if !fi.Mode().IsRegular() || fi.Mode().Perm()&0o077 != 0 {
		return "", fmt.Errorf("etcd: password file %s must be a regular file readable by its owner only (mode %04o): chmod 600 %s", path, fi.Mode().Perm(), path)
	}
	b := make([]byte, 4097)
	n, _ := f.Read(b)
	if n > 4096 {
		return "", fmt.Errorf("etcd: password file %s is longer than 4096 bytes", path)
	}
	pw, _, _ := strings.Cut(string(b[:n]), "\n")
	pw = strings.TrimSuffix(pw, "\r")
	if pw == "" {
		return "", fmt.Errorf("etcd: password file %s is empty", path)
	}
	return pw, nil
}

// DialOptions cap gRPC's reconnection backoff (120 s by default) at two
// seconds: an etcd member back from a restart is used again at once, not
// minutes later, which is what a statd acknowledging SM_MONs needs.
func DialOptions() []grpc.DialOption {
	bc := backoff.DefaultConfig
	bc.MaxDelay = 2 * time.Second
	return []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{Backoff: bc, MinConnectTimeout: 2 * time.Second})}
}
