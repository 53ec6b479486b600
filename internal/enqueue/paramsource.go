package enqueue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"os"

	"github.com/jackc/pgx/v5"

	"github.com/etlexec/etlexec/internal/store"
)

// paramSourceSpec is a job's param_source: {"static": [...]} or {"sql": "...",
// "source_url_env": "VAR"} (validated by jobdef when the job is applied).
type paramSourceSpec struct {
	Static       []json.RawMessage `json:"static"`
	SQL          string            `json:"sql"`
	SourceURLEnv string            `json:"source_url_env"`
}

// DeclaredParamSource streams a job's declared param_source: its static list, or one param
// set per row of its SQL query against the database whose URL is in source_url_env. Rows are
// turned into JSON objects by Postgres itself (row_to_json, column name → value), so types
// keep their JSON form, and are read one at a time over a single connection.
func DeclaredParamSource(job store.Job) (iter.Seq2[json.RawMessage, error], error) {
	var spec paramSourceSpec
	if err := json.Unmarshal(job.ParamSource, &spec); err != nil {
		return nil, fmt.Errorf("job %q param_source: %w", job.JobID, err)
	}
	switch {
	case spec.Static != nil:
		return each(spec.Static), nil
	case spec.SQL != "":
		return sqlParams(job.JobID, spec), nil
	}
	return nil, fmt.Errorf("job %q param_source: want {static: [...]} or {sql: ..., source_url_env: VAR}", job.JobID)
}

// each yields the elements of a slice.
func each(sets []json.RawMessage) iter.Seq2[json.RawMessage, error] {
	return func(yield func(json.RawMessage, error) bool) {
		for _, s := range sets {
			if !yield(s, nil) {
				return
			}
		}
	}
}

func sqlParams(jobID string, spec paramSourceSpec) iter.Seq2[json.RawMessage, error] {
	return func(yield func(json.RawMessage, error) bool) {
		fail := func(err error) { yield(nil, fmt.Errorf("job %q param_source sql: %w", jobID, err)) }
		dsn := os.Getenv(spec.SourceURLEnv)
		if dsn == "" {
			fail(fmt.Errorf("environment variable %s (source_url_env) is not set", spec.SourceURLEnv))
			return
		}
		ctx := context.Background()
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			fail(fmt.Errorf("connect to the source from %s: %w", spec.SourceURLEnv, err))
			return
		}
		defer conn.Close(context.WithoutCancel(ctx))
		rows, err := conn.Query(ctx, `SELECT row_to_json(q)::text FROM (`+spec.SQL+`) q`)
		if err != nil {
			fail(err)
			return
		}
		defer rows.Close()
		for rows.Next() {
			var raw string
			if err := rows.Scan(&raw); err != nil {
				fail(err)
				return
			}
			if !yield(json.RawMessage(raw), nil) {
				return
			}
		}
		if err := rows.Err(); err != nil && !errors.Is(err, context.Canceled) {
			fail(err)
		}
	}
}
