package synthetic_test

import (
	"errors"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/etlexec/etlexec/etl"
	"github.com/etlexec/etlexec/internal/kinds/synthetic"
	"github.com/etlexec/etlexec/internal/servertest"
)

// The params the fault suite relies on: append (a double write shows) and crash (the process
// dies as an OOM kill would).

func TestMain(m *testing.M) {
	code := m.Run()
	servertest.RemoveTemplates()
	os.Exit(code)
}

func TestAppendKeepsDuplicates(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("starts a private Postgres")
	}
	pg := servertest.Postgres(t, servertest.PostgresOptions{})
	pool, err := pgxpool.New(t.Context(), pg.URL("postgres"))
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	const params = `{"records":25,"page_size":10,"append":true,"key":"a"}`
	cfg := raw(`{"target_table":"appended"}`)
	for range 2 {
		tx := begin(t, pool)
		it := newItem(etl.ItemSpec{Params: raw(params), Config: cfg, Target: tx})
		require.NoError(t, synthetic.Handler(t.Context(), it))
		require.Equal(t, etl.Metrics{RecordsRead: 25, RecordsWritten: 25, Pages: 3}, it.Metrics())
		require.NoError(t, tx.Commit(t.Context()))
	}
	require.Equal(t, 50, countRows(t, pool, "appended"), "the second write is kept beside the first")
	var distinct int
	require.NoError(t, pool.QueryRow(t.Context(), `SELECT count(DISTINCT (key, seq)) FROM appended`).Scan(&distinct))
	require.Equal(t, 25, distinct)

	// Upserting into the same table is refused rather than silently deduplicated.
	tx := begin(t, pool)
	err = synthetic.Handler(t.Context(), newItem(etl.ItemSpec{Params: raw(`{"records":1,"key":"a"}`), Config: cfg, Target: tx}))
	require.Error(t, err)
	require.Equal(t, etl.CategoryDB, etl.Classify(err))
}

// crashChild is set in the child process TestCrashKillsTheProcess starts.
const crashChild = "SYNTHETIC_CRASH_CHILD"

func TestCrashKillsTheProcess(t *testing.T) {
	if os.Getenv(crashChild) != "" {
		err := synthetic.Handler(t.Context(), newItem(etl.ItemSpec{Params: raw(`{"crash":true,"records":1}`)}))
		t.Fatalf("the handler returned (%v) instead of killing its process", err)
	}
	t.Parallel()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashKillsTheProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashChild+"=1")
	done := make(chan error, 1)
	require.NoError(t, cmd.Start())
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		var exit *exec.ExitError
		require.True(t, errors.As(err, &exit), "child ended with %v", err)
		ws := exit.Sys().(syscall.WaitStatus)
		require.True(t, ws.Signaled(), "child exited (%v) rather than being killed", err)
		require.Equal(t, syscall.SIGKILL, ws.Signal())
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatal("the crashing handler's process was still alive after 30s")
	}
}
