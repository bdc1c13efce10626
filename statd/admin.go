package statd

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hoststat/hoststat/nsm"
)

// AdminSocketName is the admin socket's file name inside the state directory.
const AdminSocketName = "statd.sock"

// Status is what the admin socket answers: one consistent view of the daemon.
type Status struct {
	Name      string      `json:"name"`
	State     int32       `json:"state"`
	Pid       int         `json:"pid"`
	BootID    string      `json:"boot_id"`
	StateDir  string      `json:"state_dir"`
	Started   time.Time   `json:"started"`
	Listeners []string    `json:"listeners"`
	Metrics   string      `json:"metrics,omitempty"` // the /metrics endpoint's HOST:PORT
	Monitored []Monitored `json:"monitored"`
	Owed      []Owed      `json:"owed"`
	// Serving lists the --identity identities this statd owns and serves
	// now (their state and registrations: statdctl identities).
	Serving []string `json:"serving,omitempty"`
	// Identities: each of those with its state, the hosts monitored
	// under it and the notifications it owes (Monitored and Owed above
	// are the host's own identity's).
	Identities []IdentityStatus `json:"identities,omitempty"`
	// Counters since start: store writes that failed (each also logged),
	// callbacks delivered and given up on, HA callouts that did not fit.
	StoreErrors        uint64 `json:"store_errors"`
	CallbacksDelivered uint64 `json:"callbacks_delivered"`
	CallbacksGivenUp   uint64 `json:"callbacks_given_up"`
	HACalloutsDropped  uint64 `json:"ha_callouts_dropped"`
}

// IdentityStatus is one --identity identity this statd serves now.
type IdentityStatus struct {
	Name      string      `json:"name"`
	State     int32       `json:"state"`
	Monitored []Monitored `json:"monitored"`
	Owed      []Owed      `json:"owed"`
}

// Monitored is one host we watch and who asked.
type Monitored struct {
	MonName     string       `json:"mon_name"`
	Registrants []Registrant `json:"registrants"`
	// Liveness is what telemetry says of the host; absent without it.
	Liveness *HostLiveness `json:"liveness,omitempty"`
}

// Registrant is one SM_MON caller waiting for news of a host.
type Registrant struct {
	MyName string `json:"my_name"`
	Prog   uint32 `json:"my_prog"`
	Vers   uint32 `json:"my_vers"`
	Proc   uint32 `json:"my_proc"`
	Priv   string `json:"priv"` // hex
}

// Owed is one SM_NOTIFY we still owe a host.
type Owed struct {
	Host     string    `json:"host"`
	State    int32     `json:"state"`
	Since    time.Time `json:"since"`
	Attempts int       `json:"attempts"`
	NextTry  time.Time `json:"next_try"`
	GiveUp   time.Time `json:"give_up,omitzero"`
	LastErr  string    `json:"last_error,omitempty"`
	// Liveness is what telemetry says of the host; absent without it.
	Liveness *HostLiveness `json:"liveness,omitempty"`
}

// Admin requests: a client writes one JSON line {"op": OP} and reads one
// JSON answer, {"error": "..."} on failure. A client that writes nothing
// (or closes its side) gets the status, as before requests existed.
const (
	// AdminStatus answers a Status.
	AdminStatus = "status"
	// AdminNotify runs the reboot notification pass now (rpc.statd -n
	// while the daemon runs) and answers a NotifySummary.
	AdminNotify = "notify"
	// AdminForget ({"op":"forget","host":H}) releases host H's locks
	// (a callback with a new state to each of its registrants) and drops
	// its registrations and owed notifications, in the host's own
	// identity and every --identity served here, or with "identity":N in
	// identity N only; answers a ForgetSummary.
	AdminForget = "forget"
)

// adminRequest is the one line a client writes.
type adminRequest struct {
	Op   string `json:"op"`
	Host string `json:"host,omitempty"` // AdminForget's host
	// Identity limits AdminForget to one identity: the host's own name
	// or an --identity served here; "" for all of them.
	Identity string `json:"identity,omitempty"`
}

// adminRequestWait is how long the server waits for a request line before
// taking silence for a status request; adminRequestMax bounds the line.
const (
	adminRequestWait = 2 * time.Second
	adminRequestMax  = 4096
)

// adminServer answers every connection on the unix socket with one JSON
// answer to one request, then closes it. Only root or the daemon's own user
// may ask: the socket is 0600 in a 0700 directory and peer credentials are
// checked.
type adminServer struct {
	ln     *net.UnixListener
	path   string
	handle func(req adminRequest) (any, error)
	log    *slog.Logger
	wg     sync.WaitGroup
}

// listenAdmin serves the admin socket in dir; handle answers an op.
func listenAdmin(dir string, handle func(req adminRequest) (any, error), log *slog.Logger) (*adminServer, error) {
	path := filepath.Join(dir, AdminSocketName)
	// A stale socket from a killed daemon: we hold the store's lock, so no
	// live daemon owns it.
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	old := unix.Umask(0o177)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	unix.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	ln.SetUnlinkOnClose(true)
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	a := &adminServer{ln: ln, path: path, handle: handle, log: log}
	a.wg.Add(1)
	go a.serve()
	return a, nil
}

