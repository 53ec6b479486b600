package httpapi_test

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"
	"github.com/hibiken/asynq"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/etlexec/etlexec/internal/dbtest"
	"github.com/etlexec/etlexec/internal/enqueue"
	"github.com/etlexec/etlexec/internal/httpapi"
	"github.com/etlexec/etlexec/internal/redistest"
	"github.com/etlexec/etlexec/internal/store"
)

// loadDoc parses and validates the served OpenAPI document.
func loadDoc(t *testing.T) *openapi3.T {
	t.Helper()
	doc, err := openapi3.NewLoader().LoadFromData(httpapi.OpenAPI())
	require.NoError(t, err)
	require.NoError(t, doc.Validate(context.Background()), "the OpenAPI document is not valid OpenAPI 3")
	for _, s := range doc.Components.Schemas {
		closeObjects(s, map[*openapi3.Schema]bool{})
	}
	return doc
}

// closeObjects makes every object schema under ref refuse properties it does not declare,
// unless it says additionalProperties itself: the served document stays open so that clients
// tolerate keys added later, but a response of these tests carrying a key the document does not
// describe (a new column that reached the JSON and not the document) fails validation.
func closeObjects(ref *openapi3.SchemaRef, seen map[*openapi3.Schema]bool) {
	if ref == nil || ref.Value == nil || seen[ref.Value] {
		return
	}
	s := ref.Value
	seen[s] = true
	if s.Type.Is(openapi3.TypeObject) && len(s.Properties) > 0 &&
		s.AdditionalProperties.Has == nil && s.AdditionalProperties.Schema == nil {
		s.AdditionalProperties.Has = openapi3.Ptr(false)
	}
	for _, p := range s.Properties {
		closeObjects(p, seen)
	}
	closeObjects(s.Items, seen)
	for _, list := range [][]*openapi3.SchemaRef{s.AllOf, s.AnyOf, s.OneOf} {
		for _, r := range list {
			closeObjects(r, seen)
		}
	}
}

// TestOpenAPIDescribesEveryRoute: each endpoint the handler serves is in the document, and the
// document describes no endpoint the handler lacks.
func TestOpenAPIDescribesEveryRoute(t *testing.T) {
	t.Parallel()
	doc := loadDoc(t)
	var served, documented []string
	for _, rt := range httpapi.Routes() {
		served = append(served, rt.Method+" "+rt.Pattern)
	}
	for path, item := range doc.Paths.Map() {
		for method := range item.Operations() {
			documented = append(documented, method+" "+path)
		}
	}
	slices.Sort(served)
	slices.Sort(documented)
	require.Equal(t, served, documented)
}

// writeBundle serves the API with writes enabled over a fresh database and queue; every
// response is checked against the OpenAPI document.
type writeBundle struct {
	st     *store.Store
	queue  string
	srv    *httptest.Server
	router routers.Router
	insp   *asynq.Inspector
}

func setupWrites(t *testing.T) *writeBundle {
	t.Helper()
	b := &writeBundle{st: dbtest.Store(t), queue: redistest.Queue(t)}
	enq, err := enqueue.New(enqueue.Config{Store: b.st, Redis: redistest.ConnOpt(t), Logger: zerolog.Nop()})
	require.NoError(t, err)
	b.insp = asynq.NewInspector(redistest.ConnOpt(t))
	t.Cleanup(func() { b.insp.Close() })
	_, err = b.st.Pool().Exec(t.Context(), `INSERT INTO dw_etl_jobs (job_id, kind, supports_params, overlap_policy, queue)
		VALUES ('regions', 'synthetic', true, 'allow', $1)`, b.queue)
	require.NoError(t, err)
	b.srv = httptest.NewServer(httpapi.New(httpapi.Config{Store: b.st, Enqueuer: enq,
		Principal: func(*http.Request) string { return "tester" }}))
	t.Cleanup(b.srv.Close)
	b.router = documentedRouter(t, b.srv.URL)
	return b
}

type apiResponse struct {
	status int
	header http.Header
	body   []byte
}

