package store

// Control plane: what operators change about jobs beyond their definition (pause, resume,
// delete, retention, alert rules, catch-up policy), idempotency keys of triggers, ledger
// retention, the alerter's run watch and deliveries, backfills and small named state. The
// statements are in queries/control.sql; every type returned here is the store's own.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/etlexec/etlexec/etl"
	"github.com/etlexec/etlexec/internal/runstate"
	"github.com/etlexec/etlexec/internal/store/sqlcdb"
)

// ---- job policies and lifecycle ----

// JobPolicy is what a job definition says about its life beyond how it runs.
type JobPolicy struct {
	// HistoryRetentionMs keeps finished runs this long; nil means the global retention.
	HistoryRetentionMs *int64 `json:"history_retention_ms"`
	// AlertOn lists the run end statuses that notify; nil means the alerter's default, empty
	// means none.
	AlertOn []string `json:"alert_on"`
	// ExpectedDurationMs: an open run older than this notifies once; nil means never.
	ExpectedDurationMs *int64 `json:"expected_duration_ms"`
	// CatchupPolicy is skip, once or each (see schedule); CatchupLimit bounds each.
	CatchupPolicy string `json:"catchup_policy"`
	CatchupLimit  int32  `json:"catchup_limit"`
}

// Catch-up policies of missed cron ticks.
const (
	CatchupSkip = "skip"
	CatchupOnce = "once"
	CatchupEach = "each"
	// CatchupLimitDefault bounds CatchupEach when a definition names no limit.
	CatchupLimitDefault = 10
)

// JobDefinition is one job as jobs.yaml defines it: how it runs and its policy.
type JobDefinition struct {
	Job    JobSpec
	Policy JobPolicy
}

// AppliedJob says what ApplyJobs did with one definition.
type AppliedJob struct {
	JobID   string `json:"job_id"`
	Kind    string `json:"kind"`
	Created bool   `json:"created"`
}

// ApplyReport lists the jobs written and, with prune, removed.
type ApplyReport struct {
	Applied []AppliedJob `json:"applied"`
	Pruned  []string     `json:"pruned"`
	// Sources lists the named sources written; PrunedSources those removed with prune.
	Sources       []string `json:"sources"`
	PrunedSources []string `json:"pruned_sources"`
}

// Definitions is a whole jobs file: its jobs and its named sources.
type Definitions struct {
	Jobs    []JobDefinition
	Sources []Source
}

// ErrPruneHasHistory is returned by ApplyJobs when a job that prune would remove still has
// runs; nothing is changed.
var ErrPruneHasHistory = errors.New("jobs missing from the file still have runs")

// ApplyJobs writes job definitions all-or-nothing, leaving pause state alone; with prune, jobs
// absent from defs are deleted in the same transaction. A job to prune that has runs fails the
// whole apply (ErrPruneHasHistory): its history goes only through DeleteJob with history.
func (s *Store) ApplyJobs(ctx context.Context, defs []JobDefinition, prune bool) (ApplyReport, error) {
	return s.ApplyDefinitions(ctx, Definitions{Jobs: defs}, prune)
}

// ApplyDefinitions is ApplyJobs for a whole jobs file: its sources are written in the same
// transaction as its jobs, and with prune the sources not in the file are removed too.
func (s *Store) ApplyDefinitions(ctx context.Context, file Definitions, prune bool) (ApplyReport, error) {
	var rep ApplyReport
	err := s.InTx(ctx, func(tx *Tx) error {
		rep = ApplyReport{Applied: []AppliedJob{}, Pruned: []string{}, Sources: []string{}, PrunedSources: []string{}}
		pruned, err := applySources(ctx, tx, file.Sources, prune)
		if err != nil {
			return err
		}
		rep.PrunedSources = append(rep.PrunedSources, pruned...)
		for _, src := range file.Sources {
			rep.Sources = append(rep.Sources, src.Name)
		}
		defs := file.Jobs
		keep := make([]string, 0, len(defs))
		for _, d := range defs {
			ins, err := tx.q.UpsertJob(ctx, upsertJobParams(d.Job))
			if err != nil {
				return fmt.Errorf("upsert job %q: %w", d.Job.JobID, err)
			}
			p := d.Policy
			if p.CatchupPolicy == "" {
				p.CatchupPolicy = CatchupOnce
			}
			if p.CatchupLimit == 0 {
				p.CatchupLimit = CatchupLimitDefault
			}
			if err := tx.q.SetJobPolicies(ctx, sqlcdb.SetJobPoliciesParams{JobID: d.Job.JobID,
				HistoryRetentionMs: p.HistoryRetentionMs, AlertOn: p.AlertOn, ExpectedDurationMs: p.ExpectedDurationMs,
				CatchupPolicy: p.CatchupPolicy, CatchupLimit: p.CatchupLimit}); err != nil {
				return fmt.Errorf("set policies of job %q: %w", d.Job.JobID, err)
			}
			rep.Applied = append(rep.Applied, AppliedJob{JobID: d.Job.JobID, Kind: d.Job.Kind, Created: ins})
			keep = append(keep, d.Job.JobID)
		}
		if !prune {
			return nil
		}
		gone, err := tx.q.JobsNotIn(ctx, keep)
		if err != nil {
			return fmt.Errorf("list jobs to prune: %w", err)
		}
		var withRuns []string
		for _, g := range gone {
			if g.HasRuns {
				withRuns = append(withRuns, g.JobID)
			}
		}
		if len(withRuns) > 0 {
			return fmt.Errorf("%w: %s (delete them with `enqueuer jobs delete JOB --with-history`, or keep them in the file)",
				ErrPruneHasHistory, strings.Join(withRuns, ", "))
		}
		for _, g := range gone {
			n, err := tx.q.DeleteJobIfNoRuns(ctx, g.JobID)
			if err != nil {
				return fmt.Errorf("prune job %q: %w", g.JobID, err)
			}
			if n == 0 {
				return fmt.Errorf("prune job %q: %w (a run was created meanwhile)", g.JobID, ErrPruneHasHistory)
			}
			rep.Pruned = append(rep.Pruned, g.JobID)
		}
		return nil
	})
	if err != nil {
		return ApplyReport{}, err
	}
	return rep, nil
}

