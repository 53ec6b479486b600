// Package httpapi serves etlexec's JSON API under /api/v1: the run history (the same store
// queries, filters and page tokens as the enqueuer's `runs`, `items`, `attempts`, `logs` and
// `cursors` commands, whose --json output is the document these endpoints return) and the
// operator's writes (trigger, cancel, rerun, pause, resume: the internal/ops functions the CLI
// and the console call). GET /api/v1/openapi.json describes every endpoint. Authentication and
// the cross-origin guard belong to whoever mounts the handler.
//
//	GET  /api/v1/jobs
//	GET  /api/v1/jobs/{job_id}
//	GET  /api/v1/jobs/{job_id}/cursors?limit=&after=
//	POST /api/v1/jobs/{job_id}/trigger      (Idempotency-Key header)
//	POST /api/v1/jobs/{job_id}/pause
//	POST /api/v1/jobs/{job_id}/resume
//	GET  /api/v1/runs?job=&status=&dry_run=&since=&until=&limit=&after=
//	GET  /api/v1/runs/{run_id}
//	POST /api/v1/runs/{run_id}/cancel
//	POST /api/v1/runs/{run_id}/rerun
//	GET  /api/v1/runs/{run_id}/items?status=&category=&param_hash=&limit=&after=&format=csv
//	GET  /api/v1/runs/{run_id}/attempts?item=&limit=&after=
//	GET  /api/v1/runs/{run_id}/logs?attempt=&item=&level=&grep=&fields=&limit=&after=
//	GET  /api/v1/runs/{run_id}/alerts
//	GET  /api/v1/openapi.json
//
// List parameters (status, category, level) take comma-separated values and may repeat. since
// and until take an RFC 3339 time or a duration back from now (90m, 24h, 7d). A listing returns
// {"items": [...], "next": "TOKEN"}; pass next as after for the following page. Errors are
// {"error": "..."}: 400 names the parameter and value at fault, 404 an unknown run, job or path,
// 409 a state that forbids the write (a paused job, a run that is not active), 422 an
// idempotency key reused for another request.
package httpapi

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/rs/zerolog"

	"github.com/etlexec/etlexec/internal/enqueue"
	"github.com/etlexec/etlexec/internal/store"
)

// Config configures the API handler.
type Config struct {
	// Store is etlexec's database. Required.
	Store *store.Store
	// Enqueuer carries the writes (and its dispatcher cancel's task removals); without it, or
	// with ReadOnly, every write answers 403.
	Enqueuer *enqueue.Enqueuer
	ReadOnly bool
	// Principal names who made a request, recorded on what it changes ("alice", "token").
	// Defaults to "api".
	Principal func(*http.Request) string
}

// Route is one endpoint: its method and path pattern (net/http.ServeMux syntax).
type Route struct {
	Method, Pattern string
	handler         http.HandlerFunc
}

// New returns the /api/v1 handler. It serves full paths, so mount it at "/api/v1/" without
// stripping the prefix.
func New(cfg Config) http.Handler {
	a := &api{st: cfg.Store, cfg: cfg}
	mux := http.NewServeMux()
	for _, rt := range a.routes() {
		mux.HandleFunc(rt.Method+" "+rt.Pattern, rt.handler)
	}
	mux.HandleFunc("/", a.notFound)
	return mux
}

// Routes lists every endpoint New serves, for the OpenAPI document's test.
func Routes() []Route { return (&api{}).routes() }

func (a *api) routes() []Route {
	return []Route{
		{"GET", "/api/v1/openapi.json", a.openapi},
		{"GET", "/api/v1/jobs", a.jobs},
		{"GET", "/api/v1/jobs/{job_id}", a.job},
		{"GET", "/api/v1/jobs/{job_id}/cursors", a.cursors},
		{"POST", "/api/v1/jobs/{job_id}/trigger", a.trigger},
		{"POST", "/api/v1/jobs/{job_id}/pause", a.pause},
		{"POST", "/api/v1/jobs/{job_id}/resume", a.resume},
		{"GET", "/api/v1/runs", a.runs},
		{"GET", "/api/v1/runs/{run_id}", a.run},
		{"POST", "/api/v1/runs/{run_id}/cancel", a.cancel},
		{"POST", "/api/v1/runs/{run_id}/rerun", a.rerun},
		{"GET", "/api/v1/runs/{run_id}/items", a.items},
		{"GET", "/api/v1/runs/{run_id}/attempts", a.attempts},
		{"GET", "/api/v1/runs/{run_id}/logs", a.logs},
		{"GET", "/api/v1/runs/{run_id}/alerts", a.alerts},
	}
}

//go:embed openapi.json
var openapiDoc []byte

// OpenAPI is the OpenAPI 3 document GET /api/v1/openapi.json serves.
func OpenAPI() []byte { return slices.Clone(openapiDoc) }

func (a *api) openapi(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(openapiDoc)
}

type api struct {
	st  *store.Store
	cfg Config
}

