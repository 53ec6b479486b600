package httpapi

// The writes: trigger (with params, a params file upload, dry run and an Idempotency-Key),
// cancel, rerun (preview first by default), pause and resume. Each calls the internal/ops
// function the CLI and the console call. A body may be JSON, a form (urlencoded) or, for
// trigger, multipart with a params_file upload.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/google/uuid"
	"github.com/rs/zerolog"

	"github.com/etlexec/etlexec/internal/enqueue"
	"github.com/etlexec/etlexec/internal/export"
	"github.com/etlexec/etlexec/internal/ops"
	paramsets "github.com/etlexec/etlexec/internal/params"
	"github.com/etlexec/etlexec/internal/store"
)

// Body limits of the writes.
const (
	// MaxBodyBytes bounds a JSON or form body.
	MaxBodyBytes = 1 << 20
	// MaxUploadBytes bounds a multipart body (a params file).
	MaxUploadBytes = 64 << 20
)

// IdempotencyKeyHeader names the header that makes a trigger safe to retry.
const IdempotencyKeyHeader = "Idempotency-Key"

// writable answers 403 when writes are off; who made the request otherwise.
func (a *api) writable(w http.ResponseWriter, r *http.Request) (string, bool) {
	if a.cfg.ReadOnly || a.cfg.Enqueuer == nil {
		failStatus(w, http.StatusForbidden, "read-only: this server does not accept writes (enqueuer serve --read-only)")
		return "", false
	}
	who := "api"
	if a.cfg.Principal != nil {
		who = "api:" + a.cfg.Principal(r)
	}
	return who, true
}

// body is a write's request body, whatever its encoding.
type body struct {
	json  map[string]json.RawMessage
	form  url.Values
	files map[string][]byte
}

func readBody(w http.ResponseWriter, r *http.Request) (*body, bool) {
	b := &body{json: map[string]json.RawMessage{}, form: url.Values{}, files: map[string][]byte{}}
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	switch ct {
	case "multipart/form-data":
		r.Body = http.MaxBytesReader(w, r.Body, MaxUploadBytes)
		if err := r.ParseMultipartForm(8 << 20); err != nil {
			failStatus(w, http.StatusBadRequest, fmt.Sprintf("read multipart body: %v", err))
			return nil, false
		}
		b.form = r.MultipartForm.Value
		for name, fhs := range r.MultipartForm.File {
			f, err := fhs[0].Open()
			if err != nil {
				failStatus(w, http.StatusBadRequest, fmt.Sprintf("read upload %s: %v", name, err))
				return nil, false
			}
			data, err := io.ReadAll(f)
			f.Close()
			if err != nil {
				failStatus(w, http.StatusBadRequest, fmt.Sprintf("read upload %s: %v", name, err))
				return nil, false
			}
			b.files[name] = data
		}
	case "application/x-www-form-urlencoded":
		r.Body = http.MaxBytesReader(w, r.Body, MaxBodyBytes)
		if err := r.ParseForm(); err != nil {
			failStatus(w, http.StatusBadRequest, fmt.Sprintf("read form: %v", err))
			return nil, false
		}
		b.form = r.PostForm
	default: // JSON, or nothing
		raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
		if err != nil {
			failStatus(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("read body: %v", err))
			return nil, false
		}
		if len(bytes.TrimSpace(raw)) > 0 {
			if err := json.Unmarshal(raw, &b.json); err != nil {
				failStatus(w, http.StatusBadRequest, fmt.Sprintf("body: want a JSON object: %v", err))
				return nil, false
			}
		}
	}
	return b, true
}

// allow refuses fields the endpoint does not take: a typo must not pass silently.
func (b *body) allow(w http.ResponseWriter, fields ...string) bool {
	for _, m := range []map[string]bool{keys(b.json), keys(b.form), keys(b.files)} {
		for k := range m {
			if !contains(fields, k) {
				failStatus(w, http.StatusBadRequest, fmt.Sprintf("%s: unknown field; this endpoint takes: %s", k, strings.Join(fields, ", ")))
				return false
			}
		}
	}
	return true
}

func keys[V any](m map[string]V) map[string]bool {
	out := make(map[string]bool, len(m))
	for k := range m {
		out[k] = true
	}
	return out
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func (b *body) str(k string) (string, error) {
	if raw, ok := b.json[k]; ok {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return "", &store.FilterError{Param: k, Value: string(raw), Reason: "want a string"}
		}
		return s, nil
	}
	return b.form.Get(k), nil
}

