package etl

import (
	"bytes"
	"encoding/json"
	"fmt"
)

// TargetURLEnvKey is the job config key naming the environment variable that holds the
// URL of the job's target database; without it the target is etlexec's own database.
const TargetURLEnvKey = "target_url_env"

// SourceKey is the job config key naming the job's source in the jobs file's `sources:`
// (`source: crm_api`): every item of every job naming it shares that source's request rate
// across the fleet, through [Item.Wait].
const SourceKey = "source"

// ExecutorConfigKeys are the job config keys that the executor reads itself rather than
// the kind: [Item.Config] and config validation leave them out.
var ExecutorConfigKeys = []string{TargetURLEnvKey, SourceKey}

// KindConfig returns a job's config object without the [ExecutorConfigKeys]: what the
// kind itself must understand. Empty config is {}. Config that is not a JSON object is a
// DATA error.
func KindConfig(raw json.RawMessage) (json.RawMessage, error) {
	if len(bytes.TrimSpace(raw)) == 0 || string(bytes.TrimSpace(raw)) == "null" {
		return json.RawMessage("{}"), nil
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, DataError(fmt.Errorf("decode config: want a JSON object: %w", err))
	}
	found := false
	for _, k := range ExecutorConfigKeys {
		if _, ok := m[k]; ok {
			delete(m, k)
			found = true
		}
	}
	if !found {
		return raw, nil
	}
	out, err := json.Marshal(m)
	if err != nil {
		return nil, DataError(fmt.Errorf("decode config: %w", err))
	}
	return out, nil
}
