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

// recvstatsStats is --stats: recvstats' own counters from the table's
// header.
type recvstatsStats struct {
	Table         string            `json:"table"`
	Nodes         int               `json:"nodes"`
	Capacity      int               `json:"capacity"`
	NodesUp       int               `json:"nodes_up"`
	NodesDown     int               `json:"nodes_down"`
	Received      uint64            `json:"received"`
	Stored        uint64            `json:"stored"`
	Drops         map[string]uint64 `json:"drops"`
	EventOverflow uint64            `json:"event_overflow"`
	ReadBuffer    int               `json:"read_buffer"`
}

// showStats prints recvstats' counters, "name value" a line, or one
// JSON object.
func showStats(w io.Writer, info shm.Info, asJSON bool) error {
	c := info.Counters
	s := recvstatsStats{Table: info.Path, Nodes: info.Nodes, Capacity: info.Capacity, NodesUp: c.NodesUp, NodesDown: c.NodesDown,
		Received: c.Received, Stored: c.Stored, Drops: map[string]uint64{"kernel": info.KernelDrops},
		EventOverflow: c.EventOverflow, ReadBuffer: info.ReadBuffer}
	for i, name := range shm.DropReasons {
		s.Drops[name] = c.Drops[i]
	}
	if asJSON {
		return json.NewEncoder(w).Encode(s)
	}
	out := bufio.NewWriter(w)
	fmt.Fprintf(out, "table %s\nnodes %d\ncapacity %d\nnodes_up %d\nnodes_down %d\nreceived %d\nstored %d\n",
		printable(s.Table), s.Nodes, s.Capacity, s.NodesUp, s.NodesDown, s.Received, s.Stored)
	fmt.Fprintf(out, "drops_kernel %d\n", info.KernelDrops)
	for i, name := range shm.DropReasons {
		fmt.Fprintf(out, "drops_%s %d\n", name, c.Drops[i])
	}
	fmt.Fprintf(out, "event_overflow %d\nread_buffer %d\n", s.EventOverflow, s.ReadBuffer)
	return out.Flush()
}
