package etcdstore

import (
	"context"
	"errors"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// retryEvery is the pause between attempts at a request etcd could not
// serve for a moment.
const retryEvery = 100 * time.Millisecond

// retry runs fn until it succeeds, fails for good, or ctx ends. etcd's
// client does not retry transactions itself (they are not idempotent in
// general), but a leader change or a member going away answers
// Unavailable, and one member down must change nothing. Ours are safe to
// repeat: a write that did commit before its answer was lost makes the
// repeat fail its comparisons, and the batch is read again; a state move
// repeated that way moves on once more, skipping a number, never reusing one.
func retry(ctx context.Context, fn func() error) error {
	for {
		err := fn()
		if err == nil || !transient(err) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(retryEvery):
		}
	}
}

// transient says whether etcd said "not now" rather than "no".
func transient(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return false
	}
	var ee rpctypes.EtcdError
	if errors.As(err, &ee) {
		return ee.Code() == codes.Unavailable
	}
	return status.Code(err) == codes.Unavailable
}
