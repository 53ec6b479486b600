// Package dispatch hands item tasks to Redis and reads back what Redis holds for them. The
// enqueuer, the reconciler and the operator controls all go through it; the task package
// defines what a task is, this package delivers it.
//
// Three things here rely on asynq's key layout rather than its API, because the API has no
// way to do them: the queue's epoch marker is a key of ours in the queue's hash slot; an active
// task's lease is read from the queue's lease set; and a task left active with no lease (asynq
// issue #1144: nothing will ever recover it) is removed from the active list. Each is pinned
// by a test against a real asynq server.
package dispatch

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/errgroup"

	"github.com/etlexec/etlexec/internal/store"
	"github.com/etlexec/etlexec/internal/task"
)

// Config configures a Dispatcher.
type Config struct {
	// Redis is where tasks go. Required.
	Redis asynq.RedisConnOpt
	// Concurrency bounds concurrent enqueue calls (asynq has no batch enqueue: one round trip
	// per task). Defaults to ConcurrencyDefault.
	Concurrency int
	// Headers, when set, returns task headers for ctx (trace propagation); called once per Send.
	Headers func(ctx context.Context) map[string]string
}

// ConcurrencyDefault is the default Config.Concurrency.
const ConcurrencyDefault = 32

// Dispatcher delivers item tasks. It is safe for concurrent use; Close it when done.
type Dispatcher struct {
	cfg    Config
	client *asynq.Client
	insp   *asynq.Inspector
	rdb    redis.UniversalClient
}

// New builds a Dispatcher. Each Dispatcher has its own asynq client: asynq's client registers
// a queue in Redis once and never again, so a component that must re-register queues after
// Redis lost its data (the reconciler) builds a new one.
func New(cfg Config) (*Dispatcher, error) {
	if cfg.Redis == nil {
		return nil, errors.New("dispatch config: Redis is required")
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = ConcurrencyDefault
	}
	rdb, ok := cfg.Redis.MakeRedisClient().(redis.UniversalClient)
	if !ok {
		return nil, fmt.Errorf("dispatch config: redis connection option %T does not make a go-redis v9 client", cfg.Redis)
	}
	return &Dispatcher{cfg: cfg, client: asynq.NewClientFromRedisClient(rdb), insp: asynq.NewInspectorFromRedisClient(rdb), rdb: rdb}, nil
}

// Close closes the Redis connections.
func (d *Dispatcher) Close() error { return d.rdb.Close() }

// Inspector is the dispatcher's asynq inspector.
func (d *Dispatcher) Inspector() *asynq.Inspector { return d.insp }

// OptionsFor gives the delivery options of a job's item tasks.
func OptionsFor(job store.Job) task.Options {
	return task.OptionsFor(job.Queue, int(job.MaxAttempts), time.Duration(job.TimeoutMs)*time.Millisecond,
		time.Duration(job.RetentionMs)*time.Millisecond)
}

// Sent counts what Send did.
type Sent struct {
	// New tasks were enqueued; Present ones were already in Redis under the same id.
	New, Present int
}

// Send enqueues one task per item, Concurrency at a time, with each item's generation in its
// id and payload and its NotBefore as the task's process time. A task id already in Redis
// counts as present: ids are deterministic, so it is the same task.
func (d *Dispatcher) Send(ctx context.Context, job store.Job, items []store.ItemTask) (Sent, error) {
	var headers map[string]string
	if d.cfg.Headers != nil {
		headers = d.cfg.Headers(ctx)
	}
	base := OptionsFor(job)
	if err := base.Validate(); err != nil {
		return Sent{}, fmt.Errorf("job %q task options: %w", job.JobID, err)
	}
	// A fixed set of senders takes items by index: no goroutine per task.
	var fresh, present, next atomic.Int64
	g, gctx := errgroup.WithContext(ctx)
	for range min(d.cfg.Concurrency, len(items)) {
		g.Go(func() error {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(items) || gctx.Err() != nil {
					return nil
				}
				it := items[i]
				o := base
				o.ProcessAt = it.NotBefore
				t, err := task.NewItem(task.Item{RunID: it.RunID, ItemNo: it.ItemNo, Generation: it.Generation}, o, headers)
				if err != nil {
					return err
				}
				_, err = d.client.EnqueueContext(gctx, t)
				switch {
				case errors.Is(err, asynq.ErrTaskIDConflict):
					present.Add(1)
				case err != nil:
					return fmt.Errorf("enqueue item %d of run %s: %w", it.ItemNo, it.RunID, err)
				default:
					fresh.Add(1)
				}
			}
		})
	}
	err := g.Wait()
	return Sent{New: int(fresh.Load()), Present: int(present.Load())}, err
}

// Delete removes the items' tasks waiting in Redis (pending, scheduled, retry); it reports how
// many it removed (the others ran already, or are gone).
func (d *Dispatcher) Delete(queue string, items []store.ItemTask) int {
	n := 0
	for _, it := range items {
		if d.insp.DeleteTask(queue, idOf(it)) == nil {
			n++
		}
	}
	return n
}

// CancelRunning asks workers running the items' tasks to cancel them (asynq's cancel channel);
// it reports how many signals were sent.
func (d *Dispatcher) CancelRunning(items []store.ItemTask) int {
	n := 0
	for _, it := range items {
		if d.insp.CancelProcessing(idOf(it)) == nil {
			n++
		}
	}
	return n
}

