// Package limits owns the fleet-wide limits workers enforce in Redis: a counting semaphore per
// job (max_running_items: how many of its items run at once across every worker process) and a
// GCRA bucket per named source (requests per second shared by every worker and job that names
// the source). Postgres holds the limits themselves; Redis holds only who holds a slot and each
// bucket's state, so a Redis that loses them leaves the limits briefly unenforced, never wrong
// in the ledger.
//
// asynq's own semaphore (github.com/hibiken/asynq/x/rate) is built on go-redis v8 and panics
// with asynq v0.26's v9 clients ("unsupported RedisConnOpt type"), and it leases a slot until
// the task's deadline; this semaphore follows its design (a sorted set of holders scored by
// expiry, one Lua script to acquire) with a lease its holder renews, on Redis's clock. The
// buckets are github.com/go-redis/redis_rate.
package limits

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/redis/go-redis/v9"
)

// Config configures Limits.
type Config struct {
	// Redis holds the slots and buckets. Required.
	Redis redis.UniversalClient
	// Prefix starts every key. Defaults to PrefixDefault.
	Prefix string
	// Lease is how long a slot stays held without its holder renewing it (Run renews held slots
	// a third of it apart): a holder that dies gives its slots back within Lease. Defaults to
	// LeaseDefault.
	Lease time.Duration
}

// Named defaults of Config.
const (
	PrefixDefault = "etlexec"
	LeaseDefault  = 30 * time.Second
)

// Limits acquires semaphore slots and waits on source buckets for one process.
type Limits struct {
	rdb    redis.UniversalClient
	prefix string
	lease  time.Duration
	rate   *redis_rate.Limiter

	mu sync.Mutex
	// held maps a semaphore key to the members this process holds in it.
	held map[string]map[string]struct{}
}

// New returns Limits; call Run to keep its slots leased.
func New(cfg Config) (*Limits, error) {
	if cfg.Redis == nil {
		return nil, errors.New("limits config: Redis is required")
	}
	if cfg.Prefix == "" {
		cfg.Prefix = PrefixDefault
	}
	if cfg.Lease <= 0 {
		cfg.Lease = LeaseDefault
	}
	if cfg.Lease < time.Second {
		return nil, fmt.Errorf("limits config: Lease %s must be at least 1s", cfg.Lease)
	}
	return &Limits{rdb: cfg.Redis, prefix: cfg.Prefix, lease: cfg.Lease, rate: redis_rate.NewLimiter(cfg.Redis),
		held: map[string]map[string]struct{}{}}, nil
}

// acquireScript takes a slot when fewer than max unexpired holders are in the set. Times are
// Redis's own (TIME), so holders on machines with different clocks agree on expiry.
//
// KEYS[1] the set; ARGV[1] max; ARGV[2] lease in ms; ARGV[3] the member.
var acquireScript = redis.NewScript(`
redis.replicate_commands()
local t = redis.call("TIME")
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = tonumber(ARGV[2])
redis.call("ZREMRANGEBYSCORE", KEYS[1], "-inf", now)
if redis.call("ZCARD", KEYS[1]) >= tonumber(ARGV[1]) then
  return 0
end
redis.call("ZADD", KEYS[1], now + lease, ARGV[3])
redis.call("PEXPIRE", KEYS[1], 2 * lease)
return 1
`)

// renewScript moves the expiry of a holder's members a lease ahead. It adds members that are
// missing (Redis lost the set): the set again shows what runs, even above max for a while.
//
// KEYS[1] the set; ARGV[1] lease in ms; ARGV[2..] the members.
var renewScript = redis.NewScript(`
redis.replicate_commands()
local t = redis.call("TIME")
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = tonumber(ARGV[1])
for i = 2, #ARGV do
  redis.call("ZADD", KEYS[1], now + lease, ARGV[i])
end
redis.call("PEXPIRE", KEYS[1], 2 * lease)
return #ARGV - 1
`)

// Slot is one held place of a semaphore. Release it exactly when the work it guards is over
// (for an item: once its end is recorded).
type Slot struct {
	l           *Limits
	key, member string
	once        sync.Once
}

// RunningKey is the semaphore key of a job's running items.
func (l *Limits) RunningKey(jobID string) string { return l.prefix + ":running:" + jobID }