// list reads a JSON array of strings, or form values (repeated and/or comma-separated).
func (b *body) list(k string) ([]string, error) {
	if raw, ok := b.json[k]; ok {
		var out []string
		if err := json.Unmarshal(raw, &out); err != nil {
			return nil, &store.FilterError{Param: k, Value: string(raw), Reason: "want an array of strings"}
		}
		return out, nil
	}
	var out []string
	for _, v := range b.form[k] {
		for _, p := range strings.Split(v, ",") {
			if p = strings.TrimSpace(p); p != "" {
				out = append(out, p)
			}
		}
	}
	return out, nil
}

// bool reads a JSON boolean or a form value (1/0, true/false, on); def when absent.
func (b *body) bool(k string, def bool) (bool, error) {
	if raw, ok := b.json[k]; ok {
		var v bool
		if err := json.Unmarshal(raw, &v); err != nil {
			return false, &store.FilterError{Param: k, Value: string(raw), Reason: "want true or false"}
		}
		return v, nil
	}
	if !b.form.Has(k) {
		return def, nil
	}
	switch v := strings.ToLower(strings.TrimSpace(b.form.Get(k))); v {
	case "on", "yes":
		return true, nil
	case "no", "off":
		return false, nil
	default:
		p, err := strconv.ParseBool(v)
		if err != nil {
			return false, &store.FilterError{Param: k, Value: v, Reason: "want true or false"}
		}
		return p, nil
	}
}

// paramSets reads a trigger's param sets: JSON "params" (an array of objects, or one object);
// form "params" text and a multipart "params_file" (a JSON array or JSON lines); form "param"
// k=v pairs (one set). Empty means the job's declared source.
func (b *body) paramSets() ([]json.RawMessage, error) {
	var sets []json.RawMessage
	if raw, ok := b.json["params"]; ok {
		t := bytes.TrimSpace(raw)
		switch {
		case len(t) > 0 && t[0] == '[':
			if err := json.Unmarshal(t, &sets); err != nil {
				return nil, &store.FilterError{Param: "params", Value: string(t), Reason: "want an array of objects"}
			}
		case len(t) > 0 && t[0] == '{':
			sets = append(sets, json.RawMessage(t))
		default:
			return nil, &store.FilterError{Param: "params", Value: string(t), Reason: "want an object or an array of objects"}
		}
	}
	for name, src := range map[string][]byte{"params": []byte(b.form.Get("params")), "params_file": b.files["params_file"]} {
		if len(bytes.TrimSpace(src)) == 0 {
			continue
		}
		fs, err := paramsets.ParseFile(bytes.NewReader(src), MaxUploadBytes)
		if err != nil {
			return nil, &store.FilterError{Param: name, Value: clip(string(src)), Reason: err.Error()}
		}
		sets = append(sets, fs...)
	}
	if kv := b.form["param"]; len(kv) > 0 {
		p, err := paramsets.ParseKV(kv)
		if err != nil {
			return nil, &store.FilterError{Param: "param", Value: strings.Join(kv, " "), Reason: err.Error()}
		}
		sets = append(sets, p)
	}
	return sets, nil
}

func clip(s string) string {
	if len(s) > 80 {
		return s[:80] + "…"
	}
	return s
}

// trigger is POST /api/v1/jobs/{job_id}/trigger: 201 with the new run, 200 with the run an
// Idempotency-Key already named (Idempotent-Replayed: true).
func (a *api) trigger(w http.ResponseWriter, r *http.Request) {
	if _, ok := a.writable(w, r); !ok {
		return
	}
	b, ok := readBody(w, r)
	if !ok || !b.allow(w, "params", "params_file", "param", "dry_run", "idempotency_key") {
		return
	}
	sets, err := b.paramSets()
	if err != nil {
		failWrite(w, r, err)
		return
	}
	dry, err := b.bool("dry_run", false)
	if err != nil {
		failWrite(w, r, err)
		return
	}
	key := r.Header.Get(IdempotencyKeyHeader)
	if key == "" {
		if key, err = b.str("idempotency_key"); err != nil {
			failWrite(w, r, err)
			return
		}
	}
	res, err := ops.Trigger(r.Context(), a.st, a.cfg.Enqueuer, ops.TriggerRequest{JobID: r.PathValue("job_id"), Params: sets,
		DryRun: dry, IdempotencyKey: key})
	if err != nil {
		if res.Run.RunID != uuid.Nil {
			// Recorded in Postgres, not fully handed to Redis: retrying with the same key finishes it.
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusServiceUnavailable)
			_ = json.NewEncoder(w).Encode(map[string]any{"error": err.Error(), "run": res.Run})
			return
		}
		failWrite(w, r, err)
		return
	}
	status := http.StatusCreated
	if res.Replayed {
		status = http.StatusOK
		w.Header().Set("Idempotent-Replayed", "true")
	}
	w.Header().Set("Location", "/api/v1/runs/"+res.Run.RunID.String())
	replyStatus(w, status, res)
}

