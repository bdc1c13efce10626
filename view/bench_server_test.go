package view

import (
	"context"
	"net/http/httptest"
)

// serveBench serves srv on loopback for a benchmark.
func serveBench(srv *Server) (url string, stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { srv.Run(ctx); close(done) }()
	hs := httptest.NewServer(srv.Handler())
	return hs.URL, func() { cancel(); <-done; hs.Close() }
}
