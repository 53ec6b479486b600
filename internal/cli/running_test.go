package cli_test

import (
	"encoding/json"
	"regexp"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/etlexec/etlexec/internal/dbtest"
	"github.com/etlexec/etlexec/internal/runstate"
	"github.com/etlexec/etlexec/internal/store"
	"github.com/etlexec/etlexec/internal/workertest"
)

// TestRunsShowRunningItems runs a job whose two items report progress and block: `runs show`
// (table and --json) lists them RUNNING with their message and counts until they are released.
func TestRunsShowRunningItems(t *testing.T) {
	t.Parallel()
	u := dbtest.URL(t)
	st, err := store.Connect(t.Context(), u)
	require.NoError(t, err)
	t.Cleanup(st.Close)
	env := workertest.Start(t, st)
	runID := env.Trigger(t, 2)

	show := func() store.RunDetail {
		var d store.RunDetail
		require.NoError(t, json.Unmarshal([]byte(mustCLI(t, u, "runs", "show", runID.String(), "--json")), &d))
		return d
	}
	workertest.Eventually(t, 20*time.Second, "runs show --json never listed both items with their progress", func() bool {
		d := show()
		return workertest.RunningWithProgress(d, 1) && workertest.RunningWithProgress(d, 2)
	})
	d := show()
	require.Zero(t, d.RunningMore)
	require.Equal(t, "workertest", d.Running[0].Worker)
	require.EqualValues(t, 1, d.Running[0].ItemAttempt)

	out := mustCLI(t, u, "runs", "show", runID.String())
	require.Regexp(t, `(?m)^RUNNING\s+ITEM\s+ATTEMPT\s+WORKER\s+FOR\s+RECORDS\s+PAGES\s+PROGRESS\s+UPDATED$`, out)
	for _, item := range []string{"1", "2"} {
		require.Regexp(t, `(?m)^\s+`+item+`\s+1\s+workertest\s+\d+(m\d+)?s\s+120 read, 100 written\s+3\s+`+
			regexp.QuoteMeta(workertest.Progress)+`\s+\d+(m\d+)?s ago$`, out)
	}

	env.Release()
	run := env.WaitRun(t, runID)
	require.Equal(t, runstate.StatusSuccess, run.Status)
	d = show()
	require.Empty(t, d.Running)
	require.NotNil(t, d.Running, "an empty list encodes as []")
	require.Zero(t, d.RunningMore)
	require.NotContains(t, mustCLI(t, u, "runs", "show", runID.String()), "RUNNING")
}
