package worker

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/etlexec/etlexec/etl"
	"github.com/etlexec/etlexec/internal/runstate"
	"github.com/etlexec/etlexec/internal/store"
)

// job is what the worker needs of a job definition, decoded once per version.
type job struct {
	ID           string
	Kind         string
	Strategy     etl.Strategy
	CursorPolicy runstate.CursorPolicy
	Config       json.RawMessage
	// TargetEnv is the job config's target_url_env: "" means etlexec's own database.
	TargetEnv string
	// Source is the job config's named source (etl.SourceKey), "" for none.
	Source      string
	MaxAttempts int
	Timeout     time.Duration
	Queue       string
	// secrets are the values of the environment variables the config names (*_env keys).
	secrets   []string
	updatedAt time.Time
}

// jobCache keeps decoded job definitions, refreshed when a claim reports a newer version.
type jobCache struct {
	st *store.Store
	mu sync.Mutex
	m  map[string]*job
}

func newJobCache(st *store.Store) *jobCache { return &jobCache{st: st, m: map[string]*job{}} }

// get returns the job at least as new as updatedAt.
func (c *jobCache) get(ctx context.Context, id string, updatedAt time.Time) (*job, error) {
	c.mu.Lock()
	j, ok := c.m[id]
	c.mu.Unlock()
	if ok && !j.updatedAt.Before(updatedAt) {
		return j, nil
	}
	var row store.Job
	err := store.Retry(ctx, store.RetryBookkeeping, func(ctx context.Context) error {
		var err error
		row, err = c.st.GetJob(ctx, id)
		return err
	})
	if err != nil {
		return nil, err
	}
	j = &job{ID: row.JobID, Kind: row.Kind, Strategy: row.Strategy, CursorPolicy: row.CursorPolicy,
		Config: row.Config, MaxAttempts: int(row.MaxAttempts), Timeout: time.Duration(row.TimeoutMs) * time.Millisecond,
		Queue: row.Queue, updatedAt: row.UpdatedAt}
	var cfg map[string]any
	if json.Unmarshal(row.Config, &cfg) == nil {
		if s, ok := cfg[etl.TargetURLEnvKey].(string); ok {
			j.TargetEnv = s
		} else if v, present := cfg[etl.TargetURLEnvKey]; present && v != nil {
			return nil, etl.Permanent(etl.DataError(fmt.Errorf("job %s config %s: want the name of an environment variable, got %v", id, etl.TargetURLEnvKey, v)))
		}
		if s, ok := cfg[etl.SourceKey].(string); ok {
			j.Source = s
		} else if v, present := cfg[etl.SourceKey]; present && v != nil {
			return nil, etl.Permanent(etl.DataError(fmt.Errorf("job %s config %s: want the name of a source, got %v", id, etl.SourceKey, v)))
		}
		for k, v := range cfg {
			if s, ok := v.(string); ok && strings.HasSuffix(k, "_env") {
				if val := os.Getenv(s); val != "" {
					j.secrets = append(j.secrets, val)
				}
			}
		}
	}
	c.mu.Lock()
	c.m[id] = j
	c.mu.Unlock()
	return j, nil
}
