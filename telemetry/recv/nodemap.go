package recv

import (
	"bufio"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strconv"
	"strings"
)

// NodeMap fixes the node number of senders that do not send one, by their
// IP address (the port is ignored: it changes when sendstats restarts).
type NodeMap map[netip.Addr]int

// LoadNodeMap reads a node map file: one "NODE ADDRESS" pair per line,
// '#' starts a comment, blank lines are ignored. Errors name file:line.
func LoadNodeMap(path string) (NodeMap, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("node map: %w", err)
	}
	defer f.Close()
	return ParseNodeMap(f, path)
}

// ParseNodeMap parses the node map format from r; name is used in errors.
func ParseNodeMap(r io.Reader, name string) (NodeMap, error) {
	m := NodeMap{}
	nodes := map[int]int{} // node → line that claimed it
	sc := bufio.NewScanner(r)
	line := 0
	for sc.Scan() {
		line++
		text := sc.Text()
		if i := strings.IndexByte(text, '#'); i >= 0 {
			text = text[:i]
		}
		fields := strings.Fields(text)
		if len(fields) == 0 {
			continue
		}
		if len(fields) != 2 {
			return nil, fmt.Errorf("%s:%d: want \"NODE ADDRESS\", got %d fields", name, line, len(fields))
		}
		n, err := strconv.Atoi(fields[0])
		if err != nil || n < 0 || n >= MaxNodes {
			return nil, fmt.Errorf("%s:%d: node number %q is not in 0..%d", name, line, fields[0], MaxNodes-1)
		}
		a, err := netip.ParseAddr(fields[1])
		if err != nil {
			return nil, fmt.Errorf("%s:%d: address %q: %v", name, line, fields[1], err)
		}
		a = a.Unmap().WithZone("")
		if prev, ok := m[a]; ok {
			return nil, fmt.Errorf("%s:%d: address %s already mapped to node %d", name, line, a, prev)
		}
		if l, ok := nodes[n]; ok {
			return nil, fmt.Errorf("%s:%d: node %d already mapped on line %d", name, line, n, l)
		}
		m[a] = n
		nodes[n] = line
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s:%d: %w", name, line+1, err)
	}
	return m, nil
}
