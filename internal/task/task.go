// Package task owns the asynq contract between the enqueuer and the worker: task type names,
// payloads, task ids and the options an item task carries. Nothing else builds or parses
// item tasks or their ids.
package task

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
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
	// Generation is the item's task generation (bumped by reruns and task replacements); a
	// task of another generation than the item's is stale.
	Generation int32 `json:"gen"`
}

// payloadVersion leads every binary payload, so the format can change.
const payloadVersion = 1

// Encode is the payload: a version byte, the run id's 16 bytes, then item_no and generation
// as unsigned varints — 20 bytes for most items, stored once per task in Redis.
func (p Item) Encode() []byte {
	b := make([]byte, 0, 1+16+2*binary.MaxVarintLen32)
	b = append(b, payloadVersion)
	b = append(b, p.RunID[:]...)
	b = binary.AppendUvarint(b, uint64(p.ItemNo))
	return binary.AppendUvarint(b, uint64(p.Generation))
}

// DecodeItem reads a payload written by Encode.
func DecodeItem(b []byte) (Item, error) {
	var p Item
	if len(b) < 1+16+2 || b[0] != payloadVersion {
		return p, fmt.Errorf("%w: %d bytes, version %v", ErrBadPayload, len(b), firstByte(b))
	}
	copy(p.RunID[:], b[1:17])
	no, n := binary.Uvarint(b[17:])
	if n <= 0 || no > 1<<31-1 {
		return p, fmt.Errorf("%w: item_no", ErrBadPayload)
	}
	gen, m := binary.Uvarint(b[17+n:])
	if m <= 0 || gen > 1<<31-1 || 17+n+m != len(b) {
		return p, fmt.Errorf("%w: generation", ErrBadPayload)
	}
	p.ItemNo, p.Generation = int32(no), int32(gen)
	if p.RunID == uuid.Nil || p.ItemNo < 1 {
		return p, fmt.Errorf("%w: run_id %s item_no %d", ErrBadPayload, p.RunID, p.ItemNo)
	}
	return p, nil
}

func firstByte(b []byte) any {
	if len(b) == 0 {
		return "none"
	}
	return b[0]
}

// ID is the item's asynq task id: the run, the item number and the generation, so it is never
// reused across runs, items or generations (asynq refuses an id that still sits in its
// archive). It contains no '{' or '}' (asynq's hash-tag characters).
func (p Item) ID() string {
	return p.RunID.String() + ":" + strconv.Itoa(int(p.ItemNo)) + ":" + strconv.Itoa(int(p.Generation))
}

// Options are the delivery settings an item task takes from its job.
type Options struct {
	Queue     string
	MaxRetry  int
	Timeout   time.Duration
	Retention time.Duration
	// ProcessAt, when set, delays the task (a retry's recorded backoff).
	ProcessAt *time.Time
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
// item is settled (and then archives the task with SkipRetry), so asynq's own budget must never
// run out first, e.g. after deliveries that Postgres does not count as attempts.
const RetryHeadroom = 3

// MaxRetryFor gives asynq's MaxRetry for a job allowing maxAttempts attempts.
func MaxRetryFor(maxAttempts int) int { return maxAttempts - 1 + RetryHeadroom }

// NewItem builds the asynq task of an item, with trace context in headers.
func NewItem(p Item, o Options, headers map[string]string) (*asynq.Task, error) {
	if err := o.Validate(); err != nil {
		return nil, fmt.Errorf("item task options: %w", err)
	}
	opts := []asynq.Option{
		asynq.TaskID(p.ID()),
		asynq.Queue(o.Queue),
		asynq.MaxRetry(o.MaxRetry),
		// asynq's deadline is a backstop: the worker enforces the job timeout itself and
		// records the attempt before asynq would abandon it.
		asynq.Timeout(o.Timeout + 30*time.Second),
	}
	if o.Retention > 0 {
		opts = append(opts, asynq.Retention(o.Retention))
	}
	if o.ProcessAt != nil && o.ProcessAt.After(time.Now()) {
		opts = append(opts, asynq.ProcessAt(*o.ProcessAt))
	}
	return asynq.NewTaskWithHeaders(TypeItem, p.Encode(), headers, opts...), nil
}

// ParseItem decodes an item task's payload.
func ParseItem(t *asynq.Task) (Item, error) {
	if t.Type() != TypeItem {
		return Item{}, fmt.Errorf("%w: type %q", ErrBadPayload, t.Type())
	}
	return DecodeItem(t.Payload())
}

// FormatPayload renders an item payload as JSON for asynqmon and the Inspector; other payloads
// are shown as they are.
func FormatPayload(typ string, payload []byte) string {
	if typ != TypeItem {
		return string(payload)
	}
	p, err := DecodeItem(payload)
	if err != nil {
		return fmt.Sprintf("%q (%v)", payload, err)
	}
	b, _ := json.Marshal(p)
	return string(b)
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