func (a *api) jobs(w http.ResponseWriter, r *http.Request) {
	q, ok := params(w, r, "limit", "after")
	if !ok {
		return
	}
	limit := 0
	if !q.int(&limit, "limit") {
		q.failBad(w, r)
		return
	}
	if q.has("limit") && (limit < 1 || limit > store.JobsPageMax) {
		failStatus(w, http.StatusBadRequest, fmt.Sprintf("limit: %d out of range 1..%d", limit, store.JobsPageMax))
		return
	}
	js, next, err := a.st.ListJobs(r.Context(), q.one("after"), limit)
	if err != nil {
		fail(w, r, err)
		return
	}
	reply(w, store.Page[store.JobSummary]{Items: js, Next: next})
}

func (a *api) cursors(w http.ResponseWriter, r *http.Request) {
	q, ok := params(w, r, "limit", "after")
	if !ok {
		return
	}
	f := store.CursorFilter{JobID: r.PathValue("job_id"), After: q.one("after")}
	if !q.int(&f.Limit, "limit") {
		q.failBad(w, r)
		return
	}
	p, err := a.st.HistoryCursors(r.Context(), f)
	if errors.Is(err, store.ErrNotFound) {
		failStatus(w, http.StatusNotFound, fmt.Sprintf("job %q not found", f.JobID))
		return
	}
	respond(w, r, p, err)
}

func (a *api) runs(w http.ResponseWriter, r *http.Request) {
	q, ok := params(w, r, "job", "status", "dry_run", "since", "until", "limit", "after")
	if !ok {
		return
	}
	f := store.RunFilter{JobID: q.one("job"), Status: q.list("status"), After: q.one("after")}
	now := time.Now()
	if !q.int(&f.Limit, "limit") || !q.bool(&f.DryRun, "dry_run") || !q.time(&f.Since, "since", now) || !q.time(&f.Until, "until", now) {
		q.failBad(w, r)
		return
	}
	p, err := a.st.HistoryRuns(r.Context(), f)
	respond(w, r, p, err)
}

func (a *api) run(w http.ResponseWriter, r *http.Request) {
	runID, ok := pathRun(w, r)
	if !ok {
		return
	}
	if _, ok := params(w, r); !ok {
		return
	}
	d, err := a.st.HistoryRun(r.Context(), runID)
	respondRun(w, r, runID, d, err)
}

func (a *api) items(w http.ResponseWriter, r *http.Request) {
	runID, ok := pathRun(w, r)
	if !ok {
		return
	}
	q, ok := params(w, r, "status", "category", "param_hash", "limit", "after", "format")
	if !ok {
		return
	}
	f := store.ItemFilter{RunID: runID, Status: q.list("status"), Category: q.list("category"), After: q.one("after")}
	if !q.int(&f.Limit, "limit") {
		q.failBad(w, r)
		return
	}
	var err error
	if f.ParamHash, err = a.st.ResolveParamHash(r.Context(), runID, q.one("param_hash")); err != nil {
		fail(w, r, err)
		return
	}
	switch q.one("format") {
	case "", "json":
	case "csv":
		a.itemsCSV(w, r, f)
		return
	default:
		fail(w, r, &store.FilterError{Param: "format", Value: q.one("format"), Reason: "want json or csv"})
		return
	}
	p, err := a.st.HistoryItems(r.Context(), f)
	respondRun(w, r, runID, p, err)
}

func (a *api) attempts(w http.ResponseWriter, r *http.Request) {
	runID, ok := pathRun(w, r)
	if !ok {
		return
	}
	q, ok := params(w, r, "item", "limit", "after")
	if !ok {
		return
	}
	f := store.AttemptFilter{RunID: runID, After: q.one("after")}
	if !q.int(&f.Limit, "limit") || !q.int32(&f.ItemNo, "item") {
		q.failBad(w, r)
		return
	}
	p, err := a.st.HistoryAttempts(r.Context(), f)
	respondRun(w, r, runID, p, err)
}

func (a *api) logs(w http.ResponseWriter, r *http.Request) {
	runID, ok := pathRun(w, r)
	if !ok {
		return
	}
	q, ok := params(w, r, "attempt", "item", "level", "grep", "fields", "limit", "after")
	if !ok {
		return
	}
	f := store.LogFilter{RunID: runID, Level: q.list("level"), Text: q.one("grep"), After: q.one("after")}
	if !q.int(&f.Limit, "limit") || !q.int32(&f.ItemNo, "item") || !q.uuid(&f.AttemptID, "attempt") || !q.json(&f.Fields, "fields") {
		q.failBad(w, r)
		return
	}
	p, err := a.st.HistoryLogs(r.Context(), f)
	respondRun(w, r, runID, p, err)
}

func (a *api) notFound(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		failStatus(w, http.StatusMethodNotAllowed, fmt.Sprintf("method %s not allowed on %s: this path is read-only; "+
			"the writes are listed in GET /api/v1/openapi.json", r.Method, r.URL.Path))
		return
	}
	failStatus(w, http.StatusNotFound, fmt.Sprintf("no endpoint %s", r.URL.Path))
}