func idOf(it store.ItemTask) string {
	return task.Item{RunID: it.RunID, ItemNo: it.ItemNo, Generation: it.Generation}.ID()
}

// epochKey is the queue's epoch marker: a key of ours in the queue's hash slot (asynq's keys
// are asynq:{queue}:…), so it lives and dies with the queue's data on the same node.
func epochKey(queue string) string { return "etlexec:{" + queue + "}:epoch" }

// Epoch reads the queue's epoch marker, "" when Redis does not hold one.
func (d *Dispatcher) Epoch(ctx context.Context, queue string) (string, error) {
	v, err := d.rdb.Get(ctx, epochKey(queue)).Result()
	if errors.Is(err, redis.Nil) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read epoch marker of queue %s: %w", queue, err)
	}
	return v, nil
}

// SetEpoch writes the queue's epoch marker (no expiry).
func (d *Dispatcher) SetEpoch(ctx context.Context, queue, epoch string) error {
	if err := d.rdb.Set(ctx, epochKey(queue), epoch, 0).Err(); err != nil {
		return fmt.Errorf("write epoch marker of queue %s: %w", queue, err)
	}
	return nil
}

// MarkEpoch writes a new epoch marker for queue to Redis, then records it in Postgres: from
// then on, a marker missing from Redis means Redis lost the queue's data.
func (d *Dispatcher) MarkEpoch(ctx context.Context, st *store.Store, queue string) error {
	var b [12]byte
	_, _ = rand.Read(b[:])
	epoch := hex.EncodeToString(b[:])
	if err := d.SetEpoch(ctx, queue, epoch); err != nil {
		return err
	}
	return st.SetRedisEpoch(ctx, queue, epoch)
}

// EnsureEpoch marks a queue that never had an epoch marker, before its first tasks go out, so
// the reconciler need not take a queue it has never seen for one that lost its data. A queue
// whose recorded marker Redis no longer holds is left to the reconciler, which repairs it.
func (d *Dispatcher) EnsureEpoch(ctx context.Context, st *store.Store, queue string) error {
	stored, err := st.RedisEpoch(ctx, queue)
	if err != nil || stored != "" {
		return err
	}
	return d.MarkEpoch(ctx, st, queue)
}

// Sizes is what Redis holds for a queue.
type Sizes struct {
	// Waiting tasks will be delivered (pending, scheduled, retry); Active ones are running
	// or left by a dead worker.
	Waiting, Active int
}

// QueueSizes reads the queue's task counts (one round trip); a queue Redis does not know has
// none.
func (d *Dispatcher) QueueSizes(queue string) (Sizes, error) {
	info, err := d.insp.GetQueueInfo(queue)
	if errors.Is(err, asynq.ErrQueueNotFound) {
		return Sizes{}, nil
	}
	if err != nil {
		return Sizes{}, fmt.Errorf("read sizes of queue %s: %w", queue, err)
	}
	return Sizes{Waiting: info.Pending + info.Scheduled + info.Retry + info.Aggregating, Active: info.Active}, nil
}

// ActiveTask is an item task asynq holds as active.
type ActiveTask struct {
	ID   string
	Item task.Item
	// Orphaned is true when its lease expired (its worker died; asynq recovers it in time),
	// NoLease when it has no lease at all (nothing will ever recover it).
	Orphaned, NoLease bool
}

// ActiveTasks lists up to limit active item tasks of the queue with their lease state.
func (d *Dispatcher) ActiveTasks(ctx context.Context, queue string, limit int) ([]ActiveTask, error) {
	infos, err := d.insp.ListActiveTasks(queue, asynq.PageSize(limit))
	if errors.Is(err, asynq.ErrQueueNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list active tasks of queue %s: %w", queue, err)
	}
	var out []ActiveTask
	for _, info := range infos {
		if info.Type != task.TypeItem {
			continue
		}
		p, err := task.DecodeItem(info.Payload)
		if err != nil {
			continue
		}
		_, err = d.rdb.ZScore(ctx, leaseKey(queue), info.ID).Result()
		noLease := errors.Is(err, redis.Nil)
		if err != nil && !noLease {
			return nil, fmt.Errorf("read lease of task %s: %w", info.ID, err)
		}
		out = append(out, ActiveTask{ID: info.ID, Item: p, Orphaned: info.IsOrphaned, NoLease: noLease})
	}
	return out, nil
}

// leaseKey is asynq's lease set of a queue (internal/base.LeaseKey).
func leaseKey(queue string) string { return "asynq:{" + queue + "}:lease" }

// removeStuckScript drops a task that is active with no lease: out of the active list, its
// lease (if one appeared meanwhile, the task is alive and left alone) and its hash.
var removeStuckScript = redis.NewScript(`
if redis.call("ZSCORE", KEYS[2], ARGV[1]) then
  return 0
end
local n = redis.call("LREM", KEYS[1], 0, ARGV[1])
redis.call("DEL", KEYS[3])
return n`)

// RemoveStuck removes an active task that has no lease (see ActiveTask.NoLease); it reports
// whether it was removed.
func (d *Dispatcher) RemoveStuck(ctx context.Context, queue, id string) (bool, error) {
	keys := []string{"asynq:{" + queue + "}:active", leaseKey(queue), "asynq:{" + queue + "}:t:" + id}
	n, err := removeStuckScript.Run(ctx, d.rdb, keys, id).Int()
	if err != nil {
		return false, fmt.Errorf("remove stuck task %s of queue %s: %w", id, queue, err)
	}
	return n > 0, nil
}