// JobPause is whether a job is paused, by whom, why and since when.
type JobPause struct {
	Paused      bool       `json:"paused"`
	PausedAt    *time.Time `json:"paused_at"`
	PausedBy    *string    `json:"paused_by"`
	PauseReason *string    `json:"pause_reason"`
	// ResumedAt is when the job was last resumed: cron ticks before it are not fired.
	ResumedAt *time.Time `json:"resumed_at"`
}

// JobControl is a job's pause state and policies (Job.Control of the job).
type JobControl struct {
	JobID string `json:"job_id"`
	JobPause
	JobPolicy
}

// JobControls loads the control state of the given jobs, keyed by job id (unknown ids are
// absent).
func (s *Store) JobControls(ctx context.Context, jobIDs []string) (map[string]JobControl, error) {
	rows, err := s.q.JobControls(ctx, nonNil(jobIDs))
	if err != nil {
		return nil, fmt.Errorf("read control state of %d jobs: %w", len(jobIDs), err)
	}
	out := make(map[string]JobControl, len(rows))
	for _, r := range rows {
		out[r.JobID] = jobOf(r).Control()
	}
	return out, nil
}

// GetJobControl loads one job's control state; ErrNotFound for an unknown job.
func (s *Store) GetJobControl(ctx context.Context, jobID string) (JobControl, error) {
	m, err := s.JobControls(ctx, []string{jobID})
	if err != nil {
		return JobControl{}, err
	}
	c, ok := m[jobID]
	if !ok {
		return JobControl{}, fmt.Errorf("job %q: %w", jobID, ErrNotFound)
	}
	return c, nil
}

// PauseJob marks a job paused (who, why, since when; a second pause keeps the first time) and
// returns its control state.
func (s *Store) PauseJob(ctx context.Context, jobID, who, reason string) (JobControl, error) {
	if _, err := s.q.PauseJob(ctx, sqlcdb.PauseJobParams{JobID: jobID, PausedBy: &who, PauseReason: &reason}); err != nil {
		return JobControl{}, fmt.Errorf("pause job %q: %w", jobID, mapErr(err))
	}
	return s.GetJobControl(ctx, jobID)
}

// ResumeJob clears a job's pause and, if it was paused, records when it resumed.
func (s *Store) ResumeJob(ctx context.Context, jobID string) (JobControl, error) {
	if _, err := s.q.ResumeJob(ctx, jobID); err != nil {
		return JobControl{}, fmt.Errorf("resume job %q: %w", jobID, mapErr(err))
	}
	return s.GetJobControl(ctx, jobID)
}

// JobHistory is what a job's history holds: what deleting it with history removes.
type JobHistory struct {
	JobID      string `json:"job_id"`
	Runs       int64  `json:"runs"`
	ActiveRuns int64  `json:"active_runs"`
	Items      int64  `json:"items"`
	Attempts   int64  `json:"attempts"`
	Cursors    int64  `json:"cursors"`
	Backfills  int64  `json:"backfills"`
}

// GetJobHistory counts a job's runs, items, attempts, cursors and backfills; ErrNotFound for
// an unknown job.
func (s *Store) GetJobHistory(ctx context.Context, jobID string) (JobHistory, error) {
	ok, err := s.q.HistoryJobExists(ctx, jobID)
	if err != nil {
		return JobHistory{}, fmt.Errorf("count history of job %q: %w", jobID, err)
	}
	if !ok {
		return JobHistory{}, fmt.Errorf("job %q: %w", jobID, ErrNotFound)
	}
	r, err := s.q.JobHistory(ctx, jobID)
	if err != nil {
		return JobHistory{}, fmt.Errorf("count history of job %q: %w", jobID, err)
	}
	return JobHistory{JobID: jobID, Runs: r.Runs, ActiveRuns: r.ActiveRuns, Items: r.Items, Attempts: r.Attempts,
		Cursors: r.Cursors, Backfills: r.Backfills}, nil
}

