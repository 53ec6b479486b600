// Package dbtest gives each test its own migrated Postgres database, cloned from a template
// that is migrated once per migration-directory hash (and per month, since the template carries
// the log partitions of its month). Tests using it can run in parallel, across packages too.
package dbtest

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/etlexec/etlexec/internal/dbmigrate"
	"github.com/etlexec/etlexec/internal/schema"
	"github.com/etlexec/etlexec/internal/store"
)

// DefaultURL is used when DATABASE_URL is unset (and no container was started): the local
// service scripts/services.sh checks.
const DefaultURL = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"

// ServerURL returns the URL of the Postgres server tests run against: DATABASE_URL, else a
// per-process container when built with -tags containers (containers.go), else DefaultURL.
func ServerURL() string {
	if u := os.Getenv("DATABASE_URL"); u != "" {
		return u
	}
	if u := containerURL(); u != "" {
		return u
	}
	return DefaultURL
}

// WithDatabase returns u pointing at database name.
func WithDatabase(u, name string) string {
	pu, err := url.Parse(u)
	if err != nil {
		panic(fmt.Sprintf("dbtest: bad DATABASE_URL: %v", err))
	}
	pu.Path = "/" + name
	return pu.String()
}

var (
	tmplOnce sync.Once
	tmplName string
	tmplErr  error
)

func templateName() string {
	sum, err := fs.ReadFile(schema.Migrations, "atlas.sum")
	if err != nil {
		panic(err)
	}
	h := sha256.Sum256(sum)
	return fmt.Sprintf("etlexec_tmpl_%s_%s", hex.EncodeToString(h[:6]), time.Now().UTC().Format("200601"))
}

// ensureTemplate builds the template database once per process; other processes wait on an
// advisory lock and reuse it.
func ensureTemplate(ctx context.Context) (string, error) {
	tmplOnce.Do(func() {
		tmplName = templateName()
		tmplErr = buildTemplate(ctx, tmplName)
	})
	return tmplName, tmplErr
}

func buildTemplate(ctx context.Context, name string) error {
	admin, err := connectAdmin(ctx)
	if err != nil {
		return fmt.Errorf("dbtest: connect to %s (run scripts/services.sh up): %w", ServerURL(), err)
	}
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, `SELECT pg_advisory_lock(hashtext('etlexec_dbtest_template'))`); err != nil {
		return err
	}
	defer admin.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock(hashtext('etlexec_dbtest_template'))`) //nolint:errcheck
	var exists bool
	if err := admin.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, name).Scan(&exists); err != nil {
		return err
	}
	if exists {
		return nil
	}
	building := name + "_build"
	if _, err := admin.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{building}.Sanitize()+" WITH (FORCE)"); err != nil {
		return err
	}
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{building}.Sanitize()); err != nil {
		return err
	}
	if err := Migrate(ctx, WithDatabase(ServerURL(), building)); err != nil {
		return fmt.Errorf("dbtest: migrate template: %w", err)
	}
	// Publish atomically: only a fully migrated template ever carries the final name.
	_, err = admin.Exec(ctx, "ALTER DATABASE "+pgx.Identifier{building}.Sanitize()+" RENAME TO "+pgx.Identifier{name}.Sanitize())
	return err
}

// Migrate applies the migration directory and log partitions to the database at u.
func Migrate(ctx context.Context, u string) error {
	db, err := dbmigrate.Open(u)
	if err != nil {
		return err
	}
	defer db.Close()
	if _, err := (&dbmigrate.Migrator{DB: db}).Apply(ctx); err != nil {
		return err
	}
	st, err := store.Connect(ctx, u)
	if err != nil {
		return err
	}
	defer st.Close()
	_, err = st.MaintainLogPartitions(ctx, store.LogMaintenance{})
	return err
}

// EmptyDatabase creates a blank database for the test and returns its URL; it is dropped when
// the test ends.
func EmptyDatabase(t testing.TB) string {
	t.Helper()
	return createDatabase(t, "")
}

// URL creates a migrated database for the test, cloned from the template, and returns its URL.
func URL(t testing.TB) string {
	t.Helper()
	tmpl, err := ensureTemplate(context.Background())
	if err != nil {
		t.Fatalf("dbtest: %v", err)
	}
	return createDatabase(t, tmpl)
}

func createDatabase(t testing.TB, template string) string {
	t.Helper()
	ctx := context.Background()
	admin, err := connectAdmin(ctx)
	if err != nil {
		t.Fatalf("dbtest: connect to %s (run scripts/services.sh up): %v", ServerURL(), err)
	}
	defer admin.Close(ctx)
	var b [6]byte
	_, _ = rand.Read(b[:])
	name := "etlexec_t_" + hex.EncodeToString(b[:])
	ddl := "CREATE DATABASE " + pgx.Identifier{name}.Sanitize()
	if template != "" {
		ddl += " TEMPLATE " + pgx.Identifier{template}.Sanitize()
	}
	// Concurrent clones of one template can collide on its brief lock; retry a few times.
	for i := 0; ; i++ {
		_, err = admin.Exec(ctx, ddl)
		if err == nil || i == 20 {
			break
		}
		time.Sleep(time.Duration(50*(i+1)) * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("dbtest: create database: %v", err)
	}
	t.Cleanup(func() {
		c, err := connectAdmin(ctx)
		if err != nil {
			t.Logf("dbtest: drop %s: %v", name, err)
			return
		}
		defer c.Close(ctx)
		if _, err := c.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
			t.Logf("dbtest: drop %s: %v", name, err)
		}
	})
	return WithDatabase(ServerURL(), name)
}

// Pool returns a pool on a fresh migrated database, closed when the test ends.
func Pool(t testing.TB) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(URL(t))
	if err != nil {
		t.Fatalf("dbtest: %v", err)
	}
	cfg.MaxConns = 40 // room for workers running many items, each holding a target transaction
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatalf("dbtest: %v", err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// Store returns a store on a fresh migrated database, closed when the test ends: Close also
// closes the liveness pool the store builds on first use, which closing Pool's pool would leave
// running (a health-check goroutine per test).
func Store(t testing.TB) *store.Store {
	t.Helper()
	st := store.New(Pool(t))
	t.Cleanup(st.Close)
	return st
}

// connectAdmin connects to the server's admin database, waiting out a full server
// ("too many clients", SQLSTATE 53300) for a while: parallel test packages share one
// max_connections, and a burst elsewhere must not fail an unrelated test.
func connectAdmin(ctx context.Context) (*pgx.Conn, error) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := pgx.Connect(ctx, ServerURL())
		var pe *pgconn.PgError
		if err == nil || !errors.As(err, &pe) || pe.Code != "53300" || time.Now().After(deadline) {
			return c, err
		}
		time.Sleep(200 * time.Millisecond)
	}
}
