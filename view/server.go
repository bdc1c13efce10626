package view

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/hoststat/hoststat/internal/loopback"
)

//go:embed web
var webFS embed.FS

// ServerConfig sets up the web view.
type ServerConfig struct {
	Source   Source
	Interval time.Duration // how often the table is read for the live stream
	// MaxClients bounds the live streams open at once; more are refused
	// with 503. Each stream holds at most streamQueue frames.
	MaxClients int
	// Public serves requests for any Host. Otherwise only requests naming
	// a loopback address or localhost are answered: a web page elsewhere
	// cannot rebind its own name to 127.0.0.1 and read the cluster's
	// status through the visitor's browser (DNS rebinding).
	Public bool
	Logger *slog.Logger
}

// streamQueue is how many frames a slow viewer may fall behind before it
// is cut off; its browser reconnects and starts again from a full frame.
const streamQueue = 8

// Server is the read-only web view: the page, the live stream of deltas
// (/events, server-sent events), the JSON API and /metrics.
type Server struct {
	cfg     ServerConfig
	metrics http.Handler

	mu   sync.Mutex
	enc  *Encoder
	subs map[chan []byte]struct{}
}

// NewServer returns the web view of cfg.Source.
func NewServer(cfg ServerConfig) *Server {
	if cfg.Interval <= 0 {
		cfg.Interval = time.Second
	}
	if cfg.MaxClients <= 0 {
		cfg.MaxClients = 64
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Server{
		cfg:     cfg,
		metrics: newMetricsHandler(cfg.Source, cfg.Logger),
		enc:     NewEncoder(),
		subs:    map[chan []byte]struct{}{},
	}
}

// Handler serves every page of the web view; anything but GET or HEAD is
// refused.
func (s *Server) Handler() http.Handler {
	static, _ := fs.Sub(webFS, "web")
	mux := http.NewServeMux()
	mux.Handle("GET /", http.FileServerFS(static))
	mux.HandleFunc("GET /api/nodes", s.apiNodes)
	mux.HandleFunc("GET /api/node/{n}", s.apiNode)
	mux.HandleFunc("GET /api/node/{n}/history", s.apiHistory)
	mux.HandleFunc("GET /events", s.events)
	mux.Handle("GET /metrics", s.metrics)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			h.Set("Allow", "GET, HEAD")
			http.Error(w, "read-only: only GET and HEAD", http.StatusMethodNotAllowed)
			return
		}
		if !s.cfg.Public && !loopbackHost(r.Host) {
			http.Error(w, fmt.Sprintf("host %q is not a loopback address or localhost (beostatus --http-public serves any)", r.Host), http.StatusMisdirectedRequest)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(v)
}

// NodesReply is what /api/nodes returns.
type NodesReply struct {
	Time             time.Time `json:"time"`
	DownAfterSeconds float64   `json:"down_after_seconds"`
	WriterAlive      bool      `json:"writer_alive"`
	Nodes            []Node    `json:"nodes"`
}

func (s *Server) apiNodes(w http.ResponseWriter, r *http.Request) {
	snap, err := s.cfg.Source.Snapshot()
	if err != nil {
		s.cfg.Logger.Warn("reading the table", "err", err)
		http.Error(w, "reading the node table: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	writeJSON(w, NodesReply{snap.Time, snap.DownAfter.Seconds(), snap.WriterAlive, snap.Nodes})
}

// DetailReply is what /api/node/N returns.
type DetailReply struct {
	Detail
}

// nodeNumber is the {n} of a request's path, or false after answering 400.
func nodeNumber(w http.ResponseWriter, r *http.Request) (int, bool) {
	n, err := strconv.Atoi(r.PathValue("n"))
	if err != nil || n < 0 {
		http.Error(w, fmt.Sprintf("node %q is not a node number", r.PathValue("n")), http.StatusBadRequest)
		return 0, false
	}
	return n, true
}

func (s *Server) apiNode(w http.ResponseWriter, r *http.Request) {
	n, ok := nodeNumber(w, r)
	if !ok {
		return
	}
	d, err := s.cfg.Source.Detail(n)
	if errors.Is(err, ErrNoNode) {
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	}
	if err != nil {
		http.Error(w, "reading the node table: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	writeJSON(w, DetailReply{Detail: d})
}

// apiHistory answers /api/node/N/history[?since=DUR]: the node's two
// chart series, from the history file. since (a duration back from now,
// default and at most 24h) shortens the one-minute series; each series
// holds at most maxSeriesPoints points.
func (s *Server) apiHistory(w http.ResponseWriter, r *http.Request) {
	n, ok := nodeNumber(w, r)
	if !ok {
		return
	}
	since := MinuteWindow
	if v := r.URL.Query().Get("since"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			http.Error(w, fmt.Sprintf("since %q is not a positive duration (like 15m or 24h)", v), http.StatusBadRequest)
			return
		}
		since = min(d, MinuteWindow)
	}
	hs, ok := s.cfg.Source.(HistorySource)
	if !ok {
		http.Error(w, ErrNoHistory.Error(), http.StatusNotFound)
		return
	}
	now := time.Now()
	h, err := hs.History(n, now)
	if errors.Is(err, ErrNoHistory) {
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	}
	if err != nil {
		http.Error(w, "reading the history: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	h.Minutes.trim(now.Add(-since).Unix())
	h.Fine.trim(now.Add(-since).Unix())
	writeJSON(w, h)
}

// step reads the table and sends the delta to every stream; the caller
// holds s.mu. A stream that cannot keep up is closed.
func (s *Server) step() error {
	snap, err := s.cfg.Source.Snapshot()
	if err != nil {
		return err
	}
	f := s.enc.Next(&snap)
	if len(s.subs) == 0 {
		return nil
	}
	msg := sseMessage("delta", f)
	for ch := range s.subs {
		select {
		case ch <- msg:
		default:
			close(ch)
			delete(s.subs, ch)
		}
	}
	return nil
}

func sseMessage(event string, f Frame) []byte {
	b, _ := json.Marshal(f)
	out := make([]byte, 0, len(b)+32)
	out = fmt.Appendf(out, "event: %s\ndata: ", event)
	out = append(out, b...)
	return append(out, "\n\n"...)
}

// Run reads the table every Interval while someone watches the stream,
// until ctx is done.
func (s *Server) Run(ctx context.Context) error {
	t := time.NewTicker(s.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			s.mu.Lock()
			for ch := range s.subs {
				close(ch)
				delete(s.subs, ch)
			}
			s.mu.Unlock()
			return nil
		case <-t.C:
		}
		s.mu.Lock()
		if len(s.subs) > 0 {
			if err := s.step(); err != nil {
				s.cfg.Logger.Warn("reading the table", "err", err)
			}
		}
		s.mu.Unlock()
	}
}

// subscribe starts a stream: a full frame of a fresh snapshot first, then
// every delta after it.
func (s *Server) subscribe() (chan []byte, []byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.subs) >= s.cfg.MaxClients {
		return nil, nil, errors.New("too many live viewers")
	}
	if err := s.step(); err != nil {
		return nil, nil, err
	}
	ch := make(chan []byte, streamQueue)
	s.subs[ch] = struct{}{}
	return ch, sseMessage("full", s.enc.Full()), nil
}

func (s *Server) unsubscribe(ch chan []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.subs[ch]; ok {
		delete(s.subs, ch)
		close(ch)
	}
}

func (s *Server) events(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodHead {
		w.Header().Set("Content-Type", "text/event-stream")
		return
	}
	ch, full, err := s.subscribe()
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	defer s.unsubscribe(ch)
	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	write := func(b []byte) bool {
		_ = rc.SetWriteDeadline(time.Now().Add(10 * time.Second))
		if _, err := w.Write(b); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	if !write([]byte("retry: 2000\n\n")) || !write(full) {
		return
	}
	for {
		select {
		case <-r.Context().Done():
			return
		case msg, ok := <-ch:
			if !ok || !write(msg) {
				return
			}
		}
	}
}

// loopbackHost reports whether a request's Host names this machine by a
// loopback address or as localhost.
func loopbackHost(hostport string) bool { return loopback.Host(hostport) }

// CheckListen refuses an address that is not loopback unless public: the
// view is read-only, but it shows every node of the cluster to whoever
// can reach it.
func CheckListen(addr string, public bool) error {
	return loopback.Endpoint{Flag: "--http", PublicFlag: "--http-public", Shows: "the cluster's status", Example: "127.0.0.1:8040"}.CheckListen(addr, public)
}
