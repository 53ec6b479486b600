package ops

// The job lifecycle and the operator's trigger: pause, resume, delete (with a preview), and a
// trigger that refuses paused jobs and answers a retried request (same Idempotency-Key) with
// the run the first one created.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/etlexec/etlexec/internal/enqueue"
	"github.com/etlexec/etlexec/internal/params"
	"github.com/etlexec/etlexec/internal/runstate"
	"github.com/etlexec/etlexec/internal/store"
)

var (
	// ErrJobPaused is returned for anything that would start new work of a paused job.
	ErrJobPaused = errors.New("job is paused")
	// ErrKeyReused is returned when an idempotency key comes back with another request.
	ErrKeyReused = errors.New("idempotency key was already used for a different request")
	// ErrJobActive is returned when deleting a job that has a PENDING or RUNNING run.
	ErrJobActive = errors.New("job has active runs")
)

// IdempotencyKeyMax is the longest idempotency key accepted.
const IdempotencyKeyMax = 255

// CheckNotPaused returns ErrJobPaused, saying who paused the job, when, why and how to resume
// it; ErrNotFound for an unknown job.
func CheckNotPaused(ctx context.Context, st *store.Store, jobID string) error {
	c, err := st.GetJobControl(ctx, jobID)
	if err != nil {
		return err
	}
	if !c.Paused {
		return nil
	}
	var b strings.Builder
	fmt.Fprintf(&b, "job %q is paused", jobID)
	if c.PausedBy != nil && *c.PausedBy != "" {
		fmt.Fprintf(&b, " by %s", *c.PausedBy)
	}
	if c.PausedAt != nil {
		fmt.Fprintf(&b, " since %s", c.PausedAt.UTC().Format(time.RFC3339))
	}
	if c.PauseReason != nil && *c.PauseReason != "" {
		fmt.Fprintf(&b, " (%s)", *c.PauseReason)
	}
	fmt.Fprintf(&b, "; resume it with `enqueuer jobs resume %s`", jobID)
	return fmt.Errorf("%w: %s", ErrJobPaused, b.String())
}

// TriggerRequest asks for a run as an operator does (CLI, API, console, backfill).
type TriggerRequest struct {
	JobID  string
	Params []json.RawMessage
	// Source streams more param sets after Params (a params file of any size).
	Source iter.Seq2[json.RawMessage, error]
	DryRun bool
	// IdempotencyKey makes the request safe to retry: the same key on the same job returns
	// the run the first request created (finishing its fan-out if Redis failed it and its
	// fan-out lease lapsed), and the same key with other params or dry run is refused with
	// ErrKeyReused.
	IdempotencyKey string
	// Extras pass through to the run (a backfill window).
	Extras store.RunExtras
}

// TriggerResult says what a trigger did.
type TriggerResult struct {
	Run          store.Run `json:"run"`
	Items        int       `json:"items"`
	Deduplicated int       `json:"items_deduplicated"`
	Skipped      bool      `json:"skipped"`
	Enqueued     int       `json:"enqueued"`
	// EnqueueMs is how long the fan-out (tasks to Redis) took, in milliseconds.
	EnqueueMs int64 `json:"enqueue_ms"`
	// Replayed is true when the idempotency key named an existing run: nothing new was created.
	Replayed bool `json:"replayed"`
}

