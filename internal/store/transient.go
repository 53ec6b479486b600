package store

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"syscall"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// transientCodes are SQLSTATEs after which the same statement may well succeed: a lost
// serialisation race or deadlock, a lock or statement timeout, a server that is starting,
// shutting down or full, a session an administrator (or the reconciler) ended.
var transientCodes = map[string]bool{
	"40001": true, // serialization_failure
	"40P01": true, // deadlock_detected
	"55P03": true, // lock_not_available (lock_timeout)
	"57014": true, // query_canceled (statement_timeout; a cancelled context is checked first)
	"57P01": true, // admin_shutdown (pg_terminate_backend, fast shutdown)
	"57P02": true, // crash_shutdown
	"57P03": true, // cannot_connect_now (starting up)
	"53300": true, // too_many_connections
	"53400": true, // configuration_limit_exceeded
	"58000": true, // system_error
	"58030": true, // io_error
}

// IsTransient reports whether err is worth retrying the same statement for: one of
// transientCodes, any connection-class error (08…), or a network or connection failure before
// or during the statement. A cancelled or expired context is never transient: the caller is
// stopping.
func IsTransient(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return transientCodes[pe.Code] || strings.HasPrefix(pe.Code, "08")
	}
	var ce *pgconn.ConnectError
	if errors.As(err, &ce) {
		return true
	}
	if pgconn.SafeToRetry(err) || pgconn.Timeout(err) {
		return true
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return true
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EPIPE) {
		return true
	}
	// pgx reports a connection it closed after a fatal error this way.
	return strings.Contains(err.Error(), "conn closed") || strings.Contains(err.Error(), "closed pool")
}

// IsRowError reports whether Postgres refused a row's value or constraint (SQLSTATE class 22:
// bad encoding, a NUL byte, a number out of range; class 23: a check or key violated):
// retrying the same statement cannot help, but the batch's other rows may be fine.
func IsRowError(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && (strings.HasPrefix(pe.Code, "22") || strings.HasPrefix(pe.Code, "23"))
}

// RetryPolicy bounds Retry.
type RetryPolicy struct {
	// Initial is the first wait; it doubles (with jitter) up to Max.
	Initial, Max time.Duration
	// MaxElapsed gives up after this long; 0 retries until the context ends.
	MaxElapsed time.Duration
	// OnRetry, when set, hears of every transient failure before its wait.
	OnRetry func(err error, wait time.Duration)
}

// Named retry policies.
var (
	// RetryBookkeeping is for the ledger's statements: an attempt keeps its lease (its worker's
	// heartbeat runs on its own sessions) while its end is retried, so it may wait out a
	// restarting server.
	RetryBookkeeping = RetryPolicy{Initial: 50 * time.Millisecond, Max: 2 * time.Second}
	// RetryQuick is for statements on a tight schedule (heartbeats, lease renewals), which must
	// give up well inside their period.
	RetryQuick = RetryPolicy{Initial: 50 * time.Millisecond, Max: 500 * time.Millisecond, MaxElapsed: 3 * time.Second}
)

// Retry runs fn until it succeeds, fails with an error that is not transient (returned at
// once), the policy's time runs out or ctx ends (the last error is returned).
func Retry(ctx context.Context, p RetryPolicy, fn func(ctx context.Context) error) error {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval, b.MaxInterval = p.Initial, p.Max
	opts := []backoff.RetryOption{backoff.WithBackOff(b), backoff.WithMaxElapsedTime(p.MaxElapsed)}
	if p.OnRetry != nil {
		opts = append(opts, backoff.WithNotify(p.OnRetry))
	}
	var last error
	_, err := backoff.Retry(ctx, func() (struct{}, error) {
		err := fn(ctx)
		if err != nil && !IsTransient(err) {
			return struct{}{}, backoff.Permanent(err)
		}
		last = err
		return struct{}{}, err
	}, opts...)
	if err != nil && ctx.Err() != nil && last != nil {
		return errors.Join(last, err)
	}
	return err
}
