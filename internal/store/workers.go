package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/etlexec/etlexec/internal/store/sqlcdb"
)

// ErrWorkerDead is returned by Heartbeat once the reconciler declared the worker dead: its
// attempts were closed, and the process must stop them and register again.
var ErrWorkerDead = errors.New("worker was declared dead")

// WorkerInfo describes a worker process registering its liveness lease.
type WorkerInfo struct {
	ID          uuid.UUID
	Name        string
	Host        string
	PID         int
	Queues      []string
	Concurrency int
	// Lease is how long the worker counts as alive after each heartbeat.
	Lease time.Duration
	// AppName is the application_name of the process's sessions (AppName of its first id).
	AppName string
}

// AppName is the application_name of a worker process's sessions; the reconciler ends the
// sessions of a worker it declares dead by it.
func AppName(processID uuid.UUID) string { return "etlexec worker " + processID.String() }

// RegisterWorker records a worker process and starts its lease.
func (s *Store) RegisterWorker(ctx context.Context, w WorkerInfo) error {
	queues := w.Queues
	if queues == nil {
		queues = []string{}
	}
	err := Retry(ctx, RetryBookkeeping, func(ctx context.Context) error {
		_, err := s.livenessQueries().RegisterWorker(ctx, sqlcdb.RegisterWorkerParams{
			WorkerID: w.ID, Name: Text(w.Name, 200), Host: Text(w.Host, 200), Pid: int32(w.PID), AppName: w.AppName, Queues: queues,
			Concurrency: int32(w.Concurrency), LeaseMs: w.Lease.Milliseconds(),
		})
		return err
	})
	if err != nil {
		return fmt.Errorf("register worker %s: %w", w.ID, err)
	}
	return nil
}

// Beat is what a heartbeat learned.
type Beat struct {
	// Lapsed is true when the lease had run out before this renewal: the worker was frozen
	// or cut off for longer than its lease, and a reconciler may have closed its attempts.
	Lapsed bool
	// CancelledRuns are the given runs an operator asked to cancel.
	CancelledRuns []uuid.UUID
}

// HeldItem is an item one of a worker's running attempts holds.
type HeldItem struct {
	RunID  uuid.UUID
	ItemNo int32
}

// Heartbeat renews the worker's lease (on the database clock, on the liveness pool), records
// the items its attempts hold (history lists a run's running items from them) and reports which
// of their runs were cancelled. It returns ErrWorkerDead once the worker was declared dead.
// Transient errors are retried briefly: a heartbeat is only useful within its lease.
func (s *Store) Heartbeat(ctx context.Context, workerID uuid.UUID, held []HeldItem) (Beat, error) {
	p := sqlcdb.WorkerHeartbeatParams{WorkerID: workerID, HeldRunIds: make([]uuid.UUID, len(held)),
		HeldItemNos: make([]int32, len(held))}
	for i, h := range held {
		p.HeldRunIds[i], p.HeldItemNos[i] = h.RunID, h.ItemNo
	}
	var row sqlcdb.WorkerHeartbeatRow
	err := Retry(ctx, RetryQuick, func(ctx context.Context) error {
		var err error
		row, err = s.livenessQueries().WorkerHeartbeat(ctx, p)
		return err
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return Beat{}, ErrWorkerDead
	}
	if err != nil {
		return Beat{}, fmt.Errorf("heartbeat of worker %s: %w", workerID, err)
	}
	return Beat{Lapsed: row.Lapsed, CancelledRuns: row.CancelledRuns}, nil
}

// AttemptProgress is a running attempt's live counters.
type AttemptProgress struct {
	RunID          uuid.UUID
	ItemNo         int32
	AttemptID      uuid.UUID
	RecordsRead    int64
	RecordsWritten int64
	Pages          int64
	Message        string
}

// ReportProgress writes running attempts' live counters and messages onto their items, skipping
// any item whose row is being written right now (its end is landing). It reports how many it wrote.
func (s *Store) ReportProgress(ctx context.Context, ps []AttemptProgress) (int64, error) {
	if len(ps) == 0 {
		return 0, nil
	}
	p := sqlcdb.ReportProgressParams{RunIds: make([]uuid.UUID, len(ps)), ItemNos: make([]int32, len(ps)),
		AttemptIds: make([]uuid.UUID, len(ps)), RecordsRead: make([]int64, len(ps)),
		RecordsWritten: make([]int64, len(ps)), Pages: make([]int64, len(ps)), Messages: make([]string, len(ps))}
	for i, a := range ps {
		p.RunIds[i], p.ItemNos[i], p.AttemptIds[i] = a.RunID, a.ItemNo, a.AttemptID
		p.RecordsRead[i], p.RecordsWritten[i], p.Pages[i] = a.RecordsRead, a.RecordsWritten, a.Pages
		p.Messages[i] = Text(a.Message, ProgressMax)
	}
	n, err := s.livenessQueries().ReportProgress(ctx, p)
	if err != nil {
		return 0, fmt.Errorf("report progress of %d attempts: %w", len(ps), err)
	}
	return n, nil
}

// StopWorker records a clean shutdown: the worker's lease ends now.
func (s *Store) StopWorker(ctx context.Context, workerID uuid.UUID) error {
	err := Retry(ctx, RetryQuick, func(ctx context.Context) error {
		return s.livenessQueries().StopWorker(ctx, workerID)
	})
	if err != nil {
		return fmt.Errorf("stop worker %s: %w", workerID, err)
	}
	return nil
}
