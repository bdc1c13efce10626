// Command beostatus is the live view of the cluster node table that
// recvstats keeps: a full-screen grid in the terminal, or with --http a
// web page, a JSON API and Prometheus /metrics. It reads the shared-memory
// table as an ordinary user and never talks to recvstats.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	flag "github.com/spf13/pflag"

	"github.com/hoststat/hoststat/internal/daemon"
	"github.com/hoststat/hoststat/shm"
	"github.com/hoststat/hoststat/view"
)

const name = "beostatus"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

const usageHead = `Usage: beostatus [--shm-dir DIR] [--figure cpu|mem|load|net] [--http ADDR [--http-public]]

Shows every cluster node from the table recvstats keeps, live: a grid in
the terminal, or with --http a web page (with /api/nodes, /api/node/N,
/api/node/N/history and /metrics for Prometheus). Read-only; needs no
privilege.

`

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fl := flag.NewFlagSet(name, flag.ContinueOnError)
	fl.SortFlags = false
	var (
		shmDir   = fl.String("shm-dir", shm.DefaultDir, "`DIR` of the node table that recvstats writes")
		figure   = fl.StringP("figure", "f", "cpu", "colour nodes by `FIGURE`: cpu, mem, load or net")
		interval = fl.DurationP("interval", "i", time.Second, "read the table every `DURATION`")
		httpAddr = fl.String("http", "", "serve the web view, JSON API and /metrics on `ADDR` (HOST:PORT, loopback) instead of the terminal view")
		public   = fl.Bool("http-public", false, "allow --http on an address other than loopback, and requests for any host name: anyone who reaches it sees every node")
		clients  = fl.Int("max-clients", 64, "live web viewers at once (`N`); more are refused")
		_        = fl.BoolP("help", "h", false, "show this help and exit")
		_        = fl.BoolP("version", "v", false, "show the version and exit")
	)
	if code, done := daemon.ParseFlags(fl, args, usageHead, stdout, stderr); done {
		return code
	}
	bad := func(format string, a ...any) int { return daemon.UsageError(stderr, name, format, a...) }
	fig, err := view.ParseFigure(*figure)
	if err != nil {
		return bad("--figure: %v", err)
	}
	if *interval <= 0 {
		return bad("--interval %v must be positive", *interval)
	}
	if *clients < 1 {
		return bad("--max-clients %d must be at least 1", *clients)
	}
	if *httpAddr != "" {
		if err := view.CheckListen(*httpAddr, *public); err != nil {
			return bad("%v", err)
		}
	}

	src, err := view.OpenTable(*shmDir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			err = fmt.Errorf("no node table at %s: recvstats is probably not running (or uses another --shm-dir)",
				filepath.Join(*shmDir, shm.FileName))
		}
		return daemon.Failed(stderr, name, err)
	}
	defer src.Close()

	if *httpAddr != "" {
		return serve(ctx, src, view.ServerConfig{Source: src, Interval: *interval, MaxClients: *clients, Public: *public}, *httpAddr, stderr)
	}
	p := tea.NewProgram(view.NewTUI(src, *interval, fig), tea.WithAltScreen(), tea.WithContext(ctx))
	if _, err := p.Run(); err != nil && !errors.Is(err, tea.ErrProgramKilled) {
		return daemon.Failed(stderr, name, err)
	}
	return daemon.ExitOK
}

func serve(ctx context.Context, src *view.TableSource, cfg view.ServerConfig, addr string, stderr io.Writer) int {
	log := slog.New(slog.NewTextHandler(stderr, nil))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return daemon.Failed(stderr, name, err)
	}
	cfg.Logger = log
	srv := view.NewServer(cfg)
	hs := &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: time.Minute,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() { _ = srv.Run(ctx) }()
	go func() {
		<-ctx.Done()
		sctx, c := context.WithTimeout(context.Background(), 2*time.Second)
		defer c()
		_ = hs.Shutdown(sctx)
	}()
	log.Info("serving", "url", "http://"+ln.Addr().String()+"/", "table", src.Path(), "version", daemon.Version())
	if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return daemon.Failed(stderr, name, err)
	}
	return daemon.ExitOK
}
