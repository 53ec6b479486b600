// Package preflight refuses to start etlexec on infrastructure configured to lose work
// silently: a Redis that may evict keys (asynq's tasks are keys) or a Postgres that
// acknowledges commits it has not flushed (an attempt recorded to the worker could vanish on a
// crash). What it cannot verify — managed services often forbid CONFIG — it reports as
// warnings and lets pass.
package preflight

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/hibiken/asynq"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"
)

// ErrUnsafe matches (errors.Is) every refusal.
var ErrUnsafe = errors.New("unsafe configuration")

// Result carries what a passing Check could not verify.
type Result struct {
	// Warnings are checks the servers would not answer, one sentence each; log them.
	Warnings []string
}

// Check verifies that Redis's maxmemory-policy is noeviction and that Postgres's
// synchronous_commit is not off, as the pool's sessions see it. It returns an error wrapping
// ErrUnsafe for each refusal (joined), or a plain error when a server cannot be reached. When
// Redis refuses CONFIG GET (managed Redis: unknown or renamed command, ACL NOPERM), the Redis
// check passes with a warning.
func Check(ctx context.Context, pool *pgxpool.Pool, redisOpt asynq.RedisConnOpt, opts Options) (Result, error) {
	var res Result
	errRedis := checkRedis(ctx, redisOpt, &res)
	if errors.Is(errRedis, ErrUnsafe) && opts.AllowEviction {
		res.Warnings = append(res.Warnings, errRedis.Error()+" (allowed by --allow-redis-eviction / ETL_ALLOW_REDIS_EVICTION: the reconciler rebuilds evicted tasks, late)")
		errRedis = nil
	}
	errPG := checkPostgres(ctx, pool)
	return res, errors.Join(errRedis, errPG)
}

// Options relax Check.
type Options struct {
	// AllowEviction turns an evicting Redis maxmemory-policy into a warning.
	AllowEviction bool
}

func checkRedis(ctx context.Context, opt asynq.RedisConnOpt, res *Result) error {
	c, ok := opt.MakeRedisClient().(redis.UniversalClient)
	if !ok {
		return fmt.Errorf("preflight: redis connection option %T does not make a go-redis v9 client", opt)
	}
	defer c.Close()
	policies, err := c.ConfigGet(ctx, "maxmemory-policy").Result()
	var refused redis.Error
	if errors.As(err, &refused) {
		// The server answered but will not tell (managed Redis disables or renames CONFIG, or
		// ACLs forbid it): we cannot verify, so say so and pass.
		res.Warnings = append(res.Warnings, fmt.Sprintf(
			"could not read Redis maxmemory-policy (%v); make sure it is noeviction: asynq keeps tasks in Redis and an evicting policy loses work silently",
			err))
		return nil
	}
	if err != nil {
		return fmt.Errorf("preflight: read Redis maxmemory-policy: %w", err)
	}
	policy, ok := policies["maxmemory-policy"]
	if !ok {
		res.Warnings = append(res.Warnings,
			"Redis did not report maxmemory-policy; make sure it is noeviction: asynq keeps tasks in Redis and an evicting policy loses work silently")
		return nil
	}
	if !strings.EqualFold(policy, "noeviction") {
		return fmt.Errorf("%w: Redis maxmemory-policy is %q: asynq keeps tasks in Redis; a policy that evicts keys loses work silently; set maxmemory-policy noeviction (or start with --allow-redis-eviction)",
			ErrUnsafe, policy)
	}
	return nil
}

func checkPostgres(ctx context.Context, pool *pgxpool.Pool) error {
	var v string
	if err := pool.QueryRow(ctx, `SHOW synchronous_commit`).Scan(&v); err != nil {
		return fmt.Errorf("preflight: read Postgres synchronous_commit: %w", err)
	}
	if strings.EqualFold(v, "off") {
		return fmt.Errorf("%w: Postgres synchronous_commit is off: a commit acknowledged to the worker could be lost on crash; set it to on (or local, remote_write, remote_apply) for etlexec's role or database",
			ErrUnsafe)
	}
	return nil
}
