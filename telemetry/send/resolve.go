package send

import (
	"context"
	"net/netip"
	"slices"
	"time"
)

// LookupFunc resolves a host name, as net.Resolver.LookupNetIP.
type LookupFunc func(ctx context.Context, network, host string) ([]netip.Addr, error)

// DefaultResolveEvery is how often names of masters that resolved are
// looked up again, to follow a master that moves.
const DefaultResolveEvery = 5 * time.Minute

// Retries of names that do not resolve yet (the name service may not be up
// when a node boots): soon at first, then every half minute.
const (
	firstRetry = 2 * time.Second
	maxRetry   = 30 * time.Second
)

// resolve looks the names of masters up until ctx is done, and sends the
// addresses of those that resolved on out whenever they change. A name
// that stops resolving keeps its last address.
func (s *Sender) resolve(ctx context.Context, out chan []netip.AddrPort) {
	names := s.cfg.MasterNames
	addrs := make([]netip.AddrPort, len(names))
	warned := make([]bool, len(names))
	retry := firstRetry
	var sent []netip.AddrPort
	for {
		missing := false
		for i, m := range names {
			lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			a, err := resolveMaster(lctx, s.cfg.Lookup, m)
			cancel()
			switch {
			case ctx.Err() != nil:
				return
			case err != nil && !addrs[i].IsValid():
				missing = true
				if !warned[i] {
					warned[i] = true
					s.log.Warn("master does not resolve yet; retrying", "master", m.String(), "err", err)
				}
			case err != nil:
				s.log.Debug("master does not resolve; keeping its address", "master", m.String(), "addr", addrs[i].String(), "err", err)
			case a != addrs[i]:
				if addrs[i].IsValid() {
					s.log.Info("master moved", "master", m.String(), "from", addrs[i].String(), "to", a.String())
				} else {
					s.log.Info("master resolved", "master", m.String(), "addr", a.String())
				}
				addrs[i] = a
			}
		}
		var now []netip.AddrPort
		for _, a := range addrs {
			if a.IsValid() {
				now = append(now, a)
			}
		}
		if !slices.Equal(now, sent) {
			select {
			case <-out: // replace an update not yet taken
			default:
			}
			out <- now
			sent = now
		}
		wait := s.cfg.ResolveEvery
		if missing {
			wait, retry = retry, min(2*retry, maxRetry)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}
