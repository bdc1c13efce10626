package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path/filepath"
	"strconv"
	"time"

	"github.com/hoststat/hoststat/shm"
)

// eventLine is one event of --events --json.
type eventLine struct {
	Time  time.Time `json:"time"`
	Node  int       `json:"node"`
	Addr  string    `json:"addr,omitempty"`
	Event string    `json:"event"`
}

// followEvents prints the last `last` events recvstats published, then
// each new one as it comes, polling every interval until ctx is done: one
// line each, "TIME NODE ADDR EVENT" (the words --on-event's program gets),
// or one JSON object per line.
func followEvents(ctx context.Context, w io.Writer, stderr io.Writer, dir string, last int, interval time.Duration, asJSON bool) error {
	r, err := shm.OpenEventReader(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("no events at %s: recvstats is probably not running (or uses another --shm-dir)", filepath.Join(dir, shm.EventsFileName))
	}
	if err != nil {
		return err
	}
	defer r.Close()
	r.Back(last)
	out := bufio.NewWriter(w)
	enc := json.NewEncoder(out)
	var evs []shm.Event
	for {
		var missed uint64
		evs, missed, err = r.Poll(evs[:0])
		if missed > 0 {
			fmt.Fprintf(stderr, "beostat: %d events were overwritten before they could be shown\n", missed)
		}
		for _, e := range evs {
			addr := ""
			if e.Addr.IsValid() {
				addr = e.Addr.Addr().Unmap().String()
			}
			if asJSON {
				enc.Encode(eventLine{Time: e.Time.UTC(), Node: e.Node, Addr: addr, Event: e.Kind.String()})
				continue
			}
			if addr == "" {
				addr = "-"
			}
			out.WriteString(e.Time.UTC().Format(time.RFC3339) + " " + strconv.Itoa(e.Node) + " " + addr + " " + e.Kind.String() + "\n")
		}
		if ferr := out.Flush(); ferr != nil {
			return ferr
		}
		if err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(interval):
		}
	}
}
