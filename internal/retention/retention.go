// Package retention removes old history from the ledger: runs that started and ended longer
// ago than their job's history retention (or the global one), with their items, attempts, logs
// and alerts, in short bounded batches (a few hundred runs and at most BatchItemsDefault items
// per transaction, row locks held elsewhere skipped, lock waits capped at a second), so live
// writers are never held up. A job's latest run, runs a cursor names and open runs are always
// kept, and cursors are never touched. `enqueuer prune` runs it on demand (with a preview);
// `enqueuer schedule` runs Daily, which also maintains the run-log partitions.
package retention

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/rs/zerolog"

	"github.com/etlexec/etlexec/internal/store"
)

const (
	// GlobalDefault is the retention of jobs that name none: the run-log retention, so a run
	// and its logs go together.
	GlobalDefault = store.LogRetentionDefault
	// BatchRunsDefault and BatchItemsDefault bound one delete transaction.
	BatchRunsDefault  = 200
	BatchItemsDefault = 50000
	// EveryDefault is the period of Daily.
	EveryDefault = 24 * time.Hour
	// StateName is where Daily records its last pass (dw_etl_control_state).
	StateName = "retention"
)

// Config configures a Pruner.
type Config struct {
	// Store is etlexec's database. Required.
	Store *store.Store
	// Global is the history retention of jobs without their own; 0 keeps their history.
	Global time.Duration
	// BatchRuns and BatchItems bound one transaction. Default BatchRunsDefault, BatchItemsDefault.
	BatchRuns, BatchItems int
	// LogRetention is passed to the run-log partition maintenance of Daily. Defaults to
	// store.LogRetentionDefault.
	LogRetention time.Duration
	// Every is the period of Daily. Defaults to EveryDefault.
	Every time.Duration
	// Now is the clock ages are measured by. Defaults to time.Now.
	Now    func() time.Time
	Logger zerolog.Logger
}

// Pruner removes expired history.
type Pruner struct {
	cfg Config
	log zerolog.Logger
}

// New builds a Pruner.
func New(cfg Config) (*Pruner, error) {
	if cfg.Store == nil {
		return nil, errors.New("retention config: Store is required")
	}
	if cfg.Global < 0 {
		return nil, fmt.Errorf("retention config: global retention %s is negative", cfg.Global)
	}
	if cfg.BatchRuns <= 0 {
		cfg.BatchRuns = BatchRunsDefault
	}
	if cfg.BatchItems <= 0 {
		cfg.BatchItems = BatchItemsDefault
	}
	if cfg.LogRetention <= 0 {
		cfg.LogRetention = store.LogRetentionDefault
	}
	if cfg.Every <= 0 {
		cfg.Every = EveryDefault
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Pruner{cfg: cfg, log: cfg.Logger.With().Str("component", "retention").Logger()}, nil
}

// JobReport is what pruning one job removed (or would remove).
type JobReport struct {
	JobID string `json:"job_id"`
	// Retention is the age runs of this job are kept ("2160h0m0s").
	Retention string    `json:"retention"`
	Cutoff    time.Time `json:"cutoff"`
	Runs      int64     `json:"runs"`
	Items     int64     `json:"items"`
	Attempts  int64     `json:"attempts"`
	Batches   int       `json:"batches"`
}

// Report sums a pass; Jobs lists the jobs with something expired.
type Report struct {
	Preview  bool        `json:"preview"`
	Jobs     []JobReport `json:"jobs"`
	Runs     int64       `json:"runs"`
	Items    int64       `json:"items"`
	Attempts int64       `json:"attempts"`
}

// Prune removes (or with preview counts) the expired runs of every job, or of jobID alone.
func (p *Pruner) Prune(ctx context.Context, jobID string, preview bool) (Report, error) {
	rep := Report{Preview: preview, Jobs: []JobReport{}}
	jobs, err := p.cfg.Store.AllJobRetention(ctx)
	if err != nil {
		return rep, err
	}
	now := p.cfg.Now()
	found := jobID == ""
	for _, j := range jobs {
		if jobID != "" && j.JobID != jobID {
			continue
		}
		found = true
		ret := p.cfg.Global
		if j.Retention != nil {
			ret = *j.Retention
		}
		if ret <= 0 {
			continue
		}
		jr := JobReport{JobID: j.JobID, Retention: ret.String(), Cutoff: now.Add(-ret)}
		keep, err := p.cfg.Store.RetentionKeep(ctx, j.JobID)
		if err != nil {
			return rep, err
		}
		if preview {
			b, err := p.cfg.Store.PreviewExpiredRuns(ctx, j.JobID, jr.Cutoff, keep)
			if err != nil {
				return rep, err
			}
			jr.Runs, jr.Items, jr.Attempts = b.Runs, b.Items, b.Attempts
		} else {
			for {
				b, err := p.cfg.Store.PruneExpiredRuns(ctx, j.JobID, jr.Cutoff, keep, p.cfg.BatchRuns, p.cfg.BatchItems)
				if err != nil {
					return rep, err
				}
				if b.Runs == 0 {
					break
				}
				jr.Runs, jr.Items, jr.Attempts, jr.Batches = jr.Runs+b.Runs, jr.Items+b.Items, jr.Attempts+b.Attempts, jr.Batches+1
			}
			if jr.Runs > 0 {
				p.log.Info().Str("job_id", j.JobID).Int64("runs", jr.Runs).Int64("items", jr.Items).Int64("attempts", jr.Attempts).
					Int("batches", jr.Batches).Time("cutoff", jr.Cutoff).Msg("expired runs removed")
			}
		}
		if jr.Runs > 0 {
			rep.Jobs = append(rep.Jobs, jr)
			rep.Runs, rep.Items, rep.Attempts = rep.Runs+jr.Runs, rep.Items+jr.Items, rep.Attempts+jr.Attempts
		}
	}
	if !found {
		return rep, fmt.Errorf("prune job %q: %w", jobID, store.ErrNotFound)
	}
	return rep, nil
}

// passState is what Daily records after a pass.
type passState struct {
	FinishedAt time.Time `json:"finished_at"`
	Runs       int64     `json:"runs"`
}

// Daily runs a pass (Prune of every job, then the run-log partitions: months ahead created,
// expired months dropped) when the last one recorded finished at least Every ago; replicas and
// restarts share that record, so it runs about once per Every wherever it is called from.
// ran is false when it was not due.
func (p *Pruner) Daily(ctx context.Context) (ran bool, err error) {
	var last passState
	_, found, err := p.cfg.Store.ControlState(ctx, StateName, &last)
	if err != nil {
		return false, err
	}
	now := p.cfg.Now()
	if found && now.Sub(last.FinishedAt) < p.cfg.Every {
		return false, nil
	}
	rep, err := p.Prune(ctx, "", false)
	if err != nil {
		return true, err
	}
	lr, err := p.cfg.Store.MaintainLogPartitions(ctx, store.LogMaintenance{Now: now, Retention: p.cfg.LogRetention})
	if err != nil {
		return true, err
	}
	p.log.Info().Int64("runs", rep.Runs).Int64("items", rep.Items).Strs("log_partitions_created", lr.Created).
		Strs("log_partitions_dropped", lr.Dropped).Msg("retention pass done")
	return true, p.cfg.Store.SetControlState(ctx, StateName, passState{FinishedAt: p.cfg.Now(), Runs: rep.Runs})
}