// query reads a request's parameters; the first bad one is kept for the 400.
type query struct {
	v   url.Values
	bad *store.FilterError
}

// params parses the query string and refuses parameters the endpoint does not take (a typo
// would otherwise silently widen the result) or gives twice.
func params(w http.ResponseWriter, r *http.Request, allowed ...string) (*query, bool) {
	v, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		failStatus(w, http.StatusBadRequest, fmt.Sprintf("query string: %v", err))
		return nil, false
	}
	lists := []string{"status", "category", "level"}
	for k, vs := range v {
		switch {
		case !slices.Contains(allowed, k):
			want := "none"
			if len(allowed) > 0 {
				want = strings.Join(allowed, ", ")
			}
			failStatus(w, http.StatusBadRequest, fmt.Sprintf("%s: unknown parameter; this endpoint takes: %s", k, want))
			return nil, false
		case len(vs) > 1 && !slices.Contains(lists, k):
			failStatus(w, http.StatusBadRequest, fmt.Sprintf("%s: given %d times; give it once", k, len(vs)))
			return nil, false
		}
	}
	return &query{v: v}, true
}

func (q *query) one(k string) string { return q.v.Get(k) }

// list splits every value of k on commas.
func (q *query) list(k string) []string {
	var out []string
	for _, v := range q.v[k] {
		out = append(out, strings.Split(v, ",")...)
	}
	return out
}

func (q *query) fail(k, v, reason string) bool {
	q.bad = &store.FilterError{Param: k, Value: v, Reason: reason}
	return false
}

func (q *query) has(k string) bool { return q.v.Has(k) }

func (q *query) int(dst *int, k string) bool {
	s := q.one(k)
	if s == "" {
		return true
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		return q.fail(k, s, "want an integer")
	}
	// The store reads a zero limit as "the default"; a client that sent limit=0 meant otherwise.
	if k == "limit" && n < 1 {
		return q.fail(k, s, fmt.Sprintf("want 1..%d", store.PageLimitMax))
	}
	*dst = n
	return true
}

func (q *query) int32(dst **int32, k string) bool {
	s := q.one(k)
	if s == "" {
		return true
	}
	n, err := strconv.ParseInt(s, 10, 32)
	if err != nil {
		return q.fail(k, s, "want an integer")
	}
	v := int32(n)
	*dst = &v
	return true
}

func (q *query) bool(dst **bool, k string) bool {
	s := q.one(k)
	if s == "" {
		return true
	}
	b, err := strconv.ParseBool(s)
	if err != nil {
		return q.fail(k, s, "want true or false")
	}
	*dst = &b
	return true
}

func (q *query) time(dst **time.Time, k string, now time.Time) bool {
	s := q.one(k)
	if s == "" {
		return true
	}
	t, err := store.ParseTimeBound(s, now)
	if err != nil {
		return q.fail(k, s, err.Error())
	}
	*dst = &t
	return true
}

func (q *query) uuid(dst **uuid.UUID, k string) bool {
	s := q.one(k)
	if s == "" {
		return true
	}
	id, err := uuid.Parse(s)
	if err != nil {
		return q.fail(k, s, "not a UUID")
	}
	*dst = &id
	return true
}

func (q *query) json(dst *json.RawMessage, k string) bool {
	s := q.one(k)
	if s == "" {
		return true
	}
	if !json.Valid([]byte(s)) {
		return q.fail(k, s, `not valid JSON; want an object such as {"page":3}`)
	}
	*dst = json.RawMessage(s)
	return true
}

func (q *query) failBad(w http.ResponseWriter, r *http.Request) { fail(w, r, q.bad) }

func pathRun(w http.ResponseWriter, r *http.Request) (uuid.UUID, bool) {
	s := r.PathValue("run_id")
	id, err := uuid.Parse(s)
	if err != nil {
		fail(w, r, &store.FilterError{Param: "run_id", Value: s, Reason: "not a UUID"})
		return uuid.Nil, false
	}
	return id, true
}

func respondRun(w http.ResponseWriter, r *http.Request, runID uuid.UUID, v any, err error) {
	if errors.Is(err, store.ErrNotFound) {
		failStatus(w, http.StatusNotFound, fmt.Sprintf("run %s not found", runID))
		return
	}
	respond(w, r, v, err)
}

func respond(w http.ResponseWriter, r *http.Request, v any, err error) {
	if err != nil {
		fail(w, r, err)
		return
	}
	reply(w, v)
}

func reply(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v) // the client going away is the only way this fails
}

// fail answers 400 for a bad filter (its message names the parameter) and 500 otherwise; the
// cause of a 500 goes to the request's logger, not to the client.
func fail(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, store.ErrBadFilter) {
		failStatus(w, http.StatusBadRequest, err.Error())
		return
	}
	if errors.Is(err, context.Canceled) && r.Context().Err() != nil {
		return // the client left
	}
	zerolog.Ctx(r.Context()).Error().Err(err).Str("path", r.URL.Path).Msg("api request failed")
	failStatus(w, http.StatusInternalServerError, "internal error")
}

func failStatus(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
}
