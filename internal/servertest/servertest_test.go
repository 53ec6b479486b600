package servertest_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/etlexec/etlexec/internal/servertest"
)

func TestMain(m *testing.M) {
	defer servertest.RemoveTemplates()
	m.Run()
}

func TestPoll(t *testing.T) {
	t.Parallel()
	n := 0
	require.NoError(t, servertest.Poll(time.Second, time.Millisecond, func() (bool, error) { n++; return n == 3, nil }))
	require.Equal(t, 3, n)

	stop := errors.New("stop")
	require.ErrorIs(t, servertest.Poll(time.Second, time.Millisecond, func() (bool, error) { return false, stop }), stop)

	why := errors.New("not yet")
	err := servertest.Poll(20*time.Millisecond, time.Millisecond, func() (bool, error) { return false, &servertest.Retry{Err: why} })
	require.ErrorIs(t, err, servertest.ErrTimeout)
	require.ErrorIs(t, err, why, "the last reason is quoted")
}

// query runs SELECT 1 on a fresh connection to u within d.
func query(u string, d time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	c, err := pgx.Connect(ctx, u)
	if err != nil {
		return err
	}
	defer c.Close(context.Background())
	var one int
	return c.QueryRow(ctx, `SELECT 1`).Scan(&one)
}

func TestPostgres(t *testing.T) {
	t.Parallel()
	prepared := 0
	prep := func(ctx context.Context, s *servertest.PostgresServer) error {
		prepared++
		if err := s.CreateDatabase(ctx, "app"); err != nil {
			return err
		}
		c, err := pgx.Connect(ctx, s.URL("app"))
		if err != nil {
			return err
		}
		defer c.Close(ctx)
		_, err = c.Exec(ctx, `CREATE TABLE marker (v int); INSERT INTO marker VALUES (42)`)
		return err
	}
	opts := servertest.PostgresOptions{MaxConnections: 20, StatStatements: true, Template: "servertest-marker", Prepare: prep,
		Settings: map[string]string{"work_mem": "'8MB'"}}
	a := servertest.Postgres(t, opts)
	began := time.Now()
	b := servertest.Postgres(t, opts)
	t.Logf("second server from the prepared template ready in %s", time.Since(began).Round(time.Millisecond))
	require.Equal(t, 1, prepared, "the template is prepared once")
	require.NotEqual(t, a.Port(), b.Port())

	ctx := t.Context()
	c, err := pgx.Connect(ctx, a.URL("app"))
	require.NoError(t, err)
	var v int
	require.NoError(t, c.QueryRow(ctx, `SELECT v FROM marker`).Scan(&v))
	require.Equal(t, 42, v, "the copy carries the template's data")
	var maxConns, workMem, preload string
	require.NoError(t, c.QueryRow(ctx, `SELECT current_setting('max_connections'), current_setting('work_mem'),
		current_setting('shared_preload_libraries')`).Scan(&maxConns, &workMem, &preload))
	require.Equal(t, []string{"20", "8MB", "pg_stat_statements"}, []string{maxConns, workMem, preload})
	_, err = c.Exec(ctx, `UPDATE marker SET v = 7`)
	require.NoError(t, err)
	c.Close(ctx)
	require.NoError(t, query(b.URL("app"), 10*time.Second))
	cb, err := pgx.Connect(ctx, b.URL("app"))
	require.NoError(t, err)
	require.NoError(t, cb.QueryRow(ctx, `SELECT v FROM marker`).Scan(&v))
	cb.Close(ctx)
	require.Equal(t, 42, v, "servers share nothing")

	cpu0, err := a.CPUTime()
	require.NoError(t, err)
	c, err = pgx.Connect(ctx, a.URL("app"))
	require.NoError(t, err)
	_, err = c.Exec(ctx, `SELECT sum(i) FROM generate_series(1, 3000000) i`)
	require.NoError(t, err)
	c.Close(ctx) // the backend exits: its time moves into the postmaster's children times
	var cpu1 time.Duration
	require.NoError(t, servertest.Poll(5*time.Second, 0, func() (bool, error) {
		cpu1, err = a.CPUTime()
		return cpu1-cpu0 >= 100*time.Millisecond, err
	}), "a query's CPU is counted after its backend exited")
	t.Logf("server CPU %s -> %s over one query", cpu0, cpu1)

	for _, mode := range []string{servertest.Fast, servertest.Immediate} {
		require.NoError(t, a.Restart(mode))
		require.NoError(t, query(a.URL("app"), 10*time.Second), "after restart -m %s", mode)
	}

	require.NoError(t, a.Freeze())
	err = query(a.URL("app"), 500*time.Millisecond)
	require.Error(t, err, "a frozen server answers nothing")
	require.NoError(t, a.Thaw())
	require.NoError(t, query(a.URL("app"), 10*time.Second), "thawed")

	frozen := servertest.Postgres(t, servertest.PostgresOptions{})
	require.NoError(t, frozen.Freeze())
	closed := time.Now()
	frozen.Close()
	require.Less(t, time.Since(closed), 30*time.Second, "a frozen server closes promptly")
	require.Error(t, query(frozen.URL("postgres"), time.Second))

	require.NoError(t, a.Stop(servertest.Fast))
	require.Error(t, query(a.URL("app"), time.Second))
	require.NoError(t, a.Start())
	require.NoError(t, query(a.URL("app"), 10*time.Second))
	require.Contains(t, a.Log(), "database system is ready to accept connections")
}

