package serve

// The web console: server-rendered pages over the store's history queries. Every page is
// rendered into a buffer first, so a failed query is a clean error page, never half a page.

import (
	"bytes"
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/etlexec/etlexec/internal/ops"
	"github.com/etlexec/etlexec/internal/store"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Page sizes and display caps of the console.
const (
	jobRunsPage   = 50
	logsPage      = 100
	gridItemsMax  = 5000 // items drawn in a run's status grid
	timelineMax   = 2000 // attempts drawn in a run's timeline
	failedListMax = 50   // failed attempts listed with their errors
)

// RerunStatusesDefault are the item statuses a rerun picks when the request names none.
var RerunStatusesDefault = []string{"FAILED", "CANCELLED"}

// contentSecurityPolicy keeps console pages to the binary's own assets: no inline script or
// style, no CDN, no framing.
const contentSecurityPolicy = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; " +
	"base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

type console struct {
	s     *Server
	pages map[string]*template.Template
}

func newConsole(s *Server) (*console, error) {
	c := &console{s: s, pages: map[string]*template.Template{}}
	for _, name := range []string{"jobs.html", "job.html", "run.html", "action.html", "error.html"} {
		t, err := template.New(name).Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/"+name)
		if err != nil {
			return nil, fmt.Errorf("parse console template %s: %w", name, err)
		}
		c.pages[name] = t
	}
	return c, nil
}

func (c *console) register(mux *http.ServeMux) {
	mux.HandleFunc("GET /{$}", c.jobs)
	mux.HandleFunc("GET /jobs/{job_id}", c.job)
	mux.HandleFunc("GET /runs/{run_id}", c.run)
	mux.HandleFunc("POST /runs/{run_id}/cancel", c.cancel)
	mux.HandleFunc("POST /runs/{run_id}/rerun", c.rerun)
}

func staticHandler() http.Handler {
	sub, err := fs.Sub(staticFS, "static")
	if err != nil {
		panic(err) // the embed directive guarantees the directory
	}
	files := http.StripPrefix("/static/", http.FileServerFS(sub))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=300")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		files.ServeHTTP(w, r)
	})
}

// base is what the layout needs on every page.
type base struct {
	Title    string
	Who      string
	ReadOnly bool
	// CanAct is true when cancel and rerun are offered (not read-only).
	CanAct bool
}

func (c *console) base(r *http.Request, title string) base {
	return base{Title: title, Who: principal(r), ReadOnly: c.s.cfg.ReadOnly, CanAct: !c.s.cfg.ReadOnly}
}

