package preflight_test

import (
	"context"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/etlexec/etlexec/internal/dbtest"
	"github.com/etlexec/etlexec/internal/preflight"
	"github.com/etlexec/etlexec/internal/redistest"
)

// privateRedis starts a redis-server of our own, listening only on a unix socket in a temp
// dir (--port 0), with extra arguments; it is killed when the test ends.
func privateRedis(t *testing.T, args ...string) asynq.RedisConnOpt {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Skip("redis-server not installed")
	}
	dir := t.TempDir()
	sock := filepath.Join(dir, "redis.sock")
	cmd := exec.Command("redis-server", append([]string{"--port", "0", "--unixsocket", sock, "--dir", dir,
		"--save", "", "--appendonly", "no"}, args...)...)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	opt := asynq.RedisClientOpt{Network: "unix", Addr: sock}
	c := redis.NewClient(&redis.Options{Network: "unix", Addr: sock})
	defer c.Close()
	require.Eventually(t, func() bool { return c.Ping(context.Background()).Err() == nil }, 10*time.Second, 10*time.Millisecond,
		"private redis-server on %s did not answer", sock)
	return opt
}

// pool opens a pool on a fresh (empty) test database; every session runs setup first.
func pool(t *testing.T, setup string) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(dbtest.EmptyDatabase(t))
	require.NoError(t, err)
	if setup != "" {
		cfg.AfterConnect = func(ctx context.Context, c *pgx.Conn) error {
			_, err := c.Exec(ctx, setup)
			return err
		}
	}
	p, err := pgxpool.NewWithConfig(context.Background(), cfg)
	require.NoError(t, err)
	t.Cleanup(p.Close)
	return p
}

func TestCheck(t *testing.T) {
	t.Parallel()

	t.Run("SharedServicesPass", func(t *testing.T) {
		t.Parallel()
		// The shared Redis of our services runs noeviction and Postgres synchronous_commit on.
		res, err := preflight.Check(t.Context(), pool(t, ""), redistest.ConnOpt(t), preflight.Options{})
		require.NoError(t, err)
		require.Empty(t, res.Warnings)
	})

	t.Run("EvictingRedisIsRefused", func(t *testing.T) {
		t.Parallel()
		opt := privateRedis(t, "--maxmemory", "64mb", "--maxmemory-policy", "allkeys-lru")
		_, err := preflight.Check(t.Context(), pool(t, ""), opt, preflight.Options{})
		require.ErrorIs(t, err, preflight.ErrUnsafe)
		require.ErrorContains(t, err, `maxmemory-policy is "allkeys-lru"`)
		require.ErrorContains(t, err, "set maxmemory-policy noeviction")
	})

	t.Run("NoevictionRedisPasses", func(t *testing.T) {
		t.Parallel()
		opt := privateRedis(t, "--maxmemory-policy", "noeviction")
		res, err := preflight.Check(t.Context(), pool(t, ""), opt, preflight.Options{})
		require.NoError(t, err)
		require.Empty(t, res.Warnings)
	})

	t.Run("ManagedRedisWithoutConfigWarns", func(t *testing.T) {
		t.Parallel()
		opt := privateRedis(t, "--maxmemory-policy", "allkeys-lru", "--rename-command", "CONFIG", "")
		res, err := preflight.Check(t.Context(), pool(t, ""), opt, preflight.Options{})
		require.NoError(t, err, "what cannot be verified passes")
		require.Len(t, res.Warnings, 1)
		require.Contains(t, res.Warnings[0], "unknown command")
		require.Contains(t, res.Warnings[0], "noeviction")
	})

	t.Run("AsynchronousCommitIsRefused", func(t *testing.T) {
		t.Parallel()
		_, err := preflight.Check(t.Context(), pool(t, "SET synchronous_commit = off"), redistest.ConnOpt(t), preflight.Options{})
		require.ErrorIs(t, err, preflight.ErrUnsafe)
		require.ErrorContains(t, err, "synchronous_commit is off")
		require.ErrorContains(t, err, "could be lost on crash")
	})

	t.Run("BothRefusalsAreReported", func(t *testing.T) {
		t.Parallel()
		opt := privateRedis(t, "--maxmemory-policy", "volatile-ttl")
		_, err := preflight.Check(t.Context(), pool(t, "SET synchronous_commit = off"), opt, preflight.Options{})
		require.ErrorContains(t, err, "volatile-ttl")
		require.ErrorContains(t, err, "synchronous_commit is off")
	})

	t.Run("UnreachableRedisIsAnError", func(t *testing.T) {
		t.Parallel()
		opt := asynq.RedisClientOpt{Network: "unix", Addr: filepath.Join(t.TempDir(), "none.sock")}
		_, err := preflight.Check(t.Context(), pool(t, ""), opt, preflight.Options{})
		require.Error(t, err)
		require.NotErrorIs(t, err, preflight.ErrUnsafe)
	})
}
