package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/etlexec/etlexec/internal/store/sqlcdb"
)

// Lease is a named leader lease on the database clock (dw_etl_leases): the holder renews
// lease_until, and anyone may take it once it lapsed. Unlike a session advisory lock it does
// not outlive a frozen or cut-off holder: the lease lapses after TTL whatever its sessions do,
// and the holder itself stops acting once TTL passed since its last renewal was sent, by its
// own monotonic clock, before it would talk to the database again. It is safe for concurrent
// use.
type Lease struct {
	st     *Store
	name   string
	holder uuid.UUID
	label  string
	ttl    time.Duration

	mu        sync.Mutex
	heldUntil time.Time // local monotonic deadline of the last successful renewal
}

// leaseSafety is the share of the TTL the holder trusts a renewal for: its clock and the
// database's may run at slightly different rates.
const leaseSafety = 0.8

// Lease returns the (not yet acquired) lease called name for a holder labelled label.
func (s *Store) Lease(name, label string, ttl time.Duration) *Lease {
	return &Lease{st: s, name: name, holder: uuid.Must(uuid.NewV7()), label: label, ttl: ttl}
}

// TTL is how long one renewal holds the lease.
func (l *Lease) TTL() time.Duration { return l.ttl }

// TryAcquire takes the lease if it is free or lapsed, or renews it if held, without waiting
// (bounded by a third of the TTL). It reports whether the lease is held.
func (l *Lease) TryAcquire(ctx context.Context) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, l.ttl/3)
	defer cancel()
	sent := time.Now()
	_, err := l.st.livenessQueries().AcquireLease(ctx, sqlcdb.AcquireLeaseParams{
		Name: l.name, Holder: l.holder, HolderName: l.label, TtlMs: l.ttl.Milliseconds(),
	})
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		l.heldUntil = time.Time{}
		return false, nil
	case err != nil:
		// Unknown outcome: keep trusting the previous renewal until it runs out.
		return time.Now().Before(l.heldUntil), fmt.Errorf("renew lease %q: %w", l.name, err)
	}
	l.heldUntil = sent.Add(time.Duration(float64(l.ttl) * leaseSafety))
	return true, nil
}

// Held reports whether the last renewal is still good by the local clock.
func (l *Lease) Held() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return time.Now().Before(l.heldUntil)
}

// Keep renews the lease every third of its TTL (trying to take it when free) until ctx ends,
// calling changed whenever leadership is gained or lost. It releases the lease when it returns.
func (l *Lease) Keep(ctx context.Context, changed func(held bool, err error)) {
	t := time.NewTicker(l.ttl / 3)
	defer t.Stop()
	was := false
	for {
		held, err := l.TryAcquire(ctx)
		if held != was || (err != nil && ctx.Err() == nil) {
			if changed != nil {
				changed(held, err)
			}
			was = held
		}
		select {
		case <-ctx.Done():
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), l.ttl/3)
			_ = l.Release(rctx)
			cancel()
			return
		case <-t.C:
		}
	}
}

// Release gives the lease up if held, so another replica takes over at once.
func (l *Lease) Release(ctx context.Context) error {
	l.mu.Lock()
	l.heldUntil = time.Time{}
	l.mu.Unlock()
	if err := l.st.livenessQueries().ReleaseLease(ctx, sqlcdb.ReleaseLeaseParams{Name: l.name, Holder: l.holder}); err != nil {
		return fmt.Errorf("release lease %q: %w", l.name, err)
	}
	return nil
}

// LeaseHolder is who holds a named lease.
type LeaseHolder struct {
	Holder     uuid.UUID
	Label      string
	Until      time.Time
	AcquiredAt time.Time
	Live       bool
}

// LeaseHolder reads who holds the named lease; ErrNotFound when nobody ever took it.
func (s *Store) LeaseHolder(ctx context.Context, name string) (LeaseHolder, error) {
	r, err := s.q.LeaseHolder(ctx, name)
	if err != nil {
		return LeaseHolder{}, fmt.Errorf("read lease %q: %w", name, mapErr(err))
	}
	return LeaseHolder{Holder: r.Holder, Label: r.HolderName, Until: r.LeaseUntil, AcquiredAt: r.AcquiredAt, Live: r.Live}, nil
}
