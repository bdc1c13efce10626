package netlab

import (
	"context"
	"testing"
)

// Serve stops the daemon on stop (once, however often it is called) and
// at the end of the test when nobody did.
func TestServe(t *testing.T) {
	var served, released int
	t.Run("stopped", func(t *testing.T) {
		stop := Serve(t, func(ctx context.Context) error { served++; <-ctx.Done(); return nil },
			func() error { released++; return nil })
		stop()
		stop()
		if served != 1 || released != 1 {
			t.Errorf("after stop: served %d, released %d; want 1, 1", served, released)
		}
	})
	t.Run("left running", func(t *testing.T) {
		Serve(t, func(ctx context.Context) error { <-ctx.Done(); return nil }, func() error { released++; return nil })
	})
	if released != 2 {
		t.Errorf("released %d times, want 2 (once by stop, once at the end of the subtest)", released)
	}
}
