package store

// Fleet limits: the records behind the limits workers enforce in Redis (a job's
// max_running_items, named sources' request rates). Postgres holds the definitions; Redis holds
// only the live counts (see internal/limits).

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/etlexec/etlexec/internal/store/sqlcdb"
)

// Source is a named source's request rate, as jobs.yaml's `sources:` defines it.
type Source struct {
	// Name is the key a job's config names (`source: crm_api`).
	Name string `json:"source"`
	// Rate requests are allowed per Period, steadily.
	Rate int32 `json:"rate"`
	// Burst requests are allowed at once (the bucket's size).
	Burst int32 `json:"burst"`
	// Period is what Rate counts over; one second unless the file says otherwise.
	Period time.Duration `json:"period"`
}

// RunLimit is what a worker needs to know of a run before it claims one of its items.
type RunLimit struct {
	JobID string
	// MaxRunning is the job's max_running_items; 0 means no limit.
	MaxRunning int
}

// GetRunLimit reads the job of a run and its max_running_items; ErrNotFound for an unknown run.
func (s *Store) GetRunLimit(ctx context.Context, runID uuid.UUID) (RunLimit, error) {
	r, err := s.q.RunLimit(ctx, runID)
	if err != nil {
		return RunLimit{}, fmt.Errorf("read the limit of run %s: %w", runID, mapErr(err))
	}
	return RunLimit{JobID: r.JobID, MaxRunning: int(r.MaxRunningItems)}, nil
}

// GetSource reads a named source; ErrNotFound when no jobs file declared it.
func (s *Store) GetSource(ctx context.Context, name string) (Source, error) {
	r, err := s.q.GetSource(ctx, name)
	if err != nil {
		return Source{}, fmt.Errorf("get source %q: %w", name, mapErr(err))
	}
	return sourceOf(r), nil
}

func sourceOf(r sqlcdb.DwEtlSource) Source {
	return Source{Name: r.Source, Rate: r.Rate, Burst: r.Burst, Period: time.Duration(r.PeriodMs) * time.Millisecond}
}

// applySources upserts the file's sources in tx; with prune, sources not in the file go.
func applySources(ctx context.Context, tx *Tx, sources []Source, prune bool) (pruned []string, err error) {
	keep := make([]string, 0, len(sources))
	for _, src := range sources {
		if err := tx.q.UpsertSource(ctx, sqlcdb.UpsertSourceParams{Source: src.Name, Rate: src.Rate, Burst: src.Burst,
			PeriodMs: src.Period.Milliseconds()}); err != nil {
			return nil, fmt.Errorf("upsert source %q: %w", src.Name, err)
		}
		keep = append(keep, src.Name)
	}
	if !prune {
		return nil, nil
	}
	pruned, err = tx.q.DeleteSourcesNotIn(ctx, keep)
	if err != nil {
		return nil, fmt.Errorf("prune sources: %w", err)
	}
	return pruned, nil
}
