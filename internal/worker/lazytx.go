package worker

import (
	"context"
	"fmt"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/etlexec/etlexec/etl"
	"github.com/etlexec/etlexec/internal/store"
)

// lazyTx is the target transaction a handler sees. It begins on first use, so a handler that
// never touches its target (an API probe, a no-op) costs no connection, BEGIN or COMMIT, and
// its attempt can be recorded in a single statement.
type lazyTx struct {
	ctx  context.Context // the attempt's context, for uses without one (Conn, LargeObjects)
	pool *pgxpool.Pool

	mu  sync.Mutex
	tx  pgx.Tx
	err error
}

var _ pgx.Tx = (*lazyTx)(nil)

// targetSessionSQL undoes store.Options.Bounded for one target transaction.
const targetSessionSQL = "SET LOCAL statement_timeout = 0; SET LOCAL lock_timeout = 0; " +
	"SET LOCAL idle_in_transaction_session_timeout = 0; SET LOCAL plan_cache_mode = auto"

func newLazyTx(ctx context.Context, pool *pgxpool.Pool) *lazyTx { return &lazyTx{ctx: ctx, pool: pool} }

func (l *lazyTx) get(ctx context.Context) (pgx.Tx, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.tx == nil && l.err == nil {
		// Nothing ran in the transaction yet: a full server or a dropped connection is waited
		// out (the attempt keeps its lease meanwhile) instead of failing the attempt.
		var tx pgx.Tx
		err := store.Retry(ctx, store.RetryBookkeeping, func(ctx context.Context) error {
			var err error
			if tx, err = l.pool.Begin(ctx); err != nil {
				return err
			}
			// A handler's statements run as long as its item may; bookkeeping bounds do not apply.
			if _, err = tx.Exec(ctx, targetSessionSQL); err != nil {
				_ = tx.Rollback(context.WithoutCancel(ctx))
			}
			return err
		})
		if err != nil {
			l.err = etl.DBError(fmt.Errorf("begin target transaction: %w", err))
		} else {
			l.tx = tx
		}
	}
	return l.tx, l.err
}

// started returns the real transaction, or nil when the handler never used its target.
func (l *lazyTx) started() pgx.Tx {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.tx
}

func (l *lazyTx) Begin(ctx context.Context) (pgx.Tx, error) {
	tx, err := l.get(ctx)
	if err != nil {
		return nil, err
	}
	return tx.Begin(ctx)
}

// Commit and Rollback belong to the executor; a handler calling them gets an error instead of
// ending the transaction the executor owns.
func (l *lazyTx) Commit(context.Context) error {
	return etl.SystemError(fmt.Errorf("the executor commits the target transaction; handlers must not"))
}

func (l *lazyTx) Rollback(context.Context) error {
	return etl.SystemError(fmt.Errorf("the executor rolls back the target transaction; return an error instead"))
}

func (l *lazyTx) CopyFrom(ctx context.Context, table pgx.Identifier, cols []string, src pgx.CopyFromSource) (int64, error) {
	tx, err := l.get(ctx)
	if err != nil {
		return 0, err
	}
	return tx.CopyFrom(ctx, table, cols, src)
}

func (l *lazyTx) SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults {
	tx, err := l.get(ctx)
	if err != nil {
		return errBatch{err}
	}
	return tx.SendBatch(ctx, b)
}

func (l *lazyTx) LargeObjects() pgx.LargeObjects {
	tx, err := l.get(l.ctx)
	if err != nil {
		return pgx.LargeObjects{}
	}
	return tx.LargeObjects()
}

func (l *lazyTx) Prepare(ctx context.Context, name, sql string) (*pgconn.StatementDescription, error) {
	tx, err := l.get(ctx)
	if err != nil {
		return nil, err
	}
	return tx.Prepare(ctx, name, sql)
}

func (l *lazyTx) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	tx, err := l.get(ctx)
	if err != nil {
		return pgconn.CommandTag{}, err
	}
	return tx.Exec(ctx, sql, args...)
}

func (l *lazyTx) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	tx, err := l.get(ctx)
	if err != nil {
		return nil, err
	}
	return tx.Query(ctx, sql, args...)
}

func (l *lazyTx) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	tx, err := l.get(ctx)
	if err != nil {
		return errRow{err}
	}
	return tx.QueryRow(ctx, sql, args...)
}

func (l *lazyTx) Conn() *pgx.Conn {
	tx, err := l.get(l.ctx)
	if err != nil {
		return nil
	}
	return tx.Conn()
}

type errRow struct{ err error }

func (r errRow) Scan(...any) error { return r.err }

type errBatch struct{ err error }

func (b errBatch) Exec() (pgconn.CommandTag, error) { return pgconn.CommandTag{}, b.err }
func (b errBatch) Query() (pgx.Rows, error)         { return nil, b.err }
func (b errBatch) QueryRow() pgx.Row                { return errRow(b) }
func (b errBatch) Close() error                     { return b.err }
func (b errBatch) Tx() pgx.Tx                       { return nil }
