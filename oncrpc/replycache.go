package oncrpc

import (
	"net/netip"
	"sync"
)

// DefaultReplyCacheSize is how many calls of procedures registered with
// HandleOnce a Server remembers the replies of.
const DefaultReplyCacheSize = 256

// HandleOnce registers h like Handle, for a procedure that is not
// idempotent (SM_SIMU_CRASH moves the state number): a retransmission of a
// call it ran, the same xid from the same caller address and port over the
// same transport, gets the first call's reply instead of running it again,
// or no reply while the first still runs (the caller retransmits). The
// cache holds the last ReplyCacheSize such calls, whatever their caller;
// a TCP client reconnecting comes from another port and is a new caller.
func (s *Server) HandleOnce(prog, vers, proc uint32, h Handler) {
	s.Handle(prog, vers, proc, h)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.once == nil {
		s.once = map[[3]uint32]bool{}
		n := s.ReplyCacheSize
		if n <= 0 {
			n = DefaultReplyCacheSize
		}
		s.replies = newReplyCache(n)
	}
	s.once[[3]uint32{prog, vers, proc}] = true
}

func (s *Server) isOnce(h *CallHeader) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.once[[3]uint32{h.Program, h.Version, h.Procedure}]
}

type replyKey struct {
	remote                netip.AddrPort
	transport             string
	xid, prog, vers, proc uint32
}

// replyCache is a duplicate request cache of bounded size: the oldest
// entry goes first.
type replyCache struct {
	mu    sync.Mutex
	max   int
	m     map[replyKey]*cachedReply
	order []replyKey // ring of the keys in m, oldest at next
	next  int
}

type cachedReply struct {
	done  bool
	reply []byte // nil: dropped
}

func newReplyCache(max int) *replyCache {
	return &replyCache{max: max, m: make(map[replyKey]*cachedReply, max)}
}

// begin reports whether the call k is new (the caller runs it and then
// calls finish), and otherwise the reply to give: the first call's, or nil
// while it runs.
func (c *replyCache) begin(k replyKey) (fresh bool, reply []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e := c.m[k]; e != nil {
		return false, e.reply
	}
	if len(c.order) < c.max {
		c.order = append(c.order, k)
	} else {
		delete(c.m, c.order[c.next])
		c.order[c.next] = k
		c.next = (c.next + 1) % c.max
	}
	c.m[k] = &cachedReply{}
	return true, nil
}

func (c *replyCache) finish(k replyKey, reply []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e := c.m[k]; e != nil && !e.done {
		e.done, e.reply = true, reply
	}
}
