package worker

import (
	"context"
	"fmt"
	"os"
	"sync"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/etlexec/etlexec/etl"
	"github.com/etlexec/etlexec/internal/store"
)

// target is where a job's handler writes.
type target struct {
	pool *pgxpool.Pool
	// foreign is true for a database other than etlexec's own: its commit is separate from
	// the ledger's, so it carries a commit marker.
	foreign bool
	env     string
}

// targets holds etlexec's own database and one pool per other target database a job names
// through an environment variable (job config target_url_env).
type targets struct {
	own      *pgxpool.Pool
	appName  string
	maxConns int32
	mu       sync.Mutex
	pools    map[string]*pgxpool.Pool
}

func newTargets(own *pgxpool.Pool, appName string, concurrency int) *targets {
	return &targets{own: own, appName: appName, maxConns: int32(concurrency + 2), pools: map[string]*pgxpool.Pool{}}
}

// get returns the target for the URL held in env var envName ("" = etlexec's database),
// opening its pool (and creating its commit marker table) on first use. Its sessions carry the
// worker's application_name and keepalives, like the ledger's.
func (t *targets) get(ctx context.Context, envName string) (target, error) {
	if envName == "" {
		return target{pool: t.own}, nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if p, ok := t.pools[envName]; ok {
		return target{pool: p, foreign: true, env: envName}, nil
	}
	dsn := os.Getenv(envName)
	if dsn == "" {
		return target{}, etl.Permanent(etl.SystemError(fmt.Errorf("target database: environment variable %s (job config %s) is not set in this worker", envName, etl.TargetURLEnvKey)))
	}
	if _, err := store.ParseURL(dsn); err != nil {
		return target{}, etl.Permanent(etl.SystemError(fmt.Errorf("target database from %s: unparsable URL", envName)))
	}
	p, err := store.OpenPool(ctx, dsn, store.Options{AppName: t.appName, MaxConns: t.maxConns})
	if err != nil {
		return target{}, etl.DBError(fmt.Errorf("target database from %s: %w", envName, err))
	}
	if err := store.EnsureMarkerTable(ctx, p, store.MarkerTableDefault); err != nil {
		p.Close()
		return target{}, etl.DBError(err)
	}
	t.pools[envName] = p
	return target{pool: p, foreign: true, env: envName}, nil
}

func (t *targets) close() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, p := range t.pools {
		p.Close()
	}
}
