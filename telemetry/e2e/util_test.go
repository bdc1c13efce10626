package e2e_test

import (
	"bytes"
	"strings"
	"sync"
)

func contains(s, sub string) bool { return strings.Contains(s, sub) }

// syncBuffer is a bytes.Buffer a process can write while the test reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