func TestRedis(t *testing.T) {
	t.Parallel()
	r := servertest.Redis(t, servertest.RedisOptions{Args: []string{"--maxmemory-policy", "allkeys-lru"}})
	c := redis.NewClient(&redis.Options{Addr: r.Addr(), ReadTimeout: 300 * time.Millisecond, MaxRetries: -1})
	defer c.Close()
	ctx := t.Context()
	require.NoError(t, c.Set(ctx, "k", "v", 0).Err())
	info, err := r.Info("memory")
	require.NoError(t, err)
	require.Equal(t, "allkeys-lru", info["maxmemory_policy"])
	require.NoError(t, r.ConfigSet("maxmemory-policy", "noeviction"))
	used, err := r.InfoInt("memory", "used_memory")
	require.NoError(t, err)
	require.Greater(t, used, int64(0))

	require.NoError(t, r.Freeze())
	require.Error(t, c.Get(ctx, "k").Err(), "a frozen server answers nothing")
	require.NoError(t, r.Thaw())
	require.NoError(t, servertest.Poll(5*time.Second, 0, func() (bool, error) { return c.Get(ctx, "k").Val() == "v", nil }))

	require.NoError(t, r.FlushAll())
	require.ErrorIs(t, c.Get(ctx, "k").Err(), redis.Nil)

	require.NoError(t, c.Set(ctx, "k", "v", 0).Err())
	port := r.Port()
	require.NoError(t, r.Restart())
	require.Equal(t, port, r.Port())
	require.NoError(t, servertest.Poll(5*time.Second, 0, func() (bool, error) {
		err := c.Get(ctx, "k").Err()
		return errors.Is(err, redis.Nil), nil
	}), "restarted empty on the same port")
}

func TestProxy(t *testing.T) {
	t.Parallel()
	r := servertest.Redis(t, servertest.RedisOptions{})
	p := servertest.NewProxy(t, r.Addr())
	c := redis.NewClient(&redis.Options{Addr: p.Addr(), ReadTimeout: 300 * time.Millisecond, DialTimeout: 300 * time.Millisecond,
		MaxRetries: -1, PoolSize: 1})
	defer c.Close()
	ctx := t.Context()
	require.NoError(t, c.Set(ctx, "k", "v", 0).Err())

	p.Cut()
	require.Error(t, c.Get(ctx, "k").Err(), "a cut proxy forwards nothing")
	fresh := redis.NewClient(&redis.Options{Addr: p.Addr(), ReadTimeout: 300 * time.Millisecond, DialTimeout: 300 * time.Millisecond, MaxRetries: -1})
	defer fresh.Close()
	require.Error(t, fresh.Ping(ctx).Err(), "nor does a new connection get through")
	p.Restore()
	require.NoError(t, servertest.Poll(5*time.Second, 0, func() (bool, error) { return c.Get(ctx, "k").Val() == "v", nil }))
	require.NoError(t, fresh.Ping(ctx).Err())
}

func TestHogs(t *testing.T) {
	t.Parallel()
	h := servertest.Hog(t, 2)
	require.Len(t, h.PIDs(), 2)
	require.NoError(t, servertest.Poll(10*time.Second, 0, func() (bool, error) { return h.CPUTime() >= 100*time.Millisecond, nil }),
		"the hogs burn CPU")
	require.NoError(t, h.Stop())
}