// cancel is POST /api/v1/runs/{run_id}/cancel {"reason": "..."}.
func (a *api) cancel(w http.ResponseWriter, r *http.Request) {
	who, ok := a.writable(w, r)
	if !ok {
		return
	}
	runID, ok := pathRun(w, r)
	if !ok {
		return
	}
	reason, ok := readReason(w, r)
	if !ok {
		return
	}
	if strings.TrimSpace(reason) == "" {
		reason = "cancelled through the API"
	}
	res, err := ops.Cancel(r.Context(), a.st, a.cfg.Enqueuer.Dispatcher(), runID, who, reason)
	if err != nil {
		failWrite(w, r, err)
		return
	}
	reply(w, res)
}

// readReason reads a body that takes only {"reason": "..."}.
func readReason(w http.ResponseWriter, r *http.Request) (string, bool) {
	b, ok := readBody(w, r)
	if !ok || !b.allow(w, "reason") {
		return "", false
	}
	reason, err := b.str("reason")
	if err != nil {
		failWrite(w, r, err)
		return "", false
	}
	return reason, true
}

// rerun is POST /api/v1/runs/{run_id}/rerun {"statuses", "categories", "param_hashes",
// "preview"}: preview (the default) lists the items and changes nothing.
func (a *api) rerun(w http.ResponseWriter, r *http.Request) {
	if _, ok := a.writable(w, r); !ok {
		return
	}
	runID, ok := pathRun(w, r)
	if !ok {
		return
	}
	b, ok := readBody(w, r)
	if !ok || !b.allow(w, "statuses", "categories", "param_hashes", "preview") {
		return
	}
	var (
		f   store.RerunFilter
		err error
	)
	preview, err := b.bool("preview", true)
	if err == nil {
		f.Statuses, err = upperOneOf(b, "statuses", store.RunStatuses)
	}
	if err == nil {
		f.Categories, err = upperOneOf(b, "categories", store.ErrorCategories)
	}
	var hashes []string
	if err == nil {
		hashes, err = b.list("param_hashes")
	}
	if err == nil {
		f.ParamHashes, err = a.st.ResolveParamHashes(r.Context(), runID, hashes)
	}
	if err != nil {
		failWrite(w, r, err)
		return
	}
	res, err := ops.Rerun(r.Context(), a.st, a.cfg.Enqueuer, runID, f, preview)
	if err != nil {
		failWrite(w, r, err)
		return
	}
	reply(w, res)
}

func upperOneOf(b *body, k string, allowed []string) ([]string, error) {
	vals, err := b.list(k)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, v := range vals {
		u := strings.ToUpper(strings.TrimSpace(v))
		if !contains(allowed, u) {
			return nil, &store.FilterError{Param: k, Value: v, Reason: "want one of " + strings.Join(allowed, ", ")}
		}
		out = append(out, u)
	}
	return out, nil
}

// pause is POST /api/v1/jobs/{job_id}/pause {"reason": "..."}.
func (a *api) pause(w http.ResponseWriter, r *http.Request) {
	who, ok := a.writable(w, r)
	if !ok {
		return
	}
	reason, ok := readReason(w, r)
	if !ok {
		return
	}
	c, err := ops.PauseJob(r.Context(), a.st, r.PathValue("job_id"), who, reason)
	if err != nil {
		failWrite(w, r, err)
		return
	}
	reply(w, c)
}

// resume is POST /api/v1/jobs/{job_id}/resume.
func (a *api) resume(w http.ResponseWriter, r *http.Request) {
	if _, ok := a.writable(w, r); !ok {
		return
	}
	b, ok := readBody(w, r)
	if !ok || !b.allow(w) {
		return
	}
	c, err := ops.ResumeJob(r.Context(), a.st, r.PathValue("job_id"))
	if err != nil {
		failWrite(w, r, err)
		return
	}
	reply(w, c)
}

