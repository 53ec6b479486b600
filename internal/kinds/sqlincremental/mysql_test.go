package sqlincremental_test

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/stretchr/testify/require"

	"github.com/etlexec/etlexec/etl"
	"github.com/etlexec/etlexec/internal/dbtest"
	"github.com/etlexec/etlexec/internal/kinds/kindtest"
	"github.com/etlexec/etlexec/internal/kinds/sqlincremental"
)

// mysqlServerDSN is the MariaDB/MySQL server tests use: ETL_TEST_MYSQL_DSN, else the local
// server, else a private mariadbd this process starts in a temporary directory.
var mysqlServerDSN = sync.OnceValues(func() (string, error) {
	if dsn := os.Getenv("ETL_TEST_MYSQL_DSN"); dsn != "" {
		return dsn, nil
	}
	const local = "root@tcp(127.0.0.1:3306)/"
	if pingMySQL(local) == nil {
		return local, nil
	}
	return startMariaDB()
})

func pingMySQL(dsn string) error {
	db, err := sql.Open("mysql", dsn)
	if err != nil {
		return err
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	return db.PingContext(ctx)
}

// startMariaDB starts a private server on a free loopback port; it lives as long as the test
// process (the kernel kills it when we exit; its directory is left to the OS's temp cleaning).
func startMariaDB() (string, error) {
	dir, err := os.MkdirTemp("", "etl-mariadb-")
	if err != nil {
		return "", err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	port := l.Addr().(*net.TCPAddr).Port
	_ = l.Close()
	data := filepath.Join(dir, "data")
	if out, err := exec.Command("mariadb-install-db", "--no-defaults", "--datadir="+data, "--user=root",
		"--auth-root-authentication-method=normal", "--skip-test-db").CombinedOutput(); err != nil {
		return "", fmt.Errorf("mariadb-install-db: %v: %s", err, out)
	}
	cmd := exec.Command("mariadbd", "--no-defaults", "--datadir="+data, "--user=root", "--port="+strconv.Itoa(port),
		"--bind-address=127.0.0.1", "--socket="+filepath.Join(dir, "sock"), "--skip-log-bin")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return "", fmt.Errorf("start mariadbd: %w", err)
	}
	dsn := fmt.Sprintf("root@tcp(127.0.0.1:%d)/", port)
	for range 300 {
		if pingMySQL(dsn) == nil {
			return dsn, nil
		}
		time.Sleep(100 * time.Millisecond) // the server has no readiness signal but its port
	}
	_ = cmd.Process.Kill()
	return "", fmt.Errorf("mariadbd on port %d did not answer", port)
}

// mysqlDatabase creates a database of its own for the test (dropped when it ends) and returns
// a connection to it and its DSN.
func mysqlDatabase(t *testing.T) (*sql.DB, string) {
	t.Helper()
	server, err := mysqlServerDSN()
	require.NoError(t, err, "no MariaDB/MySQL server for the test")
	var b [6]byte
	_, _ = rand.Read(b[:])
	name := "etl_t_" + hex.EncodeToString(b[:])
	admin, err := sql.Open("mysql", server)
	require.NoError(t, err)
	t.Cleanup(func() { _ = admin.Close() })
	_, err = admin.ExecContext(t.Context(), "CREATE DATABASE "+name)
	require.NoError(t, err)
	t.Cleanup(func() { _, _ = admin.ExecContext(context.Background(), "DROP DATABASE IF EXISTS "+name) })
	cfg, err := mysql.ParseDSN(server)
	require.NoError(t, err)
	cfg.DBName = name
	cfg.ParseTime = true
	cfg.Loc = time.UTC
	cfg.Params = map[string]string{"time_zone": "'+00:00'"}
	db, err := sql.Open("mysql", cfg.FormatDSN())
	require.NoError(t, err)
	db.SetMaxOpenConns(4)
	t.Cleanup(func() { _ = db.Close() })
	return db, cfg.FormatDSN()
}

func TestMySQL(t *testing.T) {
	t.Parallel()
	setupMySQL := func(t *testing.T) (*sql.DB, kindtest.Job) {
		t.Helper()
		src, dsn := mysqlDatabase(t)
		_, err := src.ExecContext(t.Context(), "CREATE TABLE orders (id BIGINT PRIMARY KEY, region VARCHAR(8) NOT NULL, "+
			"name TEXT, amount DECIMAL(12,2), flag TINYINT(1), doc JSON, raw BLOB, "+
			"modified_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6))")
		require.NoError(t, err)
		target := dbtest.Pool(t)
		_, err = target.Exec(t.Context(), `CREATE TABLE dw_orders (id bigint PRIMARY KEY, region text, name text,
			amount numeric(12,2), flag boolean, doc jsonb, raw bytea, modified_at timestamptz)`)
		require.NoError(t, err)
		cfg, err := json.Marshal(map[string]any{
			"dialect": "mysql", "source_url_env": setEnv(t, dsn),
			"query": "SELECT id, region, name, amount, flag, doc, raw, modified_at FROM orders " +
				"WHERE region = :region AND modified_at >= :cursor_start AND modified_at < :cursor_end",
			"modified_column": "modified_at", "target_table": "dw_orders", "key_columns": []string{"id"},
		})
		require.NoError(t, err)
		return src, kindtest.Job{Kind: sqlincremental.Kind, Handler: sqlincremental.Handler, Strategy: etl.StrategyModifiedDate,
			Config: cfg, Params: json.RawMessage(`{"region":"eu"}`), Target: target}
	}

	t.Run("LoadsTypesAndTies", func(t *testing.T) {
		t.Parallel()
		src, job := setupMySQL(t)
		ctx := t.Context()
		_, err := src.ExecContext(ctx, "INSERT INTO orders VALUES "+
			"(1, 'eu', 'tab\there \\\\ back', 12.50, 1, '{\"a\": [1, 2]}', x'00ff', '2026-01-01 10:00:00.123456'), "+
			"(2, 'eu', NULL, NULL, 0, NULL, NULL, '2026-01-01 10:00:01'), "+
			"(3, 'us', 'other region', 1, 1, NULL, NULL, '2026-01-01 10:00:02')")
		require.NoError(t, err)
		var cur kindtest.Cursor
		r := kindtest.Run(ctx, job, &cur, kindtest.Options{})
		require.NoError(t, r.Err)
		require.Equal(t, int64(2), r.Metrics.RecordsRead)
		require.True(t, time.Date(2026, 1, 1, 10, 0, 1, 0, time.UTC).Equal(*cur.Value), "%v", cur.Value)
		require.Contains(t, r.Metrics.Note, "upper")

		var (
			name, amount, doc string
			flag              bool
			raw               []byte
			mod               time.Time
		)
		require.NoError(t, job.Target.QueryRow(ctx, `SELECT name, amount::text, flag, doc::text, raw, modified_at FROM dw_orders WHERE id = 1`).
			Scan(&name, &amount, &flag, &doc, &raw, &mod))
		require.Equal(t, "tab\there \\ back", name)
		require.Equal(t, "12.50", amount)
		require.True(t, flag)
		require.JSONEq(t, `{"a": [1, 2]}`, doc)
		require.Equal(t, []byte{0, 0xff}, raw)
		require.True(t, time.Date(2026, 1, 1, 10, 0, 0, 123456000, time.UTC).Equal(mod), "%v", mod)

		// Rows written later at the cursor's own time are loaded.
		_, err = src.ExecContext(ctx, "INSERT INTO orders (id, region, name, modified_at) VALUES (4, 'eu', 'tied', '2026-01-01 10:00:01')")
		require.NoError(t, err)
		r = kindtest.Run(ctx, job, &cur, kindtest.Options{})
		require.NoError(t, r.Err)
		require.Equal(t, int64(1), r.Metrics.RecordsWritten)
		var n int
		require.NoError(t, job.Target.QueryRow(ctx, `SELECT count(*) FROM dw_orders`).Scan(&n))
		require.Equal(t, 3, n)
	})

	t.Run("LateCommitWithinTheLookback", func(t *testing.T) {
		t.Parallel()
		src, job := setupMySQL(t)
		ctx := t.Context()
		conn, err := src.Conn(ctx)
		require.NoError(t, err)
		defer conn.Close()
		_, err = conn.ExecContext(ctx, "START TRANSACTION")
		require.NoError(t, err)
		_, err = conn.ExecContext(ctx, "INSERT INTO orders (id, region, name) VALUES (1, 'eu', 'late')")
		require.NoError(t, err)
		_, err = src.ExecContext(ctx, "INSERT INTO orders (id, region, name) VALUES (2, 'eu', 'early')")
		require.NoError(t, err)
		var cur kindtest.Cursor
		require.NoError(t, kindtest.Run(ctx, job, &cur, kindtest.Options{}).Err)
		_, err = conn.ExecContext(ctx, "COMMIT")
		require.NoError(t, err)
		r := kindtest.Run(ctx, job, &cur, kindtest.Options{})
		require.NoError(t, r.Err)
		require.Contains(t, r.Metrics.Note, "lookback", "the default 5m lookback re-reads the late row")
		var n int
		require.NoError(t, job.Target.QueryRow(ctx, `SELECT count(*) FROM dw_orders`).Scan(&n))
		require.Equal(t, 2, n)
	})

	t.Run("Errors", func(t *testing.T) {
		t.Parallel()
		src, job := setupMySQL(t)
		_, err := src.ExecContext(t.Context(), "INSERT INTO orders (id, region) VALUES (1, 'eu')")
		require.NoError(t, err)
		for query, want := range map[string]string{
			"SELECT * FROM nowhere WHERE modified_at >= :cursor_start":                "nowhere",
			"SELECT NULL AS id, modified_at FROM orders":                              "key column id is NULL",
			"SELECT id, 'soon' AS modified_at FROM orders":                            "not a timestamp or date column",
			"SELECT id, modified_at FROM orders WHERE region = :no_such":              ":no_such",
			"SELECT id, modified_at FROM orders WHERE id > ? AND 1 = :r":              "positional",
			"SELECT id, modified_at FROM orders WHERE modified_at >= :cursor_start ;": "",
		} {
			var c map[string]any
			require.NoError(t, json.Unmarshal(job.Config, &c))
			c["query"] = query
			j := job
			j.Config, err = json.Marshal(c)
			require.NoError(t, err)
			r := kindtest.Run(t.Context(), j, &kindtest.Cursor{}, kindtest.Options{})
			if want == "" {
				require.NoError(t, r.Err, query)
				continue
			}
			require.Error(t, r.Err, query)
			require.Equal(t, etl.CategoryData, etl.Classify(r.Err), "%s: %v", query, r.Err)
			require.ErrorContains(t, r.Err, want)
		}
	})
}
