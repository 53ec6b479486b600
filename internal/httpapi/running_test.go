package httpapi_test

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/routers/gorillamux"
	"github.com/stretchr/testify/require"

	"github.com/etlexec/etlexec/internal/dbtest"
	"github.com/etlexec/etlexec/internal/httpapi"
	"github.com/etlexec/etlexec/internal/runstate"
	"github.com/etlexec/etlexec/internal/store"
	"github.com/etlexec/etlexec/internal/workertest"
)

// TestRunShowsRunningItems runs a job whose two items report progress and block: GET
// /api/v1/runs/{run_id} lists them running with their message and counts, as the OpenAPI
// document describes, and not once they are released.
func TestRunShowsRunningItems(t *testing.T) {
	t.Parallel()
	st := dbtest.Store(t)
	env := workertest.Start(t, st)
	srv := httptest.NewServer(httpapi.New(httpapi.Config{Store: st}))
	t.Cleanup(srv.Close)
	doc := loadDoc(t)
	doc.Servers = openapi3.Servers{{URL: srv.URL}}
	router, err := gorillamux.NewRouter(doc)
	require.NoError(t, err)
	b := &writeBundle{st: st, srv: srv, router: router}

	runID := env.Trigger(t, 2)
	path := apiBase + "/runs/" + runID.String()
	getRun := func() store.RunDetail {
		r := b.do(t, http.MethodGet, path, "", nil)
		require.Equal(t, http.StatusOK, r.status, string(r.body))
		var d store.RunDetail
		r.decode(t, &d)
		return d
	}
	workertest.Eventually(t, 20*time.Second, path+" never listed both items with their progress", func() bool {
		d := getRun()
		return workertest.RunningWithProgress(d, 1) && workertest.RunningWithProgress(d, 2)
	})
	d := getRun()
	require.Equal(t, runstate.StatusRunning, d.Run.Status)
	require.Equal(t, 2, d.Attempts.Running)
	require.Zero(t, d.RunningMore)
	for _, r := range d.Running {
		require.Equal(t, "workertest", r.Worker)
		require.NotNil(t, r.ProgressAt)
		require.False(t, r.ProgressAt.Before(r.StartedAt), "progress is reported after the claim")
	}

	env.Release()
	require.Equal(t, runstate.StatusSuccess, env.WaitRun(t, runID).Status)
	d = getRun()
	require.Empty(t, d.Running)
	require.Zero(t, d.RunningMore)
	require.Zero(t, d.Attempts.Running)
}
