// Command beostat shows the cluster node table that recvstats keeps: a
// table of every node, one node in detail (--node), refreshed (--watch),
// or as JSON (--json).
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
