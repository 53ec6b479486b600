package scripts_test

import (
	"bytes"
	"context"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"
)

// TestServicesPrivateInstances drives scripts/services.sh through its last resort: with the
// configured URLs dead and the local defaults disabled, `up` must start private Postgres and
// Redis instances in ETL_DEV_DIR, a second `up` must reuse them, and `down` must stop them.
func TestServicesPrivateInstances(t *testing.T) {
	if testing.Short() {
		t.Skip("skipping in -short mode: starts private postgres and redis-server instances (a few seconds)")
	}
	t.Parallel()

	script, err := filepath.Abs("services.sh")
	if err != nil {
		t.Fatal(err)
	}
	devDir := t.TempDir()
	if os.Geteuid() == 0 {
		// As root the script runs Postgres as the postgres OS user, which must be able to
		// traverse into the dev dir; t.TempDir creates its directories 0700.
		for _, dir := range []string{filepath.Dir(devDir), devDir} {
			if err := os.Chmod(dir, 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
	deadPG, deadRedis := deadPort(t), deadPort(t)
	env := append(withoutEnv(os.Environ(), "DATABASE_URL", "REDIS_URL", "ETL_DEV_DIR", "ETL_SERVICES_NO_DEFAULT"),
		"DATABASE_URL=postgres://postgres@127.0.0.1:"+strconv.Itoa(deadPG)+"/test?sslmode=disable",
		"REDIS_URL=redis://127.0.0.1:"+strconv.Itoa(deadRedis)+"/0",
		"ETL_DEV_DIR="+devDir,
		"ETL_SERVICES_NO_DEFAULT=1",
	)
	run := func(t *testing.T, args ...string) (stdout string, err error) {
		t.Helper()
		// Generous: without installed binaries the script falls back to apt-get install.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "bash", append([]string{script}, args...)...)
		cmd.Env = env
		var out, errOut bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errOut
		start := time.Now()
		err = cmd.Run()
		t.Logf("services.sh %s (%s):\n%s", strings.Join(args, " "), time.Since(start).Round(time.Millisecond), errOut.String())
		return out.String(), err
	}
	// Registered after t.TempDir, so it runs before the dev dir is removed.
	t.Cleanup(func() {
		if _, err := run(t, "down"); err != nil {
			t.Errorf("services.sh down (cleanup): %v", err)
		}
	})

	out, err := run(t, "up")
	if err != nil {
		t.Fatalf("services.sh up: %v", err)
	}
	exports := parseExports(t, out)
	pgURL, redisURL := exports["DATABASE_URL"], exports["REDIS_URL"]
	pgAddr, redisAddr := hostPort(t, pgURL), hostPort(t, redisURL)
	for _, tc := range []struct{ name, addr, notPort string }{
		{"DATABASE_URL", pgAddr, "5432"},
		{"REDIS_URL", redisAddr, "6379"},
	} {
		host, port, _ := net.SplitHostPort(tc.addr)
		if host != "127.0.0.1" || port == tc.notPort || port == strconv.Itoa(deadPG) || port == strconv.Itoa(deadRedis) {
			t.Fatalf("%s = %q, want a private instance on a free loopback port", tc.name, tc.addr)
		}
	}

	ctx := t.Context()
	conn, err := pgx.Connect(ctx, pgURL)
	if err != nil {
		t.Fatalf("connect to %s: %v", pgURL, err)
	}
	var db, maxConns, fsync string
	err = conn.QueryRow(ctx, "select current_database(), current_setting('max_connections'), current_setting('fsync')").
		Scan(&db, &maxConns, &fsync)
	if closeErr := conn.Close(ctx); err == nil {
		err = closeErr
	}
	if err != nil {
		t.Fatalf("query %s: %v", pgURL, err)
	}
	if db != "etlexec" || maxConns != "200" || fsync != "on" {
		t.Errorf("private postgres: database %q max_connections %s fsync %s, want etlexec 200 on", db, maxConns, fsync)
	}

	opt, err := redis.ParseURL(redisURL)
	if err != nil {
		t.Fatalf("parse %s: %v", redisURL, err)
	}
	rdb := redis.NewClient(opt)
	err = rdb.Ping(ctx).Err()
	if closeErr := rdb.Close(); err == nil {
		err = closeErr
	}
	if err != nil {
		t.Fatalf("ping %s: %v", redisURL, err)
	}

	again, err := run(t, "up")
	if err != nil {
		t.Fatalf("second services.sh up: %v", err)
	}
	if again != out {
		t.Errorf("second up printed\n%s\nwant the same as the first\n%s", again, out)
	}
	envOut, err := run(t, "env")
	if err != nil {
		t.Fatalf("services.sh env: %v", err)
	}
	if envOut != out {
		t.Errorf("env printed\n%s\nwant the same as up\n%s", envOut, out)
	}

	if _, err := run(t, "down"); err != nil {
		t.Fatalf("services.sh down: %v", err)
	}
	for _, addr := range []string{pgAddr, redisAddr} {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			t.Errorf("%s still answers after down", addr)
		}
	}
	if _, err := run(t, "env"); err == nil {
		t.Errorf("services.sh env succeeded after down, want exit 1")
	}
}

// deadPort returns a loopback port that nothing listens on (it was free a moment ago).
func deadPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func withoutEnv(env []string, names ...string) []string {
	out := env[:0:0]
	for _, kv := range env {
		name, _, _ := strings.Cut(kv, "=")
		drop := false
		for _, n := range names {
			drop = drop || name == n
		}
		if !drop {
			out = append(out, kv)
		}
	}
	return out
}

// parseExports reads `export NAME=VALUE` lines, VALUE bare or single-quoted.
func parseExports(t *testing.T, out string) map[string]string {
	t.Helper()
	got := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		rest, ok := strings.CutPrefix(line, "export ")
		name, value, ok2 := strings.Cut(rest, "=")
		if !ok || !ok2 {
			t.Fatalf("stdout line %q is not an export line; stdout:\n%s", line, out)
		}
		if len(value) >= 2 && value[0] == '\'' && value[len(value)-1] == '\'' {
			value = strings.ReplaceAll(value[1:len(value)-1], `'\''`, `'`)
		}
		got[name] = value
	}
	for _, name := range []string{"DATABASE_URL", "REDIS_URL"} {
		if got[name] == "" {
			t.Fatalf("stdout has no %s export:\n%s", name, out)
		}
	}
	return got
}

func hostPort(t *testing.T, rawURL string) string {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatalf("parse %q: %v", rawURL, err)
	}
	return u.Host
}
