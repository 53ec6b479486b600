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
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/etlexec/etlexec/internal/ops"
	"github.com/etlexec/etlexec/internal/params"
	"github.com/etlexec/etlexec/internal/runstate"
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
	gridPage      = 500  // items drawn per page of a run's status grid
	timelineMax   = 2000 // attempts drawn in a run's timeline
	failedListMax = 50   // failed attempts listed with their errors
)

// RerunStatusesDefault are the item statuses a rerun picks when the request names none.
var RerunStatusesDefault = runstate.Strings(runstate.StatusFailed, runstate.StatusCancelled)

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
	mux.HandleFunc("POST /jobs/{job_id}/trigger", c.trigger)
	mux.HandleFunc("POST /jobs/{job_id}/pause", c.pause)
	mux.HandleFunc("POST /jobs/{job_id}/resume", c.resume)
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
		errors.Is(err, store.ErrActiveRun), errors.Is(err, ops.ErrNothingToRerun), errors.Is(err, ops.ErrJobPaused):
		return http.StatusConflict
	case errors.Is(err, ops.ErrKeyReused):
		return http.StatusUnprocessableEntity
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
	Job     store.Job
	Control store.JobControl
	// TriggerKey is the trigger form's idempotency key: submitting the form twice (a double
	// click, a retry after a timeout) starts one run.
	TriggerKey string
	Runs       []store.Run
	Status     string // the status filter, "" for all
	Statuses   []string
	First      bool // this is the newest page
	NextURL    string
	FirstURL   string
	Durations  barChart
	Written    barChart
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
		base: c.base(r, "Job "+jobID), Job: job, Control: job.Control(), TriggerKey: ops.NewIdempotencyKey(), Runs: page.Items,
		Status: strings.ToUpper(q.Get("status")), Statuses: store.RunStatuses, First: f.After == "",
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

// terminalStatuses are the run statuses (space-separated) at which the run page stops polling
// its running items and reloads once.
var terminalStatuses = func() string {
	var out []string
	for _, s := range runstate.Statuses {
		if s.Terminal() {
			out = append(out, string(s))
		}
	}
	return strings.Join(out, " ")
}()

type runPage struct {
	base
	D           store.RunDetail
	Queue       string
	AsynqmonURL string
	Active      bool   // PENDING or RUNNING: cancel is offered, the running items refresh
	Terminal    string // the terminal statuses, space-separated: the running items' poll stops at one
	Rerunnable  bool   // ended with items: rerun is offered
	Metrics     []kv
	ItemLegend  []legendEntry
	ItemHist    histogram
	Items       []store.ItemRow
	ItemsStatus string // the grid's status filter, "" for all
	ItemsFirst  bool
	ItemsFrom   int // item number of the first square shown
	ItemsNext   string
	ItemsCSV    string
	Timeline    timeline
	Failed      []store.AttemptRow
	Logs        []store.LogLine
	LogForm     logForm
	LogErr      string
	LogsNextURL string
	RerunOpts   []rerunOpt
	Alerts      []store.Delivery
}

type kv struct{ Key, Value string }