// Trigger starts a run unless the job is paused; with an idempotency key a retried request
// returns the first request's run. The key is written in the run's creation transaction, so
// two racing requests with one key create one run: the loser finds the winner's.
func Trigger(ctx context.Context, st *store.Store, enq *enqueue.Enqueuer, req TriggerRequest) (TriggerResult, error) {
	key := req.IdempotencyKey
	if len(key) > IdempotencyKeyMax || (key != "" && strings.TrimSpace(key) == "") {
		return TriggerResult{}, &store.FilterError{Param: "idempotency_key", Value: key,
			Reason: fmt.Sprintf("want 1..%d characters, not only spaces", IdempotencyKeyMax)}
	}
	if key != "" {
		// A retry gets its run even if the job was paused since: the run exists already.
		if res, ok, err := replay(ctx, st, enq, req.JobID, key, func() (string, error) { return requestHash(req) }); ok || err != nil {
			return res, err
		}
		// The key is recorded in the run's transaction with the request's fingerprint, which
		// the enqueuer computes as the param sets stream by.
		req.Extras.IdempotencyKey = key
	}
	if err := CheckNotPaused(ctx, st, req.JobID); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return TriggerResult{}, fmt.Errorf("%w %q", enqueue.ErrUnknownJob, req.JobID)
		}
		return TriggerResult{}, err
	}
	er, err := enq.Trigger(ctx, enqueue.Request{JobID: req.JobID, Params: req.Params, Source: req.Source, DryRun: req.DryRun, Extras: req.Extras})
	if key != "" && store.IsIdempotencyConflict(err) {
		// Another request with this key created the run while ours streamed its params.
		if res, ok, rerr := replay(ctx, st, enq, req.JobID, key, func() (string, error) { return er.RequestHash, nil }); ok || rerr != nil {
			return res, rerr
		}
	}
	res := TriggerResult{Run: er.Run, Items: er.Items, Deduplicated: er.Deduplicated, Skipped: er.Skipped,
		Enqueued: er.Enqueued, EnqueueMs: er.EnqueueTime.Milliseconds()}
	if err != nil {
		return res, err
	}
	if key != "" && er.Skipped {
		// A skipped run is not created by CreateRun; record its key now so a retry gets it too.
		hash, err := requestHash(req)
		if err != nil {
			return res, err
		}
		if err := st.RecordIdempotencyKey(ctx, req.JobID, key, er.Run.RunID, hash); err != nil {
			return res, err
		}
	}
	return res, nil
}

// requestHash fingerprints a request (reading its Source to the end).
func requestHash(req TriggerRequest) (string, error) {
	var srcErr error
	sets := func(yield func(json.RawMessage) bool) {
		for _, p := range req.Params {
			if !yield(p) {
				return
			}
		}
		if req.Source == nil {
			return
		}
		for p, err := range req.Source {
			if err != nil {
				srcErr = err
				return
			}
			if !yield(p) {
				return
			}
		}
	}
	h, err := fingerprint(sets, req.DryRun)
	if err == nil {
		err = srcErr
	}
	if err != nil {
		return "", &store.FilterError{Param: "params", Value: "", Reason: err.Error()}
	}
	return h, nil
}

// replay answers a request whose key already has a run; ok is false when the key is new.
func replay(ctx context.Context, st *store.Store, enq *enqueue.Enqueuer, jobID, key string, hashOf func() (string, error)) (TriggerResult, bool, error) {
	k, err := st.IdempotencyKey(ctx, jobID, key)
	if errors.Is(err, store.ErrNotFound) {
		return TriggerResult{}, false, nil
	}
	if err != nil {
		return TriggerResult{}, false, err
	}
	hash, err := hashOf()
	if err != nil {
		return TriggerResult{}, true, err
	}
	if k.RequestHash != hash {
		return TriggerResult{}, true, fmt.Errorf("%w: key %q of job %q created run %s with other params or dry run; use a new key",
			ErrKeyReused, key, jobID, k.RunID)
	}
	run, err := st.GetRun(ctx, k.RunID)
	if err != nil {
		return TriggerResult{}, true, err
	}
	res := TriggerResult{Replayed: true, Skipped: run.Status == runstate.StatusSkipped, Items: int(run.ItemCount),
		Deduplicated: int(run.ItemsDeduplicated)}
	if run.Status == runstate.StatusPending && run.EnqueuedAt == nil {
		// The first request recorded the run but did not finish handing its tasks to Redis. Its
		// fan-out is ours once its lease lapsed; while another process holds it (the first
		// request still sending, or the reconciler), that process finishes it.
		took, err := st.TakeFanout(ctx, run.RunID, store.FanoutLeaseDefault, false)
		if err != nil || !took {
			res.Run = run
			return res, true, err
		}
		if res.Enqueued, err = enq.EnqueueRun(ctx, run.RunID); err != nil {
			res.Run = run
			return res, true, fmt.Errorf("finish enqueueing run %s: %w (the run is recorded; retry or let the reconciler finish it)", run.RunID, err)
		}
		if run, err = st.GetRun(ctx, run.RunID); err != nil {
			return res, true, err
		}
	}
	res.Run = run
	return res, true, nil
}