func (c *console) render(w http.ResponseWriter, status int, page string, data any) {
	var buf bytes.Buffer
	if err := c.pages[page].ExecuteTemplate(&buf, "layout", data); err != nil {
		c.s.log.Error().Err(err).Str("page", page).Msg("render console page")
		http.Error(w, "render page: "+err.Error(), http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", contentSecurityPolicy)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "same-origin")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

type errorPage struct {
	base
	Status  int
	Message string
}

func (c *console) fail(w http.ResponseWriter, r *http.Request, status int, err error) {
	if status >= 500 {
		c.s.log.Error().Err(err).Str("path", r.URL.Path).Msg("console request failed")
	}
	c.render(w, status, "error.html", errorPage{base: c.base(r, http.StatusText(status)), Status: status, Message: err.Error()})
}

// statusOf maps a store or ops error to an HTTP status.
func statusOf(err error) int {
	switch {
	case errors.Is(err, store.ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, store.ErrBadFilter):
		return http.StatusBadRequest
	case errors.Is(err, store.ErrRunNotActive), errors.Is(err, store.ErrRunNotFinished),
		errors.Is(err, store.ErrActiveRun), errors.Is(err, ops.ErrNothingToRerun):
		return http.StatusConflict
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

// ---- jobs ----

type jobsPage struct {
	base
	Jobs []store.JobSummary
	// Next is the job id the next page starts after; "" on the last page.
	Next string
}

func (c *console) jobs(w http.ResponseWriter, r *http.Request) {
	jobs, next, err := c.s.cfg.Store.ListJobs(r.Context(), r.URL.Query().Get("after"), store.JobsPageDefault)
	if err != nil {
		c.fail(w, r, statusOf(err), fmt.Errorf("list jobs: %w", err))
		return
	}
	c.render(w, http.StatusOK, "jobs.html", jobsPage{base: c.base(r, "Jobs"), Jobs: jobs, Next: next})
}

// ---- one job's runs ----

type jobPage struct {
	base
	Job       store.Job
	Runs      []store.RunRow
	Status    string // the status filter, "" for all
	Statuses  []string
	First     bool // this is the newest page
	NextURL   string
	FirstURL  string
	Durations barChart
	Written   barChart
}

func (c *console) job(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	jobID := r.PathValue("job_id")
	job, err := c.s.cfg.Store.GetJob(ctx, jobID)
	if err != nil {
		c.fail(w, r, statusOf(err), err)
		return
	}
	q := r.URL.Query()
	f := store.RunFilter{JobID: jobID, Limit: jobRunsPage, After: q.Get("after")}
	if st := q.Get("status"); st != "" {
		f.Status = []string{st}
	}
	page, err := c.s.cfg.Store.HistoryRuns(ctx, f)
	if err != nil {
		c.fail(w, r, statusOf(err), err)
		return
	}
	p := jobPage{
		base: c.base(r, "Job "+jobID), Job: job, Runs: page.Items, Status: strings.ToUpper(q.Get("status")),
		Statuses: store.RunStatuses, First: f.After == "",
	}
	self := "/jobs/" + url.PathEscape(jobID)
	keep := url.Values{}
	if p.Status != "" {
		keep.Set("status", p.Status)
	}
	p.FirstURL = withQuery(self, keep)
	if page.Next != "" {
		next := cloneValues(keep)
		next.Set("after", page.Next)
		p.NextURL = withQuery(self, next)
	}
	p.Durations, p.Written = runCharts(page.Items)
	c.render(w, http.StatusOK, "job.html", p)
}

// ---- one run ----

type runPage struct {
	base
	D           store.RunDetail
	Queue       string
	AsynqmonURL string
	Active      bool // PENDING or RUNNING: cancel is offered
	Rerunnable  bool // ended with items: rerun is offered
	Metrics     []kv
	ItemLegend  []legendEntry
	Items       []store.ItemRow
	ItemsShown  int
	ItemsCapped bool
	Timeline    timeline
	Failed      []store.AttemptRow
	Logs        []store.LogLine
	LogForm     logForm
	LogErr      string
	LogsNextURL string
	RerunOpts   []rerunOpt
}

type kv struct{ Key, Value string }

type legendEntry struct {
	Status string
	Count  int
}

type rerunOpt struct {
	Status  string
	Checked bool
}

type logForm struct {
	Level, Item, Attempt, Text, Fields string
	Levels                             []string
	Filtered                           bool
}

func (c *console) run(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	runID, err := uuid.Parse(r.PathValue("run_id"))
	if err != nil {
		c.fail(w, r, http.StatusNotFound, fmt.Errorf("run id %q: not a UUID", r.PathValue("run_id")))
		return
	}
	st := c.s.cfg.Store
	d, err := st.HistoryRun(ctx, runID)
	if err != nil {
		c.fail(w, r, statusOf(err), err)
		return
	}
	p := runPage{base: c.base(r, "Run "+runID.String()), D: d, Metrics: metricsKV(d.Run.Metrics)}
	p.Active = d.Run.Status == "PENDING" || d.Run.Status == "RUNNING"
	p.Rerunnable = !p.Active && d.Run.Status != "SKIPPED"
	if job, err := st.GetJob(ctx, d.Run.JobID); err == nil {
		p.Queue = job.Queue
		p.AsynqmonURL = AsynqmonPath + "/queues/" + url.PathEscape(job.Queue)
	} else if !errors.Is(err, store.ErrNotFound) {
		c.fail(w, r, statusOf(err), err)
		return
	}
	p.ItemLegend = legend(d.Items)

	// Items for the status grid, a page of 1000 at a time up to gridItemsMax.
	for after := ""; len(p.Items) < gridItemsMax; {
		page, err := st.HistoryItems(ctx, store.ItemFilter{RunID: runID, Limit: store.PageLimitMax, After: after})
		if err != nil {
			c.fail(w, r, statusOf(err), err)
			return
		}
		p.Items = append(p.Items, page.Items...)
		if after = page.Next; after == "" {
			break
		}
	}
	p.ItemsShown = len(p.Items)
	p.ItemsCapped = int(d.Run.ItemCount) > p.ItemsShown

	// Attempts for the timeline, in attempt_no order, up to timelineMax.
	var attempts []store.AttemptRow
	for after := ""; len(attempts) < timelineMax; {
		page, err := st.HistoryAttempts(ctx, store.AttemptFilter{RunID: runID, Limit: store.PageLimitMax, After: after})
		if err != nil {
			c.fail(w, r, statusOf(err), err)
			return
		}
		attempts = append(attempts, page.Items...)
		if after = page.Next; after == "" {
			break
		}
	}
	p.Timeline = attemptTimeline(runID, attempts, time.Now())
	for _, a := range attempts {
		if a.ErrorMessage != nil && len(p.Failed) < failedListMax {
			p.Failed = append(p.Failed, a)
		}
	}

	// Logs, filtered by the query string.
	q := r.URL.Query()
	lf, form, err := logFilter(runID, q)
	p.LogForm = form
	if err == nil {
		var page store.Page[store.LogLine]
		page, err = st.HistoryLogs(ctx, lf)
		if err == nil {
			p.Logs = page.Items
			if page.Next != "" {
				next := cloneValues(q)
				next.Set("after", page.Next)
				p.LogsNextURL = withQuery("/runs/"+runID.String(), next) + "#logs"
			}
		}
	}
	status := http.StatusOK
	if err != nil {
		if !errors.Is(err, store.ErrBadFilter) {
			c.fail(w, r, statusOf(err), err)
			return
		}
		p.LogErr = err.Error()
		status = http.StatusBadRequest
	}
	for _, s := range []string{"FAILED", "CANCELLED", "SKIPPED", "PARTIAL_SUCCESS", "SUCCESS"} {
		p.RerunOpts = append(p.RerunOpts, rerunOpt{Status: s, Checked: slices.Contains(RerunStatusesDefault, s)})
	}
	c.render(w, status, "run.html", p)
}

// logFilter reads the log filters of the run page: level, item, attempt, text, fields, after.
func logFilter(runID uuid.UUID, q url.Values) (store.LogFilter, logForm, error) {
	form := logForm{Level: q.Get("level"), Item: q.Get("item"), Attempt: q.Get("attempt"), Text: q.Get("text"),
		Fields: q.Get("fields"), Levels: store.LogLevels}
	form.Filtered = form.Level != "" || form.Item != "" || form.Attempt != "" || form.Text != "" || form.Fields != ""
	f := store.LogFilter{RunID: runID, Limit: logsPage, After: q.Get("after"), Text: form.Text}
	if form.Level != "" {
		f.Level = strings.Split(form.Level, ",")
	}
	if form.Item != "" {
		n, err := strconv.ParseInt(strings.TrimSpace(form.Item), 10, 32)
		if err != nil {
			return f, form, &store.FilterError{Param: "item", Value: form.Item, Reason: "want an item number"}
		}
		n32 := int32(n)
		f.ItemNo = &n32
	}
	if form.Attempt != "" {
		id, err := uuid.Parse(strings.TrimSpace(form.Attempt))
		if err != nil {
			return f, form, &store.FilterError{Param: "attempt", Value: form.Attempt, Reason: "want an attempt id (UUID)"}
		}
		f.AttemptID = &id
	}
	if strings.TrimSpace(form.Fields) != "" {
		f.Fields = json.RawMessage(form.Fields)
	}
	return f, form, nil
}

func legend(counts []store.CountByStatus) []legendEntry {
	by := map[string]int{}
	for _, c := range counts {
		by[c.Status] += c.Count
	}
	var out []legendEntry
	for _, s := range store.RunStatuses {
		if n := by[s]; n > 0 {
			out = append(out, legendEntry{Status: s, Count: n})
		}
	}
	return out
}

// metricsKV flattens a run's metrics object into sorted key/value rows.
func metricsKV(raw json.RawMessage) []kv {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil || len(m) == 0 {
		return nil
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	out := make([]kv, len(keys))
	for i, k := range keys {
		out[i] = kv{Key: k, Value: string(m[k])}
	}
	return out
}

// ---- actions ----

type actionPage struct {
	base
	RunID      uuid.UUID
	Cancel     *ops.CancelResult
	Rerun      *ops.RerunResult
	Statuses   string
	Categories string
}

// maxFormBytes bounds an action's request body.
const maxFormBytes = 64 << 10

// guard applies what every action needs: the read-only refusal, the run id, the form.
func (c *console) guard(w http.ResponseWriter, r *http.Request) (uuid.UUID, bool) {
	if c.s.cfg.ReadOnly {
		c.fail(w, r, http.StatusForbidden, errors.New("the console is read-only (--read-only): cancel and rerun are disabled"))
		return uuid.Nil, false
	}
	runID, err := uuid.Parse(r.PathValue("run_id"))
	if err != nil {
		c.fail(w, r, http.StatusNotFound, fmt.Errorf("run id %q: not a UUID", r.PathValue("run_id")))
		return uuid.Nil, false
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	if err := r.ParseForm(); err != nil {
		c.fail(w, r, http.StatusBadRequest, fmt.Errorf("read form: %w", err))
		return uuid.Nil, false
	}
	return runID, true
}

// cancel is POST /runs/{run_id}/cancel [reason=...]: ops.Cancel, as `enqueuer cancel` runs it.
func (c *console) cancel(w http.ResponseWriter, r *http.Request) {
	runID, ok := c.guard(w, r)
	if !ok {
		return
	}
	reason := strings.TrimSpace(r.FormValue("reason"))
	if reason == "" {
		reason = "cancelled from the web console"
	}
	who := "console:" + principal(r)
	res, err := ops.Cancel(r.Context(), c.s.cfg.Store, c.s.enq.Dispatcher(), runID, who, reason)
	if err != nil {
		c.fail(w, r, statusOf(err), err)
		return
	}
	c.s.log.Info().Str("run_id", runID.String()).Str("who", who).Str("reason", reason).Str("status", res.Status).
		Int("items_cancelled", res.ItemsCancelled).Msg("run cancelled from the console")
	c.respond(w, r, res, actionPage{base: c.base(r, "Cancel run"), RunID: runID, Cancel: &res})
}

// rerun is POST /runs/{run_id}/rerun?preview=1|0&status=FAILED,CANCELLED[&category=API,...]:
// ops.Rerun, as `enqueuer rerun` runs it. Without preview it previews, the safe default.
func (c *console) rerun(w http.ResponseWriter, r *http.Request) {
	runID, ok := c.guard(w, r)
	if !ok {
		return
	}
	preview, err := parsePreview(r.FormValue("preview"))
	if err != nil {
		c.fail(w, r, http.StatusBadRequest, err)
		return
	}
	var f store.RerunFilter
	if f.Statuses, err = parseList("status", r.Form["status"], store.RunStatuses); err != nil {
		c.fail(w, r, http.StatusBadRequest, err)
		return
	}
	if len(f.Statuses) == 0 {
		f.Statuses = slices.Clone(RerunStatusesDefault)
	}
	if f.Categories, err = parseList("category", r.Form["category"], store.ErrorCategories); err != nil {
		c.fail(w, r, http.StatusBadRequest, err)
		return
	}
	res, err := ops.Rerun(r.Context(), c.s.cfg.Store, c.s.enq, runID, f, preview)
	if err != nil {
		c.fail(w, r, statusOf(err), err)
		return
	}
	if !preview {
		c.s.log.Info().Str("run_id", runID.String()).Str("who", principal(r)).Strs("statuses", f.Statuses).
			Int("items", len(res.Items)).Int("enqueued", res.Enqueued).Msg("run rerun from the console")
	}
	c.respond(w, r, res, actionPage{base: c.base(r, "Rerun run"), RunID: runID, Rerun: &res,
		Statuses: strings.Join(f.Statuses, ","), Categories: strings.Join(f.Categories, ",")})
}

// respond renders an action's result: JSON (the CLI's --json shape) for API clients, a page
// for browsers.
func (c *console) respond(w http.ResponseWriter, r *http.Request, res any, p actionPage) {
	if accept := r.Header.Get("Accept"); strings.Contains(accept, "application/json") && !strings.Contains(accept, "text/html") {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		_ = json.NewEncoder(w).Encode(res)
		return
	}
	c.render(w, http.StatusOK, "action.html", p)
}

// parsePreview reads preview=1|0 (true|false); absent means preview, the safe default.
func parsePreview(v string) (bool, error) {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "", "1", "true", "yes":
		return true, nil
	case "0", "false", "no":
		return false, nil
	}
	return false, &store.FilterError{Param: "preview", Value: v, Reason: "want 1 or 0"}
}

// parseList reads a comma-separated, repeatable parameter (status=FAILED,CANCELLED) against
// the allowed values.
func parseList(param string, vals, allowed []string) ([]string, error) {
	var out []string
	for _, v := range vals {
		for _, s := range strings.Split(v, ",") {
			s = strings.ToUpper(strings.TrimSpace(s))
			if s == "" || slices.Contains(out, s) {
				continue
			}
			if !slices.Contains(allowed, s) {
				return nil, &store.FilterError{Param: param, Value: s, Reason: "want one of " + strings.Join(allowed, ", ")}
			}
			out = append(out, s)
		}
	}
	return out, nil
}

// ---- helpers ----

func withQuery(path string, q url.Values) string {
	if len(q) == 0 {
		return path
	}
	return path + "?" + q.Encode()
}

func cloneValues(q url.Values) url.Values {
	out := url.Values{}
	for k, v := range q {
		out[k] = slices.Clone(v)
	}
	return out
}
