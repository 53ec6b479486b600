package faults_test

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/etlexec/etlexec/internal/runstate"
	"github.com/etlexec/etlexec/internal/servertest"
)

// TestFaultEnqueuerKilledMidFanOut SIGKILLs a real `enqueuer trigger` process after the run is
// in Postgres and some, not all, of its tasks are in Redis. The workers' reconciler must finish
// the fan-out from Postgres: every item runs exactly once.
func TestFaultEnqueuerKilledMidFanOut(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 10*time.Second)
	e.lease = 15 * time.Second // nothing kills a worker here; see TestFaultTenThousandItems
	const n = 5000
	paramsFile := filepath.Join(t.TempDir(), "params.jsonl")
	f, err := os.Create(paramsFile)
	require.NoError(t, err)
	bw := bufio.NewWriter(f)
	for i := 0; i < n; i++ {
		fmt.Fprintf(bw, "{\"noop\":true,\"key\":\"m%d\"}\n", i)
	}
	require.NoError(t, bw.Flush())
	require.NoError(t, f.Close())

	insp := e.inspector()
	cmd := exec.Command(enqueuerBin, "trigger", jobID, "--params-file", paramsFile)
	cmd.Env = e.processEnv("ETL_LOG_LEVEL=warn")
	require.NoError(t, cmd.Start())
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()

	// Kill as soon as tasks start to arrive in Redis: Postgres holds the whole run by then.
	err = servertest.Poll(60*time.Second, 2*time.Millisecond, func() (bool, error) {
		select {
		case err := <-exited:
			return false, fmt.Errorf("enqueuer finished before any task was seen (%v); nothing to kill", err)
		default:
		}
		info, err := insp.GetQueueInfo(e.queue)
		return err == nil && info.Pending > 0, nil
	})
	require.NoError(t, err, "waiting for the first task in Redis")
	require.NoError(t, cmd.Process.Kill())
	<-exited
	var runID uuid.UUID
	require.NoError(t, e.st.Pool().QueryRow(t.Context(), `SELECT run_id FROM dw_etl_runs WHERE job_id = $1`, jobID).Scan(&runID))
	var enqueued bool
	require.NoError(t, e.st.Pool().QueryRow(t.Context(), `SELECT enqueued_at IS NOT NULL FROM dw_etl_runs WHERE run_id = $1`, runID).Scan(&enqueued))
	info, err := insp.GetQueueInfo(e.queue)
	require.NoError(t, err)
	t.Logf("killed with %d of %d tasks in Redis; run marked enqueued: %t", info.Pending, n, enqueued)
	require.False(t, enqueued, "the kill must land mid-fan-out")
	require.Less(t, info.Pending, n, "the kill must land mid-fan-out")

	e.startWorker("w1")
	e.startWorker("w2")
	run := e.waitRun(runID, 150*time.Second)
	e.checkInvariants(runID, runstate.StatusSuccess)
	require.EqualValues(t, n, run.ItemsSucceeded)
	require.EqualValues(t, n, run.AttemptCount, "each item ran exactly once")
}