// ErrJobHasRuns is returned when deleting a job that has runs without removing its history.
var ErrJobHasRuns = errors.New("job has runs")

// RunBatch is how many runs and their rows one batch of a delete removed.
type RunBatch struct {
	Runs, Items, Attempts int64
}

// DeleteJobRunBatch deletes up to limit of a job's finished runs, oldest first, with their
// items, attempts, logs and alerts (foreign keys cascade), in one short transaction.
func (s *Store) DeleteJobRunBatch(ctx context.Context, jobID string, limit int) (RunBatch, error) {
	var b RunBatch
	err := s.InTx(ctx, func(tx *Tx) error {
		rows, err := tx.q.JobRunBatch(ctx, sqlcdb.JobRunBatchParams{JobID: jobID, BatchSize: int32(limit)})
		if err != nil {
			return err
		}
		ids := make([]uuid.UUID, len(rows))
		for i, r := range rows {
			ids[i] = r.RunID
			b.Items += int64(r.ItemCount)
			b.Attempts += int64(r.AttemptCount)
		}
		b.Runs, err = tx.deleteRuns(ctx, ids)
		return err
	})
	if err != nil {
		return RunBatch{}, fmt.Errorf("delete runs of job %q: %w", jobID, err)
	}
	return b, nil
}

// DeleteJob deletes a job that has no runs (its cursors, keys and backfills cascade);
// ErrJobHasRuns when it has some, ErrNotFound when it does not exist.
func (s *Store) DeleteJob(ctx context.Context, jobID string) error {
	n, err := s.q.DeleteJobIfNoRuns(ctx, jobID)
	if err != nil {
		return fmt.Errorf("delete job %q: %w", jobID, err)
	}
	if n == 1 {
		return nil
	}
	ok, err := s.q.HistoryJobExists(ctx, jobID)
	if err != nil {
		return fmt.Errorf("delete job %q: %w", jobID, err)
	}
	if !ok {
		return fmt.Errorf("delete job %q: %w", jobID, ErrNotFound)
	}
	return fmt.Errorf("delete job %q: %w", jobID, ErrJobHasRuns)
}

// retentionLockTimeout bounds how long a retention delete waits for a row lock: a live writer
// holding one wins, and the batch is tried again later.
const retentionLockTimeout = "1s"

// deleteRuns deletes finished runs by id; a row lock held elsewhere fails fast.
func (tx *Tx) deleteRuns(ctx context.Context, ids []uuid.UUID) (int64, error) {
	if len(ids) == 0 {
		return 0, nil
	}
	if _, err := tx.tx.Exec(ctx, "SET LOCAL lock_timeout = '"+retentionLockTimeout+"'"); err != nil {
		return 0, err
	}
	return tx.q.DeleteRuns(ctx, ids)
}

// ---- idempotency keys ----

// IdempotencyKeyIndex is the primary key of dw_etl_idempotency_keys: a second run created with
// the same (job, key) violates it.
const IdempotencyKeyIndex = "dw_etl_idempotency_keys_pkey"

// IsIdempotencyConflict reports whether err says the trigger's key already has a run.
func IsIdempotencyConflict(err error) bool { return IsUniqueViolation(err, IdempotencyKeyIndex) }

// KeyedRun is the run an idempotency key names.
type KeyedRun struct {
	Key         string          `json:"key"`
	RunID       uuid.UUID       `json:"run_id"`
	RequestHash string          `json:"request_hash,omitempty"`
	Status      runstate.Status `json:"status,omitempty"`
}

// IdempotencyKey loads the run a job's key names; ErrNotFound when the key is new.
func (s *Store) IdempotencyKey(ctx context.Context, jobID, key string) (KeyedRun, error) {
	r, err := s.q.GetIdempotencyKey(ctx, sqlcdb.GetIdempotencyKeyParams{JobID: jobID, Key: key})
	if err != nil {
		return KeyedRun{}, fmt.Errorf("idempotency key %q of job %q: %w", key, jobID, mapErr(err))
	}
	return KeyedRun{Key: key, RunID: r.RunID, RequestHash: r.RequestHash}, nil
}

// RecordIdempotencyKey names runID as the run of a job's key unless the key already names one
// (for runs not created by CreateRun, such as a trigger the overlap policy skipped).
func (s *Store) RecordIdempotencyKey(ctx context.Context, jobID, key string, runID uuid.UUID, requestHash string) error {
	err := s.q.InsertIdempotencyKeyIfAbsent(ctx, sqlcdb.InsertIdempotencyKeyIfAbsentParams{JobID: jobID, Key: key,
		RunID: runID, RequestHash: requestHash})
	if err != nil {
		return fmt.Errorf("record idempotency key %q of job %q: %w", key, jobID, err)
	}
	return nil
}

