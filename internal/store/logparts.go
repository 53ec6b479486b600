package store

import (
	"context"
	"fmt"
	"regexp"
	"sort"
	"time"

	"github.com/jackc/pgx/v5"
)

const (
	// LogRetentionDefault is how long run logs are kept; older monthly partitions are dropped.
	LogRetentionDefault = 90 * 24 * time.Hour
	// LogMonthsAheadDefault is how many future months get their partition ahead of time.
	LogMonthsAheadDefault = 3
)

// LogMaintenance says what MaintainLogPartitions should keep.
type LogMaintenance struct {
	// Now is the reference time; time.Now() when zero.
	Now time.Time
	// Retention: a partition whose whole month ended before Now-Retention is dropped, and every
	// month from Now-Retention on has a partition. Defaults to LogRetentionDefault.
	Retention time.Duration
	// MonthsAhead future months are created. Defaults to LogMonthsAheadDefault.
	MonthsAhead int
}

// LogMaintenanceReport lists partitions created and dropped.
type LogMaintenanceReport struct {
	Created []string
	Dropped []string
}

var partName = regexp.MustCompile(`^dw_etl_run_logs_(\d{4})_(\d{2})$`)

func monthStart(t time.Time) time.Time {
	t = t.UTC()
	return time.Date(t.Year(), t.Month(), 1, 0, 0, 0, 0, time.UTC)
}

// LogPartitionName is the child table holding the month of t.
func LogPartitionName(t time.Time) string {
	m := monthStart(t)
	return fmt.Sprintf("dw_etl_run_logs_%04d_%02d", m.Year(), int(m.Month()))
}

// MaintainLogPartitions creates the monthly partitions of dw_etl_run_logs that the retention
// window and the months ahead need, and drops the ones wholly older than the retention, so
// retention is a metadata operation rather than a mass DELETE. It is idempotent and runs under
// an advisory lock so concurrent callers do not race on DDL.
func (s *Store) MaintainLogPartitions(ctx context.Context, m LogMaintenance) (*LogMaintenanceReport, error) {
	if m.Now.IsZero() {
		m.Now = time.Now()
	}
	if m.Retention <= 0 {
		m.Retention = LogRetentionDefault
	}
	if m.MonthsAhead <= 0 {
		m.MonthsAhead = LogMonthsAheadDefault
	}
	cutoff := m.Now.Add(-m.Retention)
	rep := &LogMaintenanceReport{}
	err := s.InTx(ctx, func(tx *Tx) error {
		if _, err := tx.tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtext('etlexec_log_partitions'))`); err != nil {
			return err
		}
		rows, err := tx.tx.Query(ctx, `SELECT c.relname FROM pg_inherits i
			JOIN pg_class c ON c.oid = i.inhrelid
			WHERE i.inhparent = 'public.dw_etl_run_logs'::regclass`)
		if err != nil {
			return err
		}
		existing, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return err
		}
		have := map[string]bool{}
		for _, name := range existing {
			have[name] = true
			mm := partName.FindStringSubmatch(name)
			if mm == nil {
				continue // not ours; leave it
			}
			start, err := time.Parse("2006-01", mm[1]+"-"+mm[2])
			if err != nil {
				continue
			}
			if !start.AddDate(0, 1, 0).After(cutoff) {
				if _, err := tx.tx.Exec(ctx, "DROP TABLE "+pgx.Identifier{"public", name}.Sanitize()); err != nil {
					return fmt.Errorf("drop log partition %s: %w", name, err)
				}
				rep.Dropped = append(rep.Dropped, name)
			}
		}
		last := monthStart(m.Now).AddDate(0, m.MonthsAhead, 0)
		for start := monthStart(cutoff); !start.After(last); start = start.AddDate(0, 1, 0) {
			name := LogPartitionName(start)
			if have[name] {
				continue
			}
			ddl := fmt.Sprintf("CREATE TABLE %s PARTITION OF public.dw_etl_run_logs FOR VALUES FROM ('%s') TO ('%s')",
				pgx.Identifier{"public", name}.Sanitize(), start.Format(time.RFC3339), start.AddDate(0, 1, 0).Format(time.RFC3339))
			if _, err := tx.tx.Exec(ctx, ddl); err != nil {
				return fmt.Errorf("create log partition %s: %w", name, err)
			}
			rep.Created = append(rep.Created, name)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("maintain log partitions: %w", err)
	}
	sort.Strings(rep.Dropped)
	return rep, nil
}
