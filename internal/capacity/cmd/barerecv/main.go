// Command barerecv is the capacity benchmark's bare receiver: it reads
// datagrams in recvmmsg batches with recvstats' receive buffer and does
// nothing but count them; see package internal/capacity. On SIGUSR1 it
// prints its counts as a JSON line on stdout, and once more when it stops
// on SIGTERM or SIGINT.
package main

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"syscall"

	flag "github.com/spf13/pflag"

	"github.com/hoststat/hoststat/internal/capacity"
	"github.com/hoststat/hoststat/telemetry/wire"
)

func main() {
	fs := flag.NewFlagSet("barerecv", flag.ExitOnError)
	listen := fs.String("listen", fmt.Sprintf("127.0.0.1:%d", wire.DefaultPort), "listen on `ADDR:PORT`")
	readBuffer := fs.Int("read-buffer", capacity.DefaultReadBuffer, "socket receive buffer to ask for, in `BYTES`")
	fs.Parse(os.Args[1:])
	if fs.NArg() > 0 {
		fail("unexpected argument %q", fs.Arg(0))
	}
	addr, err := netip.ParseAddrPort(*listen)
	if err != nil {
		fail("--listen %q: %v", *listen, err)
	}
	// Signals are caught before the socket shows, so a harness that waits
	// for the socket can ask for counts at once.
	sig := make(chan os.Signal, 4)
	signal.Notify(sig, syscall.SIGUSR1, syscall.SIGTERM, syscall.SIGINT)
	b, err := capacity.ListenBare(addr, *readBuffer)
	if err != nil {
		fail("%v", err)
	}
	out := json.NewEncoder(os.Stdout)
	go func() {
		for s := range sig {
			if s != syscall.SIGUSR1 {
				b.Close()
				return
			}
			out.Encode(b.Counts())
		}
	}()
	err = b.Serve()
	signal.Stop(sig)
	out.Encode(b.Counts())
	if err != nil {
		fail("%v", err)
	}
}

func fail(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "barerecv: "+format+"\n", a...)
	os.Exit(1)
}