// IdempotencyKeysWithPrefix lists a job's keys that start with prefix, with their runs' status.
func (s *Store) IdempotencyKeysWithPrefix(ctx context.Context, jobID, prefix string) ([]KeyedRun, error) {
	rows, err := s.q.IdempotencyKeysWithPrefix(ctx, sqlcdb.IdempotencyKeysWithPrefixParams{JobID: jobID, Prefix: prefix})
	if err != nil {
		return nil, fmt.Errorf("list idempotency keys %q* of job %q: %w", prefix, jobID, err)
	}
	out := make([]KeyedRun, len(rows))
	for i, r := range rows {
		out[i] = KeyedRun{Key: r.Key, RunID: r.RunID, Status: r.Status}
	}
	return out, nil
}

// recordExtras writes the optional parts of a new run inside CreateRun's transaction.
func (tx *Tx) recordExtras(ctx context.Context, nr NewRun) error {
	if nr.Extras.IdempotencyKey == "" {
		return nil
	}
	return tx.q.InsertIdempotencyKey(ctx, sqlcdb.InsertIdempotencyKeyParams{JobID: nr.JobID, Key: nr.Extras.IdempotencyKey,
		RunID: nr.RunID, RequestHash: nr.Extras.RequestHash})
}

// RunExtras are optional parts of a new run that callers other than the plain trigger ask for;
// CreateRun writes them in the run's own transaction.
type RunExtras struct {
	// IdempotencyKey is recorded with the run: a second run with the same (job, key) fails
	// with a unique violation of IdempotencyKeyIndex, so the first run is the answer.
	IdempotencyKey string
	// RequestHash fingerprints the request the key came with.
	RequestHash string
	// WindowStart and WindowEnd set a run's window (a backfill window): every item starts at
	// WindowStart instead of its stored cursor, and WindowEnd is the run's logical start.
	WindowStart, WindowEnd *time.Time
	// NotExclusive keeps the run out of the job's single active slot (backfill windows run
	// beside the schedule, bounded by the backfill's own concurrency).
	NotExclusive bool
}

// ---- retention ----

// JobRetention is a job's own history retention; nil means the global one.
type JobRetention struct {
	JobID     string
	Retention *time.Duration
}

// AllJobRetention lists every job with its own history retention.
func (s *Store) AllJobRetention(ctx context.Context) ([]JobRetention, error) {
	rows, err := s.q.AllJobRetention(ctx)
	if err != nil {
		return nil, fmt.Errorf("list job retention: %w", err)
	}
	out := make([]JobRetention, len(rows))
	for i, r := range rows {
		out[i].JobID = r.JobID
		if r.HistoryRetentionMs != nil {
			d := time.Duration(*r.HistoryRetentionMs) * time.Millisecond
			out[i].Retention = &d
		}
	}
	return out, nil
}

// RetentionKeep lists the runs of a job retention must keep whatever their age besides the
// latest run: those a cursor names as its last run.
func (s *Store) RetentionKeep(ctx context.Context, jobID string) ([]uuid.UUID, error) {
	ids, err := s.q.CursorRunIDs(ctx, jobID)
	if err != nil {
		return nil, fmt.Errorf("list cursor runs of job %q: %w", jobID, err)
	}
	if ids == nil {
		ids = []uuid.UUID{}
	}
	return ids, nil
}

// PreviewExpiredRuns counts the runs PruneExpiredRuns would remove.
func (s *Store) PreviewExpiredRuns(ctx context.Context, jobID string, cutoff time.Time, keep []uuid.UUID) (RunBatch, error) {
	r, err := s.q.RetentionPreview(ctx, sqlcdb.RetentionPreviewParams{JobID: jobID, Cutoff: cutoff, Keep: keep})
	if err != nil {
		return RunBatch{}, fmt.Errorf("count expired runs of job %q: %w", jobID, err)
	}
	return RunBatch{Runs: r.Runs, Items: r.Items, Attempts: r.Attempts}, nil
}