// TryAcquire takes one of max slots of the job's semaphore, without waiting: ok is false
// when max holders already hold one. max must be >= 1.
func (l *Limits) TryAcquire(ctx context.Context, jobID string, max int) (slot *Slot, ok bool, err error) {
	if max < 1 {
		return nil, false, fmt.Errorf("semaphore of job %s: max %d must be at least 1", jobID, max)
	}
	var b [12]byte
	_, _ = rand.Read(b[:])
	member := hex.EncodeToString(b[:])
	key := l.RunningKey(jobID)
	n, err := acquireScript.Run(ctx, l.rdb, []string{key}, max, l.lease.Milliseconds(), member).Int()
	if err != nil {
		return nil, false, fmt.Errorf("acquire a running slot of job %s: %w", jobID, err)
	}
	if n == 0 {
		return nil, false, nil
	}
	l.mu.Lock()
	if l.held[key] == nil {
		l.held[key] = map[string]struct{}{}
	}
	l.held[key][member] = struct{}{}
	l.mu.Unlock()
	return &Slot{l: l, key: key, member: member}, true, nil
}

// Release gives the slot back; a second call does nothing. A release Redis does not take
// leaves the slot to expire within the lease (it is no longer renewed).
func (s *Slot) Release(ctx context.Context) error {
	if s == nil {
		return nil
	}
	var err error
	s.once.Do(func() {
		s.l.mu.Lock()
		if m := s.l.held[s.key]; m != nil {
			delete(m, s.member)
			if len(m) == 0 {
				delete(s.l.held, s.key)
			}
		}
		s.l.mu.Unlock()
		if e := s.l.rdb.ZRem(ctx, s.key, s.member).Err(); e != nil {
			err = fmt.Errorf("release a slot of %s: %w", s.key, e)
		}
	})
	return err
}

// Held counts the slots this process holds.
func (l *Limits) Held() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, m := range l.held {
		n += len(m)
	}
	return n
}

// Run renews the process's slots a third of the lease apart until ctx ends; a holder that
// stops (dies, freezes) loses its slots one lease after its last renewal.
func (l *Limits) Run(ctx context.Context) error {
	t := time.NewTicker(l.lease / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		_ = l.Renew(ctx)
	}
}

// Renew moves every held slot's expiry a lease ahead, in one pipeline.
func (l *Limits) Renew(ctx context.Context) error {
	l.mu.Lock()
	batch := make(map[string][]any, len(l.held))
	for key, m := range l.held {
		args := make([]any, 0, len(m)+1)
		args = append(args, l.lease.Milliseconds())
		for member := range m {
			args = append(args, member)
		}
		batch[key] = args
	}
	l.mu.Unlock()
	if len(batch) == 0 {
		return nil
	}
	pipe := l.rdb.Pipeline()
	for key, args := range batch {
		// Eval, not EvalSha: a pipeline cannot fall back when Redis lost its script cache.
		renewScript.Eval(ctx, pipe, []string{key}, args...)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("renew %d running slots: %w", len(batch), err)
	}
	return nil
}

// Rate is a named source's request rate: Rate requests per Period, Burst at once.
type Rate struct {
	Source string
	Rate   int
	Burst  int
	Period time.Duration
}

// SourceKey is the bucket key of a source (redis_rate adds its "rate:" prefix).
func (l *Limits) SourceKey(source string) string { return l.prefix + ":source:" + source }

// Source returns the limiter of a named source: Wait blocks until the source's bucket, shared
// by every process using this Redis, allows one more request.
func (l *Limits) Source(r Rate) *SourceLimiter {
	return &SourceLimiter{l: l, key: l.SourceKey(r.Source), name: r.Source,
		limit: redis_rate.Limit{Rate: r.Rate, Burst: r.Burst, Period: r.Period}}
}

// SourceLimiter paces requests to one named source.
type SourceLimiter struct {
	l     *Limits
	key   string
	name  string
	limit redis_rate.Limit
}

// ErrRateWait is wrapped by Wait's error when ctx would end before the next free request.
var ErrRateWait = errors.New("the next request the source's rate allows comes after the deadline")

// Wait blocks until one request may go to the source, or ctx ends. A Redis error is returned
// (the rate cannot be kept without Redis): the caller's attempt fails and is retried.
func (s *SourceLimiter) Wait(ctx context.Context) error {
	for {
		res, err := s.l.rate.Allow(ctx, s.key, s.limit)
		if err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("wait for source %s: %w", s.name, context.Cause(ctx))
			}
			return fmt.Errorf("wait for source %s (rate %s): %w", s.name, s.limit, err)
		}
		if res.Allowed > 0 {
			return nil
		}
		d := res.RetryAfter
		if d <= 0 {
			d = time.Millisecond
		}
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < d {
			return fmt.Errorf("wait for source %s (rate %s): %w: %w", s.name, s.limit, ErrRateWait, context.DeadlineExceeded)
		}
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("wait for source %s: %w", s.name, context.Cause(ctx))
		case <-t.C:
		}
	}
}