type legendEntry struct {
	Status runstate.Status
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
	p.Active = !d.Run.Status.Terminal()
	p.Terminal = terminalStatuses
	p.Rerunnable = !p.Active && d.Run.Status != runstate.StatusSkipped
	if job, err := st.GetJob(ctx, d.Run.JobID); err == nil {
		p.Queue = job.Queue
		p.AsynqmonURL = AsynqmonPath + "/queues/" + url.PathEscape(job.Queue)
	} else if !errors.Is(err, store.ErrNotFound) {
		c.fail(w, r, statusOf(err), err)
		return
	}
	p.ItemLegend = legend(d.Items)
	p.ItemHist = itemHistogram(p.ItemLegend)

	// One page of the status grid (gridPage squares), optionally of one status: a run of a
	// million items costs what a run of 500 does.
	q := r.URL.Query()
	self := "/runs/" + runID.String()
	gf := store.ItemFilter{RunID: runID, Limit: gridPage, After: q.Get("items_after")}
	if st := q.Get("items_status"); st != "" {
		gf.Status = []string{st}
		p.ItemsStatus = strings.ToUpper(st)
	}
	grid, err := st.HistoryItems(ctx, gf)
	if err != nil {
		c.fail(w, r, statusOf(err), err)
		return
	}
	p.Items, p.ItemsFirst = grid.Items, gf.After == ""
	if len(p.Items) > 0 {
		p.ItemsFrom = int(p.Items[0].ItemNo)
	}
	keep := url.Values{}
	if p.ItemsStatus != "" {
		keep.Set("items_status", p.ItemsStatus)
	}
	if grid.Next != "" {
		next := cloneValues(keep)
		next.Set("items_after", grid.Next)
		p.ItemsNext = withQuery(self, next) + "#items"
	}
	csvQ := url.Values{"format": {"csv"}}
	if p.ItemsStatus != "" {
		csvQ.Set("status", p.ItemsStatus)
	}
	p.ItemsCSV = withQuery("/api/v1/runs/"+runID.String()+"/items", csvQ)

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
	if p.Alerts, _, err = st.RunDeliveries(ctx, runID); err != nil {
		c.fail(w, r, statusOf(err), err)
		return
	}
	for _, a := range attempts {
		if a.ErrorMessage != nil && len(p.Failed) < failedListMax {
			p.Failed = append(p.Failed, a)
		}
	}

	// Logs, filtered by the query string.
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
	for _, s := range runstate.Strings(runstate.StatusFailed, runstate.StatusCancelled, runstate.StatusSkipped,
		runstate.StatusPartialSuccess, runstate.StatusSuccess) {
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
	by := map[runstate.Status]int{}
	for _, c := range counts {
		by[c.Status] += c.Count
	}
	var out []legendEntry
	for _, s := range runstate.Statuses {
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
	c.s.log.Info().Str("run_id", runID.String()).Str("who", who).Str("reason", reason).Str("status", string(res.Status)).
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
	if f.Statuses, err = parseList("status", append(r.Form["status"], r.Form["statuses"]...), store.RunStatuses); err != nil {
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

// ---- job actions (the console's fallback when its script does not run) ----

// jobGuard is guard for the job actions.
func (c *console) jobGuard(w http.ResponseWriter, r *http.Request, maxBytes int64) (string, bool) {
	if c.s.cfg.ReadOnly {
		c.fail(w, r, http.StatusForbidden, errors.New("the console is read-only (--read-only): trigger, pause and resume are disabled"))
		return "", false
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxBytes)
	var err error
	if strings.HasPrefix(r.Header.Get("Content-Type"), "multipart/form-data") {
		err = r.ParseMultipartForm(8 << 20)
	} else {
		err = r.ParseForm()
	}
	if err != nil {
		c.fail(w, r, http.StatusBadRequest, fmt.Errorf("read form: %w", err))
		return "", false
	}
	return r.PathValue("job_id"), true
}

// trigger is POST /jobs/{job_id}/trigger [params, params_file, dry_run, idempotency_key]:
// ops.Trigger, then the run's page.
func (c *console) trigger(w http.ResponseWriter, r *http.Request) {
	jobID, ok := c.jobGuard(w, r, 64<<20)
	if !ok {
		return
	}
	var sets []json.RawMessage
	srcs := [][]byte{[]byte(r.FormValue("params"))}
	if f, _, err := r.FormFile("params_file"); err == nil {
		b, err := io.ReadAll(f)
		f.Close()
		if err != nil {
			c.fail(w, r, http.StatusBadRequest, fmt.Errorf("read params_file: %w", err))
			return
		}
		srcs = append(srcs, b)
	}
	for _, src := range srcs {
		if len(bytes.TrimSpace(src)) == 0 {
			continue
		}
		fs, err := params.ParseFile(bytes.NewReader(src), 0)
		if err != nil {
			c.fail(w, r, http.StatusBadRequest, fmt.Errorf("params: %w", err))
			return
		}
		sets = append(sets, fs...)
	}
	dry := r.FormValue("dry_run") != "" && r.FormValue("dry_run") != "false"
	res, err := ops.Trigger(r.Context(), c.s.cfg.Store, c.s.enq, ops.TriggerRequest{JobID: jobID, Params: sets, DryRun: dry,
		IdempotencyKey: r.FormValue("idempotency_key")})
	if err != nil && res.Run.RunID == uuid.Nil {
		c.fail(w, r, statusOf(err), err)
		return
	}
	http.Redirect(w, r, "/runs/"+res.Run.RunID.String(), http.StatusSeeOther)
}

// pause is POST /jobs/{job_id}/pause [reason]; resume is POST /jobs/{job_id}/resume.
func (c *console) pause(w http.ResponseWriter, r *http.Request) {
	jobID, ok := c.jobGuard(w, r, maxFormBytes)
	if !ok {
		return
	}
	if _, err := ops.PauseJob(r.Context(), c.s.cfg.Store, jobID, "console:"+principal(r), strings.TrimSpace(r.FormValue("reason"))); err != nil {
		c.fail(w, r, statusOf(err), err)
		return
	}
	http.Redirect(w, r, "/jobs/"+url.PathEscape(jobID), http.StatusSeeOther)
}

func (c *console) resume(w http.ResponseWriter, r *http.Request) {
	jobID, ok := c.jobGuard(w, r, maxFormBytes)
	if !ok {
		return
	}
	if _, err := ops.ResumeJob(r.Context(), c.s.cfg.Store, jobID); err != nil {
		c.fail(w, r, statusOf(err), err)
		return
	}
	http.Redirect(w, r, "/jobs/"+url.PathEscape(jobID), http.StatusSeeOther)
}

// histogram is the item status histogram of a run: one horizontal bar per status present.
type histogram struct {
	W, H int
	Bars []histBar
}

type histBar struct {
	Status       runstate.Status
	Count        int
	Y, W, LabelX float64
	Href         string
}

const (
	histW      = 1100
	histRow    = 18
	histLabelW = 150
	histCountW = 90
)

// itemHistogram scales the legend's counts to bars; each bar links to the grid of that status.
func itemHistogram(entries []legendEntry) histogram {
	h := histogram{W: histW, H: histRow * len(entries)}
	most := 0
	for _, e := range entries {
		most = max(most, e.Count)
	}
	plot := float64(histW - histLabelW - histCountW)
	for i, e := range entries {
		w := plot * float64(e.Count) / float64(max(most, 1))
		h.Bars = append(h.Bars, histBar{Status: e.Status, Count: e.Count, Y: float64(i * histRow), W: max(w, 1),
			LabelX: histLabelW + max(w, 1) + 6, Href: "?items_status=" + string(e.Status) + "#items"})
	}
	return h
}