// PruneExpiredRuns deletes one batch of a job's runs that started and ended before cutoff,
// oldest first: at most maxRuns runs, and no more items than maxItems unless the first run
// alone has more. It keeps open runs, the job's latest run and the keep list, skips rows
// locked elsewhere and waits at most a second for a lock, so live writers never wait long on
// it. A zero batch means nothing (more) is due.
func (s *Store) PruneExpiredRuns(ctx context.Context, jobID string, cutoff time.Time, keep []uuid.UUID, maxRuns, maxItems int) (RunBatch, error) {
	var b RunBatch
	err := s.InTx(ctx, func(tx *Tx) error {
		b = RunBatch{}
		rows, err := tx.q.RetentionCandidates(ctx, sqlcdb.RetentionCandidatesParams{JobID: jobID, Cutoff: cutoff,
			Keep: keep, BatchSize: int32(maxRuns)})
		if err != nil {
			return err
		}
		var ids []uuid.UUID
		for _, r := range rows {
			if len(ids) > 0 && b.Items+int64(r.ItemCount) > int64(maxItems) {
				break
			}
			ids = append(ids, r.RunID)
			b.Items += int64(r.ItemCount)
			b.Attempts += int64(r.AttemptCount)
		}
		b.Runs, err = tx.deleteRuns(ctx, ids)
		return err
	})
	if err != nil {
		return RunBatch{}, fmt.Errorf("prune runs of job %q before %s: %w", jobID, cutoff.Format(time.RFC3339), err)
	}
	return b, nil
}

// ---- named state ----

// ControlState reads the named state into v; found is false when it was never set.
func (s *Store) ControlState(ctx context.Context, name string, v any) (updatedAt time.Time, found bool, err error) {
	r, err := s.q.GetControlState(ctx, name)
	if errors.Is(mapErr(err), ErrNotFound) {
		return time.Time{}, false, nil
	}
	if err != nil {
		return time.Time{}, false, fmt.Errorf("read control state %q: %w", name, err)
	}
	if v != nil {
		if err := json.Unmarshal(r.Value, v); err != nil {
			return time.Time{}, false, fmt.Errorf("decode control state %q: %w", name, err)
		}
	}
	return r.UpdatedAt, true, nil
}

// SetControlState stores v (as JSON) under name.
func (s *Store) SetControlState(ctx context.Context, name string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode control state %q: %w", name, err)
	}
	if err := s.q.SetControlState(ctx, sqlcdb.SetControlStateParams{Name: name, Value: b}); err != nil {
		return fmt.Errorf("write control state %q: %w", name, err)
	}
	return nil
}

// ---- param hash prefixes ----

// ParamHashPrefixMin is the shortest prefix of a param hash accepted in its place.
const ParamHashPrefixMin = 4

// ResolveParamHash expands a unique prefix of a param hash (as the CLI prints it, 12 or 16
// hex characters, at least ParamHashPrefixMin) to the full hash of one of the run's items.
// Anything else (a full hash, a shorter or non-hex value, a prefix no item has) comes back as
// given, so a filter on it finds what it names or nothing; a prefix two items share is a
// FilterError naming both.
func (s *Store) ResolveParamHash(ctx context.Context, runID uuid.UUID, h string) (string, error) {
	h = strings.TrimSpace(h)
	if len(h) < ParamHashPrefixMin || len(h) >= 64 || !isLowerHex(h) {
		return h, nil
	}
	rows, err := s.q.ResolveParamHash(ctx, sqlcdb.ResolveParamHashParams{RunID: runID, Prefix: h})
	if err != nil {
		return "", fmt.Errorf("resolve param hash %q in run %s: %w", h, runID, err)
	}
	switch len(rows) {
	case 0:
		return h, nil
	case 1:
		return rows[0], nil
	}
	return "", &FilterError{Param: "param_hash", Value: h,
		Reason: fmt.Sprintf("prefix of more than one item's hash (%s…, %s…); give more characters", clip16(rows[0]), clip16(rows[1]))}
}

func isLowerHex(s string) bool {
	for _, r := range s {
		if (r < '0' || r > '9') && (r < 'a' || r > 'f') {
			return false
		}
	}
	return true
}

func clip16(s string) string { return s[:min(len(s), 16)] }

// ResolveParamHashes is ResolveParamHash for each of hs.
func (s *Store) ResolveParamHashes(ctx context.Context, runID uuid.UUID, hs []string) ([]string, error) {
	var out []string
	for _, h := range hs {
		full, err := s.ResolveParamHash(ctx, runID, h)
		if err != nil {
			return nil, err
		}
		if full != "" {
			out = append(out, full)
		}
	}
	return out, nil
}

// ---- ages ----