func (r apiResponse) decode(t *testing.T, v any) {
	t.Helper()
	require.NoError(t, json.Unmarshal(r.body, v), string(r.body))
}

// do sends a request and validates the response against the document's operation.
func (b *writeBundle) do(t *testing.T, method, path, contentType string, body []byte, hdr ...string) apiResponse {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, b.srv.URL+path, bytes.NewReader(body))
	require.NoError(t, err)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	require.NoError(t, err)

	checkDocumented(t, b.router, req, body, res, raw)
	return apiResponse{status: res.StatusCode, header: res.Header, body: raw}
}

// documentedRouter finds the document's operations on the server at serverURL.
func documentedRouter(t *testing.T, serverURL string) routers.Router {
	t.Helper()
	doc := loadDoc(t)
	doc.Servers = openapi3.Servers{{URL: serverURL}}
	r, err := gorillamux.NewRouter(doc)
	require.NoError(t, err)
	return r
}

// checkDocumented fails t unless the response res (body raw) to req (body reqBody) is what the
// OpenAPI document says that operation answers, every key of it described (closeObjects).
func checkDocumented(t *testing.T, router routers.Router, req *http.Request, reqBody []byte, res *http.Response, raw []byte) {
	t.Helper()
	vreq, err := http.NewRequestWithContext(t.Context(), req.Method, req.URL.String(), bytes.NewReader(reqBody))
	require.NoError(t, err)
	vreq.Header = req.Header.Clone()
	route, pathParams, err := router.FindRoute(vreq)
	if errors.Is(err, routers.ErrPathNotFound) && res.StatusCode == http.StatusNotFound {
		return // an undocumented path, answered as one
	}
	require.NoError(t, err, "%s %s is not in the OpenAPI document", req.Method, req.URL.Path)
	in := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: &openapi3filter.RequestValidationInput{Request: vreq, PathParams: pathParams, Route: route,
			Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc}},
		Status: res.StatusCode, Header: res.Header,
	}
	in.SetBodyBytes(raw)
	require.NoError(t, openapi3filter.ValidateResponse(t.Context(), in), "%s %s → %d %s: not as documented",
		req.Method, req.URL.RequestURI(), res.StatusCode, raw)
}

func (b *writeBundle) postJSON(t *testing.T, path, body string, hdr ...string) apiResponse {
	t.Helper()
	return b.do(t, http.MethodPost, path, "application/json", []byte(body), hdr...)
}

func (b *writeBundle) pending(t *testing.T) int {
	t.Helper()
	qi, err := b.insp.GetQueueInfo(b.queue)
	if err != nil {
		return 0
	}
	return qi.Pending
}

type triggerResult struct {
	Run struct {
		RunID  string `json:"run_id"`
		Status string `json:"status"`
		DryRun bool   `json:"dry_run"`
	} `json:"run"`
	Items    int  `json:"items"`
	Enqueued int  `json:"enqueued"`
	Replayed bool `json:"replayed"`
}