func (a *adminServer) serve() {
	defer a.wg.Done()
	for {
		c, err := a.ln.AcceptUnix()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			a.log.Warn("admin accept", "err", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			a.answer(c)
		}()
	}
}

func (a *adminServer) answer(c *net.UnixConn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if uid, ok := peerUID(c); !ok || (uid != 0 && uid != uint32(os.Geteuid())) {
		a.log.Warn("admin request refused", "uid", uid)
		return
	}
	req, err := readAdminRequest(c)
	enc := json.NewEncoder(c)
	if err != nil {
		a.log.Warn("admin request refused", "err", err)
		enc.Encode(map[string]string{"error": err.Error()})
		return
	}
	// A notification pass takes as long as its slowest host (bounded by
	// the notify timeout) or until the daemon stops.
	c.SetDeadline(time.Time{})
	ans, err := a.handle(req)
	c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if err != nil {
		enc.Encode(map[string]string{"error": err.Error()})
		return
	}
	enc.Encode(ans)
}

// readAdminRequest reads the request line; silence or a closed write side
// is a status request.
func readAdminRequest(c *net.UnixConn) (adminRequest, error) {
	c.SetReadDeadline(time.Now().Add(adminRequestWait))
	line, err := bufio.NewReaderSize(io.LimitReader(c, adminRequestMax), adminRequestMax).ReadBytes('\n')
	if len(bytes.TrimSpace(line)) == 0 {
		var ne net.Error
		if err == nil || errors.Is(err, io.EOF) || (errors.As(err, &ne) && ne.Timeout()) {
			return adminRequest{Op: AdminStatus}, nil
		}
		return adminRequest{}, fmt.Errorf("reading the request: %w", err)
	}
	if err != nil && !errors.Is(err, io.EOF) {
		return adminRequest{}, fmt.Errorf("reading the request: %w", err)
	}
	var req adminRequest
	if err := json.Unmarshal(line, &req); err != nil {
		return adminRequest{}, fmt.Errorf("request %q: %w", truncateForLog(line), err)
	}
	switch req.Op {
	case AdminStatus, AdminNotify:
		return req, nil
	case AdminForget:
		if err := nsm.ValidateMonName(req.Host); err != nil {
			return adminRequest{}, fmt.Errorf("forget: %w", err)
		}
		if req.Identity != "" {
			if err := nsm.ValidateMonName(req.Identity); err != nil {
				return adminRequest{}, fmt.Errorf("forget: identity: %w", err)
			}
		}
		return req, nil
	}
	return adminRequest{}, fmt.Errorf("unknown request %q", req.Op)
}

func truncateForLog(b []byte) string {
	if len(b) > 64 {
		b = b[:64]
	}
	return string(bytes.TrimSpace(b))
}

func peerUID(c *net.UnixConn) (uint32, bool) {
	raw, err := c.SyscallConn()
	if err != nil {
		return 0, false
	}
	var cred *unix.Ucred
	var cerr error
	raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	})
	if cerr != nil || cred == nil {
		return 0, false
	}
	return cred.Uid, true
}

func (a *adminServer) close() {
	a.ln.Close()
	a.wg.Wait()
}

// FetchStatus asks the daemon whose state directory is dir for its Status.
func FetchStatus(ctx context.Context, dir string) (*Status, error) {
	var st Status
	if err := askAdmin(ctx, dir, adminRequest{Op: AdminStatus}, &st); err != nil {
		return nil, err
	}
	return &st, nil
}

// errNoDaemon wraps the dial error when no daemon listens on the socket.
var errNoDaemon = errors.New("no rpc.statd running")

// askAdmin sends op to the daemon whose state directory is dir and decodes
// its answer into ans.
func askAdmin(ctx context.Context, dir string, r adminRequest, ans any) error {
	path := filepath.Join(dir, AdminSocketName)
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ECONNREFUSED) {
			err = fmt.Errorf("%w: %w", errNoDaemon, err)
		}
		return fmt.Errorf("is rpc.statd running with state directory %s? %w", dir, err)
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	req, _ := json.Marshal(r)
	if _, err := c.Write(append(req, '\n')); err != nil {
		return fmt.Errorf("admin socket %s: %w", path, err)
	}
	var raw json.RawMessage
	if err := json.NewDecoder(c).Decode(&raw); err != nil {
		return fmt.Errorf("admin socket %s: %w", path, err)
	}
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(raw, &e) == nil && e.Error != "" {
		return fmt.Errorf("rpc.statd: %s", e.Error)
	}
	if err := json.Unmarshal(raw, ans); err != nil {
		return fmt.Errorf("admin socket %s: %w", path, err)
	}
	return nil
}