// ParseAge reads an age as retention settings and `prune --older-than` take it: a Go
// duration ("720h", "90m") or whole days ("90d").
func ParseAge(s string) (time.Duration, error) {
	if days, ok := strings.CutSuffix(strings.TrimSpace(s), "d"); ok {
		n, err := strconv.Atoi(days)
		if err != nil || n < 0 {
			return 0, fmt.Errorf("age %q: want a whole number of days such as 90d, or a duration such as 720h", s)
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil || d < 0 {
		return 0, fmt.Errorf("age %q: want a whole number of days such as 90d, or a duration such as 720h", s)
	}
	return d, nil
}

// ---- schema ----

// ErrNotMigrated is returned when the database lacks etlexec's schema.
var ErrNotMigrated = errors.New("database is not migrated: run `enqueuer migrate`")

// ---- the alerter's run watch and deliveries ----

// WatchRuns adds to the watch every open run (and re-opens the watch of a run re-run since
// it ended) and every run that started since since and has already ended. It returns how many
// rows it added or re-opened.
func (s *Store) WatchRuns(ctx context.Context, since time.Time) (int64, error) {
	a, err := s.q.WatchOpenRuns(ctx)
	if err != nil {
		return 0, fmt.Errorf("watch open runs: %w", err)
	}
	b, err := s.q.WatchRecentRuns(ctx, since)
	if err != nil {
		return a, fmt.Errorf("watch recent runs: %w", err)
	}
	return a + b, nil
}

// WatchedRun is a watched run whose end the alerter has not handled yet, with what its job
// says about alerts.
type WatchedRun struct {
	RunID          uuid.UUID       `json:"run_id"`
	JobID          string          `json:"job_id"`
	Status         runstate.Status `json:"status"`
	DryRun         bool            `json:"dry_run"`
	Trigger        string          `json:"trigger"`
	StartedAt      time.Time       `json:"started_at"`
	EndedAt        *time.Time      `json:"ended_at"`
	DurationMs     *int64          `json:"duration_ms"`
	ItemCount      int32           `json:"item_count"`
	ItemsSucceeded int32           `json:"items_succeeded"`
	ItemsFailed    int32           `json:"items_failed"`
	ItemsCancelled int32           `json:"items_cancelled"`
	ErrorCategory  etl.Category    `json:"error_category"`
	ErrorMessage   *string         `json:"error_message"`
	// OpenedAt is when this opening of the run began (its start, or its last rerun);
	// OverdueAt is when its run_overdue notice was recorded, if it was.
	OpenedAt  time.Time  `json:"-"`
	OverdueAt *time.Time `json:"-"`
	// AlertOn and ExpectedDurationMs are the job's alert rules (nil: the defaults).
	AlertOn            []string `json:"-"`
	ExpectedDurationMs *int64   `json:"-"`
}

// WatchedRuns lists up to limit watched runs not yet handled as ended, oldest first.
func (s *Store) WatchedRuns(ctx context.Context, limit int) ([]WatchedRun, error) {
	rows, err := s.q.WatchedRuns(ctx, int32(limit))
	if err != nil {
		return nil, fmt.Errorf("list watched runs: %w", err)
	}
	out := make([]WatchedRun, len(rows))
	for i, r := range rows {
		out[i] = WatchedRun{RunID: r.RunID, JobID: r.JobID, Status: r.Status, DryRun: r.DryRun, Trigger: r.Trigger,
			StartedAt: r.StartedAt, EndedAt: r.EndedAt, DurationMs: r.DurationMs, ItemCount: r.ItemCount,
			ItemsSucceeded: r.ItemsSucceeded, ItemsFailed: r.ItemsFailed, ItemsCancelled: r.ItemsCancelled,
			ErrorCategory: r.ErrorCategory, ErrorMessage: r.ErrorMessage, OpenedAt: r.OpenedAt, OverdueAt: r.OverdueAt,
			AlertOn: r.AlertOn, ExpectedDurationMs: r.ExpectedDurationMs}
	}
	return out, nil
}

// NewDelivery is a notification to record for delivery.
type NewDelivery struct {
	Event       string
	Destination string
	Payload     json.RawMessage
}

// Alert events.
const (
	EventRunEnded   = "run_ended"
	EventRunOverdue = "run_overdue"
)

// RecordRunEnd marks a watched run's end handled and records its notifications, in one
// transaction: each end is noticed once, and its deliveries exist exactly when it was. noticed
// is false when another alerter handled this end first (nothing is recorded then).
func (s *Store) RecordRunEnd(ctx context.Context, r WatchedRun, deliveries []NewDelivery) (noticed bool, err error) {
	at := r.StartedAt
	if r.EndedAt != nil {
		at = *r.EndedAt
	}
	err = s.InTx(ctx, func(tx *Tx) error {
		n, err := tx.q.MarkWatchEnded(ctx, sqlcdb.MarkWatchEndedParams{RunID: r.RunID, EndedAt: &at, Status: &r.Status})
		if err != nil || n == 0 {
			return err
		}
		noticed = true
		return tx.insertDeliveries(ctx, r, at, deliveries)
	})
	if err != nil {
		return false, fmt.Errorf("record end of run %s: %w", r.RunID, err)
	}
	return noticed, nil
}

// RecordRunOverdue marks a watched run overdue for this opening and records its notifications;
// noticed is false when it already was.
func (s *Store) RecordRunOverdue(ctx context.Context, r WatchedRun, at time.Time, deliveries []NewDelivery) (noticed bool, err error) {
	err = s.InTx(ctx, func(tx *Tx) error {
		n, err := tx.q.MarkWatchOverdue(ctx, r.RunID)
		if err != nil || n == 0 {
			return err
		}
		noticed = true
		return tx.insertDeliveries(ctx, r, at, deliveries)
	})
	if err != nil {
		return false, fmt.Errorf("record run %s overdue: %w", r.RunID, err)
	}
	return noticed, nil
}

func (tx *Tx) insertDeliveries(ctx context.Context, r WatchedRun, at time.Time, ds []NewDelivery) error {
	for _, d := range ds {
		id, err := uuid.NewV7()
		if err != nil {
			return err
		}
		if err := tx.q.InsertDelivery(ctx, sqlcdb.InsertDeliveryParams{DeliveryID: id, RunID: r.RunID, JobID: r.JobID,
			Event: d.Event, OccurredAt: at, Destination: d.Destination, Payload: d.Payload}); err != nil {
			return fmt.Errorf("insert %s delivery to %s: %w", d.Event, d.Destination, err)
		}
	}
	return nil
}

// ForgetWatched drops handled watch rows of runs that started before before.
func (s *Store) ForgetWatched(ctx context.Context, before time.Time) (int64, error) {
	n, err := s.q.ForgetWatched(ctx, before)
	if err != nil {
		return 0, fmt.Errorf("forget watched runs: %w", err)
	}
	return n, nil
}

// Delivery statuses.
const (
	DeliveryPending   = "PENDING"
	DeliveryDelivered = "DELIVERED"
	DeliveryFailed    = "FAILED"
)

// Delivery is one notification of a run event to one destination.
type Delivery struct {
	DeliveryID     uuid.UUID       `json:"delivery_id"`
	RunID          uuid.UUID       `json:"run_id"`
	JobID          string          `json:"job_id"`
	Event          string          `json:"event"`
	OccurredAt     time.Time       `json:"occurred_at"`
	Destination    string          `json:"destination"`
	Status         string          `json:"status"`
	Attempts       int32           `json:"attempts"`
	NextAttemptAt  time.Time       `json:"next_attempt_at"`
	LastStatusCode *int32          `json:"last_status_code"`
	LastError      *string         `json:"last_error"`
	Payload        json.RawMessage `json:"payload"`
	CreatedAt      time.Time       `json:"created_at"`
	DeliveredAt    *time.Time      `json:"delivered_at"`
}

func delivery(d sqlcdb.DwEtlAlertDelivery) Delivery {
	return Delivery{DeliveryID: d.DeliveryID, RunID: d.RunID, JobID: d.JobID, Event: d.Event, OccurredAt: d.OccurredAt,
		Destination: d.Destination, Status: d.Status, Attempts: d.Attempts, NextAttemptAt: d.NextAttemptAt,
		LastStatusCode: d.LastStatusCode, LastError: d.LastError, Payload: d.Payload, CreatedAt: d.CreatedAt, DeliveredAt: d.DeliveredAt}
}

// DueDeliveries lists up to limit pending deliveries whose next attempt is due.
func (s *Store) DueDeliveries(ctx context.Context, limit int) ([]Delivery, error) {
	rows, err := s.q.DueDeliveries(ctx, int32(limit))
	if err != nil {
		return nil, fmt.Errorf("list due alert deliveries: %w", err)
	}
	out := make([]Delivery, len(rows))
	for i, r := range rows {
		out[i] = delivery(r)
	}
	return out, nil
}

// DeliveryAttempt is one HTTP attempt of a delivery.
type DeliveryAttempt struct {
	Attempt    int32     `json:"attempt"`
	At         time.Time `json:"at"`
	StatusCode *int32    `json:"status_code"`
	Error      *string   `json:"error"`
	DurationMs int64     `json:"duration_ms"`
}

// RecordDeliveryAttempt records an attempt and the delivery's new state: status (PENDING to
// retry after backoff, DELIVERED, FAILED), in one transaction.
func (s *Store) RecordDeliveryAttempt(ctx context.Context, d Delivery, a DeliveryAttempt, status string, backoff time.Duration) error {
	err := s.InTx(ctx, func(tx *Tx) error {
		if err := tx.q.InsertAlertAttempt(ctx, sqlcdb.InsertAlertAttemptParams{DeliveryID: d.DeliveryID, Attempt: a.Attempt,
			StatusCode: a.StatusCode, Error: a.Error, DurationMs: a.DurationMs}); err != nil {
			return err
		}
		return tx.q.FinishDeliveryAttempt(ctx, sqlcdb.FinishDeliveryAttemptParams{DeliveryID: d.DeliveryID, Attempts: a.Attempt,
			Status: status, StatusCode: a.StatusCode, Error: a.Error, BackoffSeconds: backoff.Seconds()})
	})
	if err != nil {
		return fmt.Errorf("record attempt %d of delivery %s: %w", a.Attempt, d.DeliveryID, err)
	}
	return nil
}

// RunDeliveries lists a run's alert deliveries with their attempts.
func (s *Store) RunDeliveries(ctx context.Context, runID uuid.UUID) ([]Delivery, map[uuid.UUID][]DeliveryAttempt, error) {
	rows, err := s.q.RunDeliveries(ctx, runID)
	if err != nil {
		return nil, nil, fmt.Errorf("list alert deliveries of run %s: %w", runID, err)
	}
	out := make([]Delivery, len(rows))
	attempts := map[uuid.UUID][]DeliveryAttempt{}
	for i, r := range rows {
		out[i] = delivery(r)
		as, err := s.q.DeliveryAttempts(ctx, r.DeliveryID)
		if err != nil {
			return nil, nil, fmt.Errorf("list attempts of delivery %s: %w", r.DeliveryID, err)
		}
		for _, a := range as {
			attempts[r.DeliveryID] = append(attempts[r.DeliveryID], DeliveryAttempt{Attempt: a.Attempt, At: a.At,
				StatusCode: a.StatusCode, Error: a.Error, DurationMs: a.DurationMs})
		}
	}
	return out, attempts, nil
}

// ---- backfills ----

// Backfill is a backfill's definition: one run per window of Step from WindowFrom to WindowTo.
type Backfill struct {
	BackfillID  uuid.UUID         `json:"backfill_id"`
	JobID       string            `json:"job_id"`
	SpecHash    string            `json:"spec_hash"`
	WindowFrom  time.Time         `json:"window_from"`
	WindowTo    time.Time         `json:"window_to"`
	StepMs      int64             `json:"step_ms"`
	Params      []json.RawMessage `json:"params"`
	DryRun      bool              `json:"dry_run"`
	Concurrency int32             `json:"concurrency"`
	CreatedBy   string            `json:"created_by"`
	CreatedAt   time.Time         `json:"created_at"`
	FinishedAt  *time.Time        `json:"finished_at"`
}

func backfill(b sqlcdb.DwEtlBackfill) (Backfill, error) {
	out := Backfill{BackfillID: b.BackfillID, JobID: b.JobID, SpecHash: b.SpecHash, WindowFrom: b.WindowFrom, WindowTo: b.WindowTo,
		StepMs: b.StepMs, DryRun: b.DryRun, Concurrency: b.Concurrency, CreatedBy: b.CreatedBy, CreatedAt: b.CreatedAt,
		FinishedAt: b.FinishedAt}
	if err := json.Unmarshal(b.Params, &out.Params); err != nil {
		return Backfill{}, fmt.Errorf("decode params of backfill %s: %w", b.BackfillID, err)
	}
	return out, nil
}

// UpsertBackfill records a backfill, or returns the one with the same job and spec hash (its
// concurrency updated and its finish cleared): running the same backfill again resumes it.
func (s *Store) UpsertBackfill(ctx context.Context, b Backfill) (Backfill, bool, error) {
	params, err := json.Marshal(nonNilRaw(b.Params))
	if err != nil {
		return Backfill{}, false, err
	}
	row, err := s.q.UpsertBackfill(ctx, sqlcdb.UpsertBackfillParams{BackfillID: b.BackfillID, JobID: b.JobID, SpecHash: b.SpecHash,
		WindowFrom: b.WindowFrom, WindowTo: b.WindowTo, StepMs: b.StepMs, Params: params, DryRun: b.DryRun,
		Concurrency: b.Concurrency, CreatedBy: b.CreatedBy})
	if err != nil {
		return Backfill{}, false, fmt.Errorf("record backfill of job %q: %w", b.JobID, err)
	}
	out, err := backfill(row)
	return out, out.BackfillID != b.BackfillID, err
}

// FindBackfill returns the backfill of a job with a spec hash; ErrNotFound when there is none.
func (s *Store) FindBackfill(ctx context.Context, jobID, specHash string) (Backfill, error) {
	row, err := s.q.FindBackfill(ctx, sqlcdb.FindBackfillParams{JobID: jobID, SpecHash: specHash})
	if err != nil {
		return Backfill{}, fmt.Errorf("find backfill of job %q: %w", jobID, mapErr(err))
	}
	return backfill(row)
}

// GetBackfill loads a backfill; ErrNotFound when there is none.
func (s *Store) GetBackfill(ctx context.Context, id uuid.UUID) (Backfill, error) {
	row, err := s.q.GetBackfill(ctx, id)
	if err != nil {
		return Backfill{}, fmt.Errorf("get backfill %s: %w", id, mapErr(err))
	}
	return backfill(row)
}

// FinishBackfill records that every window of a backfill has a finished run.
func (s *Store) FinishBackfill(ctx context.Context, id uuid.UUID) error {
	if err := s.q.FinishBackfill(ctx, id); err != nil {
		return fmt.Errorf("finish backfill %s: %w", id, err)
	}
	return nil
}

func nonNilRaw(s []json.RawMessage) []json.RawMessage {
	if s == nil {
		return []json.RawMessage{}
	}
	return s
}