func TestWrites(t *testing.T) {
	t.Parallel()
	b := setupWrites(t)
	var runID string

	t.Run("TriggerIdempotent", func(t *testing.T) {
		body := `{"params": [{"r": "eu"}, {"r": "us"}, {"r": "eu"}]}`
		r := b.postJSON(t, "/api/v1/jobs/regions/trigger", body, "Idempotency-Key", "k-1")
		require.Equal(t, http.StatusCreated, r.status, string(r.body))
		var first triggerResult
		r.decode(t, &first)
		require.Equal(t, 2, first.Items, "duplicates dropped")
		require.Equal(t, 2, first.Enqueued)
		require.Equal(t, "/api/v1/runs/"+first.Run.RunID, r.header.Get("Location"))
		runID = first.Run.RunID

		r = b.postJSON(t, "/api/v1/jobs/regions/trigger", body, "Idempotency-Key", "k-1")
		require.Equal(t, http.StatusOK, r.status)
		require.Equal(t, "true", r.header.Get("Idempotent-Replayed"))
		var again triggerResult
		r.decode(t, &again)
		require.True(t, again.Replayed)
		require.Equal(t, first.Run.RunID, again.Run.RunID)
		require.Equal(t, 2, b.pending(t), "no second run's tasks")

		r = b.postJSON(t, "/api/v1/jobs/regions/trigger", `{"params": {"r": "apac"}}`, "Idempotency-Key", "k-1")
		require.Equal(t, http.StatusUnprocessableEntity, r.status)
	})

	t.Run("TriggerUploadAndForm", func(t *testing.T) {
		var buf bytes.Buffer
		mw := multipart.NewWriter(&buf)
		fw, err := mw.CreateFormFile("params_file", "p.jsonl")
		require.NoError(t, err)
		_, _ = fw.Write([]byte("{\"r\":\"a\"}\n{\"r\":\"b\"}\n{\"r\":\"c\"}\n"))
		require.NoError(t, mw.WriteField("dry_run", "true"))
		require.NoError(t, mw.Close())
		r := b.do(t, http.MethodPost, "/api/v1/jobs/regions/trigger", mw.FormDataContentType(), buf.Bytes())
		require.Equal(t, http.StatusCreated, r.status, string(r.body))
		var res triggerResult
		r.decode(t, &res)
		require.Equal(t, 3, res.Items)
		require.True(t, res.Run.DryRun)

		r = b.do(t, http.MethodPost, "/api/v1/jobs/regions/trigger", "application/x-www-form-urlencoded",
			[]byte("param=r%3Dzz&param=n%3D3&idempotency_key=form-1"))
		require.Equal(t, http.StatusCreated, r.status, string(r.body))
		r.decode(t, &res)
		require.Equal(t, 1, res.Items)

		for _, bad := range []string{`{"params": 3}`, `{"params": [{"r": "x"}], "dry": true}`, `{"dry_run": "yes"}`} {
			r := b.postJSON(t, "/api/v1/jobs/regions/trigger", bad)
			require.Equal(t, http.StatusBadRequest, r.status, bad)
		}
		require.Equal(t, http.StatusNotFound, b.postJSON(t, "/api/v1/jobs/nope/trigger", `{}`).status)
	})

	t.Run("PauseResume", func(t *testing.T) {
		r := b.postJSON(t, "/api/v1/jobs/regions/pause", `{"reason": "vendor outage"}`)
		require.Equal(t, http.StatusOK, r.status, string(r.body))
		var c store.JobControl
		r.decode(t, &c)
		require.True(t, c.Paused)
		require.Equal(t, "api:tester", *c.PausedBy)

		r = b.postJSON(t, "/api/v1/jobs/regions/trigger", `{"params": {"r": "x"}}`)
		require.Equal(t, http.StatusConflict, r.status)
		require.Contains(t, string(r.body), "vendor outage")
		r = b.do(t, http.MethodGet, "/api/v1/jobs/regions", "", nil)
		require.Equal(t, http.StatusOK, r.status)
		require.Contains(t, string(r.body), `"paused":true`)

		r = b.postJSON(t, "/api/v1/jobs/regions/resume", ``)
		require.Equal(t, http.StatusOK, r.status, string(r.body))
		r.decode(t, &c)
		require.False(t, c.Paused)
		require.Equal(t, http.StatusNotFound, b.postJSON(t, "/api/v1/jobs/nope/pause", `{}`).status)
	})

	t.Run("CancelAndRerun", func(t *testing.T) {
		r := b.postJSON(t, "/api/v1/runs/"+runID+"/rerun", `{}`)
		require.Equal(t, http.StatusConflict, r.status, "an active run is not rerun")
		r = b.postJSON(t, "/api/v1/runs/"+runID+"/cancel", `{"reason": "wrong window"}`)
		require.Equal(t, http.StatusOK, r.status, string(r.body))
		require.Contains(t, string(r.body), `"status":"CANCELLED"`)
		var by, reason string
		require.NoError(t, b.st.Pool().QueryRow(t.Context(), `SELECT cancelled_by, cancel_reason FROM dw_etl_runs WHERE run_id = $1`, runID).
			Scan(&by, &reason))
		require.Equal(t, []string{"api:tester", "wrong window"}, []string{by, reason})
		require.Equal(t, http.StatusConflict, b.postJSON(t, "/api/v1/runs/"+runID+"/cancel", `{}`).status)

		before := b.pending(t)
		r = b.postJSON(t, "/api/v1/runs/"+runID+"/rerun", `{"statuses": ["CANCELLED"]}`)
		require.Equal(t, http.StatusOK, r.status, string(r.body))
		require.Contains(t, string(r.body), `"preview":true`, "preview is the default")
		require.Equal(t, before, b.pending(t))
		r = b.postJSON(t, "/api/v1/runs/"+runID+"/rerun", `{"statuses": ["CANCELLED"], "preview": false}`)
		require.Equal(t, http.StatusOK, r.status, string(r.body))
		require.Contains(t, string(r.body), `"enqueued":2`)
		require.Equal(t, http.StatusBadRequest, b.postJSON(t, "/api/v1/runs/"+runID+"/rerun", `{"statuses": ["NOPE"]}`).status)
	})

	t.Run("ItemsCSVAndHashPrefix", func(t *testing.T) {
		r := b.do(t, http.MethodGet, "/api/v1/runs/"+runID+"/items?format=csv", "", nil)
		require.Equal(t, http.StatusOK, r.status)
		require.True(t, strings.HasPrefix(r.header.Get("Content-Type"), "text/csv"))
		recs, err := csv.NewReader(bytes.NewReader(r.body)).ReadAll()
		require.NoError(t, err)
		require.Len(t, recs, 3, "header and two items")
		require.Equal(t, "item_no", recs[0][0])
		hash := recs[1][4]

		var page store.Page[store.ItemRow]
		r = b.do(t, http.MethodGet, "/api/v1/runs/"+runID+"/items?param_hash="+hash[:10], "", nil)
		require.Equal(t, http.StatusOK, r.status)
		r.decode(t, &page)
		require.Len(t, page.Items, 1)
		require.Equal(t, hash, page.Items[0].ParamHash)

		require.Equal(t, http.StatusNotFound, b.do(t, http.MethodGet, "/api/v1/runs/"+noSuch+"/items?format=csv", "", nil).status)
		require.Equal(t, http.StatusBadRequest, b.do(t, http.MethodGet, "/api/v1/runs/"+runID+"/items?limit=0", "", nil).status)
		require.Equal(t, http.StatusBadRequest, b.do(t, http.MethodGet, "/api/v1/runs/"+runID+"/items?format=xml", "", nil).status)
	})

	t.Run("Alerts", func(t *testing.T) {
		r := b.do(t, http.MethodGet, "/api/v1/runs/"+runID+"/alerts", "", nil)
		require.Equal(t, http.StatusOK, r.status)
		require.JSONEq(t, `{"items": []}`, string(r.body))
		_, err := b.st.Pool().Exec(t.Context(), `INSERT INTO dw_etl_alert_deliveries (delivery_id, run_id, job_id, event, occurred_at, destination, status, attempts, payload)
			VALUES (gen_random_uuid(), $1, 'regions', 'run_ended', now(), 'webhook', 'PENDING', 1, '{"event": "run_ended"}')`, runID)
		require.NoError(t, err)
		_, err = b.st.Pool().Exec(t.Context(), `INSERT INTO dw_etl_alert_attempts (delivery_id, attempt, status_code, error, duration_ms)
			SELECT delivery_id, 1, 503, 'HTTP 503', 12 FROM dw_etl_alert_deliveries`)
		require.NoError(t, err)
		r = b.do(t, http.MethodGet, "/api/v1/runs/"+runID+"/alerts", "", nil)
		require.Equal(t, http.StatusOK, r.status)
		require.Contains(t, string(r.body), `"attempt_log":[{"attempt":1`)
		require.Equal(t, http.StatusNotFound, b.do(t, http.MethodGet, "/api/v1/runs/"+noSuch+"/alerts", "", nil).status)
	})
}