// job is GET /api/v1/jobs/{job_id}: the definition with its control state.
func (a *api) job(w http.ResponseWriter, r *http.Request) {
	if _, ok := params(w, r); !ok {
		return
	}
	jobID := r.PathValue("job_id")
	j, err := a.st.GetJob(r.Context(), jobID)
	if errors.Is(err, store.ErrNotFound) {
		failStatus(w, http.StatusNotFound, fmt.Sprintf("job %q not found", jobID))
		return
	}
	if err != nil {
		fail(w, r, err)
		return
	}
	// The listing's shape, its last-run fields null (the API's Job schema keeps them).
	reply(w, store.JobSummary{Job: j})
}

// itemsCSV streams every item the filter selects as CSV (export.ItemsCSV). The first page is
// checked before the header goes out, so an unknown run is still a JSON 404.
func (a *api) itemsCSV(w http.ResponseWriter, r *http.Request, f store.ItemFilter) {
	probe := f
	probe.Limit = 1
	if _, err := a.st.HistoryItems(r.Context(), probe); err != nil {
		respondRun(w, r, f.RunID, nil, err)
		return
	}
	w.Header().Set("Content-Type", "text/csv; charset=utf-8")
	w.Header().Set("Content-Disposition", fmt.Sprintf(`attachment; filename="run-%s-items.csv"`, f.RunID))
	if _, err := export.ItemsCSV(r.Context(), a.st, f, w); err != nil {
		// The status line is gone; the truncated body and the log say it failed.
		zerolog.Ctx(r.Context()).Error().Err(err).Str("run_id", f.RunID.String()).Msg("items CSV export failed")
	}
}

func replyStatus(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// failWrite maps the errors of ops to statuses: 400 bad input, 404 unknown job or run, 409 a
// state that forbids the write, 422 a reused idempotency key.
func failWrite(w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case errors.Is(err, store.ErrBadFilter), errors.Is(err, enqueue.ErrParamsNotSupported), errors.Is(err, enqueue.ErrNoParams):
		failStatus(w, http.StatusBadRequest, err.Error())
	case errors.Is(err, store.ErrNotFound), errors.Is(err, enqueue.ErrUnknownJob):
		failStatus(w, http.StatusNotFound, err.Error())
	case errors.Is(err, ops.ErrJobPaused), errors.Is(err, enqueue.ErrJobDisabled), errors.Is(err, store.ErrRunNotActive),
		errors.Is(err, store.ErrRunNotFinished), errors.Is(err, store.ErrActiveRun), errors.Is(err, ops.ErrNothingToRerun),
		errors.Is(err, store.ErrJobHasRuns), errors.Is(err, ops.ErrJobActive):
		failStatus(w, http.StatusConflict, err.Error())
	case errors.Is(err, ops.ErrKeyReused):
		failStatus(w, http.StatusUnprocessableEntity, err.Error())
	default:
		fail(w, r, err)
	}
}

// AlertDelivery is an alert delivery of a run with its attempts, as GET .../alerts lists it.
type AlertDelivery struct {
	store.Delivery
	AttemptLog []store.DeliveryAttempt `json:"attempt_log"`
}

// alerts is GET /api/v1/runs/{run_id}/alerts: the run's alert deliveries, oldest first.
func (a *api) alerts(w http.ResponseWriter, r *http.Request) {
	runID, ok := pathRun(w, r)
	if !ok {
		return
	}
	if _, ok := params(w, r); !ok {
		return
	}
	if _, err := a.st.HistoryRun(r.Context(), runID); err != nil {
		respondRun(w, r, runID, nil, err)
		return
	}
	ds, attempts, err := a.st.RunDeliveries(r.Context(), runID)
	if err != nil {
		fail(w, r, err)
		return
	}
	out := struct {
		Items []AlertDelivery `json:"items"`
	}{Items: make([]AlertDelivery, 0, len(ds))}
	for _, d := range ds {
		log := attempts[d.DeliveryID]
		if log == nil {
			log = []store.DeliveryAttempt{}
		}
		out.Items = append(out.Items, AlertDelivery{Delivery: d, AttemptLog: log})
	}
	reply(w, out)
}