// RequestHash fingerprints a trigger request (its param sets in canonical JSON, in order, and
// dry run) for its idempotency key.
func RequestHash(sets []json.RawMessage, dryRun bool) (string, error) {
	return fingerprint(slices.Values(sets), dryRun)
}

// fingerprint is RequestHash over a stream (read to its end, one set in memory at a time).
func fingerprint(sets iter.Seq[json.RawMessage], dryRun bool) (string, error) {
	f := params.NewFingerprint(dryRun)
	i := 0
	for s := range sets {
		i++
		c, err := params.Canonical(s)
		if err != nil {
			return "", fmt.Errorf("param set #%d: %w", i, err)
		}
		f.Add(c)
	}
	return f.Sum(), nil
}

// PauseJob pauses a job: its schedule, triggers, reruns and backfills are refused until it is
// resumed. Runs already started go on (cancel them to stop them).
func PauseJob(ctx context.Context, st *store.Store, jobID, who, reason string) (store.JobControl, error) {
	return st.PauseJob(ctx, jobID, who, reason)
}

// ResumeJob resumes a paused job. Cron ticks that fell due while it was paused are not fired.
func ResumeJob(ctx context.Context, st *store.Store, jobID string) (store.JobControl, error) {
	return st.ResumeJob(ctx, jobID)
}

// DeleteResult says what deleting a job removed, or would remove with preview.
type DeleteResult struct {
	JobID   string           `json:"job_id"`
	Preview bool             `json:"preview"`
	History store.JobHistory `json:"history"`
	Deleted bool             `json:"deleted"`
}

// deleteBatchRuns bounds the runs one transaction of a job delete removes.
const deleteBatchRuns = 200

// DeleteJob deletes a job. A job with runs is refused (ErrJobHasRuns) unless withHistory,
// which first pauses it, then deletes its runs, items, attempts, logs and alerts in batches,
// then the job with its cursors and backfills. A job with an active run is always refused
// (ErrJobActive): cancel it first. preview only counts.
func DeleteJob(ctx context.Context, st *store.Store, jobID string, withHistory, preview bool, who string) (DeleteResult, error) {
	res := DeleteResult{JobID: jobID, Preview: preview}
	h, err := st.GetJobHistory(ctx, jobID)
	if err != nil {
		return res, err
	}
	res.History = h
	if preview {
		return res, nil
	}
	if h.ActiveRuns > 0 {
		return res, fmt.Errorf("delete job %q: %w (%d PENDING or RUNNING); cancel them first", jobID, ErrJobActive, h.ActiveRuns)
	}
	if h.Runs > 0 && !withHistory {
		return res, fmt.Errorf("delete job %q: %w (%d runs, %d items, %d attempts); --with-history deletes them too (see --preview)",
			jobID, store.ErrJobHasRuns, h.Runs, h.Items, h.Attempts)
	}
	if h.Runs > 0 {
		if _, err := st.PauseJob(ctx, jobID, who, "being deleted with its history"); err != nil {
			return res, err
		}
		for {
			b, err := st.DeleteJobRunBatch(ctx, jobID, deleteBatchRuns)
			if err != nil {
				return res, err
			}
			if b.Runs == 0 {
				break
			}
		}
	}
	if err := st.DeleteJob(ctx, jobID); err != nil {
		if errors.Is(err, store.ErrJobHasRuns) {
			return res, fmt.Errorf("%w (a run started while deleting; cancel it and delete again)", err)
		}
		return res, err
	}
	res.Deleted = true
	return res, nil
}

// NewIdempotencyKey returns a fresh random idempotency key, for callers that retry on their own
// (the console's trigger form carries one, so a double submit starts one run).
func NewIdempotencyKey() string { return uuid.NewString() }
