// Package task owns the asynq contract between the enqueuer and the worker: task type names,
// payloads, task ids and the options an item task carries. Nothing else builds or parses
// item tasks.
package task

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/hibiken/asynq"
)

// TypeItem runs one item of a run.
const TypeItem = "etl:item"

// ErrBadPayload marks a task whose payload cannot be an item; it is never retried.
var ErrBadPayload = errors.New("bad item task payload")

// Item is the payload of a TypeItem task. Postgres holds everything else about the item, so
// the payload stays small and a task rebuilt from Postgres is identical to the original.
type Item struct {
	RunID  uuid.UUID `json:"run_id"`
	ItemNo int32     `json:"item_no"`
	// Generation is the item's rerun generation; a task of an older generation is stale.
	Generation int32 `json:"gen"`
}

// ItemID is the asynq task id of an item: derived from the run and the param_hash, so it is
// never reused across runs, and suffixed by the rerun generation because asynq refuses an id
// that still sits in its archive. It contains no '{' or '}' (asynq's hash-tag characters).
func ItemID(runID uuid.UUID, paramHash string, generation int32) string {
	h := paramHash
	if len(h) > 32 {
		h = h[:32]
	}
	id := runID.String() + ":" + h
	if generation > 0 {
		id += fmt.Sprintf(":g%d", generation)
	}
	return id
}

// Options are the delivery settings an item task takes from its job.
type Options struct {
	Queue     string
	MaxRetry  int
	Timeout   time.Duration
	Retention time.Duration
}

// Validate names the first bad option.
func (o Options) Validate() error {
	switch {
	case o.Queue == "" || strings.ContainsAny(o.Queue, "{}"):
		return fmt.Errorf("queue %q: must be non-empty without braces", o.Queue)
	case o.MaxRetry < 0:
		return fmt.Errorf("max retry %d: must be >= 0", o.MaxRetry)
	case o.Timeout <= 0:
		return fmt.Errorf("timeout %s: must be > 0", o.Timeout)
	}
	return nil
}

// OptionsFor gives the delivery options of a job's item tasks.
func OptionsFor(queue string, maxAttempts int, timeout, retention time.Duration) Options {
	return Options{Queue: queue, MaxRetry: MaxRetryFor(maxAttempts), Timeout: timeout, Retention: retention}
}

// RetryHeadroom is added to a job's max_attempts for asynq's MaxRetry: Postgres decides when an
// item is terminal (and then archives the task with SkipRetry), so asynq's own budget must never
// run out first, e.g. after lease expiries that Postgres does not count as attempts.
const RetryHeadroom = 3

// MaxRetryFor gives asynq's MaxRetry for a job allowing maxAttempts attempts.
func MaxRetryFor(maxAttempts int) int { return maxAttempts - 1 + RetryHeadroom }

// NewItem builds the asynq task of an item, with trace context in headers.
func NewItem(p Item, paramHash string, o Options, headers map[string]string) (*asynq.Task, error) {
	if err := o.Validate(); err != nil {
		return nil, fmt.Errorf("item task options: %w", err)
	}
	b, err := json.Marshal(p)
	if err != nil {
		return nil, err
	}
	opts := []asynq.Option{
		asynq.TaskID(ItemID(p.RunID, paramHash, p.Generation)),
		asynq.Queue(o.Queue),
		asynq.MaxRetry(o.MaxRetry),
		// asynq's deadline is a backstop: the worker enforces the job timeout itself and
		// records the attempt before asynq would abandon it.
		asynq.Timeout(o.Timeout + 30*time.Second),
	}
	if o.Retention > 0 {
		opts = append(opts, asynq.Retention(o.Retention))
	}
	return asynq.NewTaskWithHeaders(TypeItem, b, headers, opts...), nil
}

// ParseItem decodes an item task's payload.
func ParseItem(t *asynq.Task) (Item, error) {
	var p Item
	if t.Type() != TypeItem {
		return p, fmt.Errorf("%w: type %q", ErrBadPayload, t.Type())
	}
	if err := json.Unmarshal(t.Payload(), &p); err != nil {
		return p, fmt.Errorf("%w: %v", ErrBadPayload, err)
	}
	if p.RunID == uuid.Nil || p.ItemNo < 1 {
		return p, fmt.Errorf("%w: run_id %s item_no %d", ErrBadPayload, p.RunID, p.ItemNo)
	}
	return p, nil
}

// RetryIn wraps a handler error with the delay the worker computed and recorded for the next
// attempt; RetryDelay hands that same delay to asynq, so the recorded next_retry_at and asynq's
// schedule agree.
func RetryIn(err error, d time.Duration) error { return &retryError{err: err, delay: d} }

type retryError struct {
	err   error
	delay time.Duration
}

func (e *retryError) Error() string { return e.err.Error() }
func (e *retryError) Unwrap() error { return e.err }

// RetryDelay is asynq's Config.RetryDelayFunc: the recorded delay when there is one, otherwise
// asynq's default.
func RetryDelay(n int, err error, t *asynq.Task) time.Duration {
	var re *retryError
	if errors.As(err, &re) {
		return re.delay
	}
	return asynq.DefaultRetryDelayFunc(n, err, t)
}

// GenerationOf reads the rerun generation back from an item task id built by ItemID.
func GenerationOf(taskID string) int32 {
	i := strings.LastIndex(taskID, ":g")
	if i < 0 {
		return 0
	}
	var g int32
	if _, err := fmt.Sscanf(taskID[i+2:], "%d", &g); err != nil {
		return 0
	}
	return g
}
