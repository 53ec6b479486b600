package cli_test

import (
	"encoding/json"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/etlexec/etlexec/internal/dbtest"
	"github.com/etlexec/etlexec/internal/httpapi"
	"github.com/etlexec/etlexec/internal/redistest"
	"github.com/etlexec/etlexec/internal/store"
	"github.com/etlexec/etlexec/internal/testfactory"
)

// TestJobsListJSONIsTheAPIsJob checks that `enqueuer jobs list --json` prints each job with the
// keys, and the values, of GET /api/v1/jobs: one job that ran (its last run set) and one that
// never did (null last run), one paused.
func TestJobsListJSONIsTheAPIsJob(t *testing.T) {
	t.Parallel()
	u := dbtest.URL(t)
	queue := redistest.Queue(t)
	mustRun(t, u, "jobs", "apply", "-f", writeFile(t, "jobs.yaml", jobsYAML(queue, "")))
	mustRun(t, u, "jobs", "pause", "regions", "--reason", "maintenance")
	st, err := store.Connect(t.Context(), u)
	require.NoError(t, err)
	defer st.Close()
	testfactory.Run(t.Context(), t, st, &testfactory.RunOpts{JobID: "regions"})
	testfactory.Job(t.Context(), t, st, &testfactory.JobOpts{ID: new("never_ran")})

	var cliJobs []map[string]any
	require.NoError(t, json.Unmarshal([]byte(mustRun(t, u, "jobs", "list", "--json")), &cliJobs))

	srv := httptest.NewServer(httpapi.New(httpapi.Config{Store: st}))
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/api/v1/jobs")
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode, "%s", body)
	var page struct {
		Items []map[string]any `json:"items"`
	}
	require.NoError(t, json.Unmarshal(body, &page))

	byID := func(jobs []map[string]any) map[string]map[string]any {
		out := map[string]map[string]any{}
		for _, j := range jobs {
			id, _ := j["job_id"].(string)
			out[id] = j
		}
		return out
	}
	cli, api := byID(cliJobs), byID(page.Items)
	require.ElementsMatch(t, []string{"regions", "never_ran"}, slices.Collect(maps.Keys(api)), "the API's jobs")
	require.ElementsMatch(t, slices.Collect(maps.Keys(api)), slices.Collect(maps.Keys(cli)), "the CLI's jobs")
	for id, a := range api {
		c := cli[id]
		require.Equal(t, slices.Sorted(maps.Keys(a)), slices.Sorted(maps.Keys(c)), "job %s: the CLI's keys (right) differ from the API's (left)", id)
		require.Equal(t, a, c, "job %s: the CLI's values differ from the API's", id)
	}
	require.NotNil(t, api["regions"]["last_run_id"], "regions ran")
	require.Equal(t, true, api["regions"]["paused"])
	require.Nil(t, api["never_ran"]["last_status"], "never_ran never ran")
}
