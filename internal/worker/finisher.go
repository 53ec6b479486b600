package worker

import (
	"context"

	"github.com/etlexec/etlexec/internal/store"
)

// maxFinishBatch bounds how many attempt ends share one transaction.
const maxFinishBatch = 256

type finishReq struct {
	end  store.AttemptEnd
	done chan finishRes
}

type finishRes struct {
	shardComplete bool
	err           error
}

// finish records an attempt end through the group committer: ends that arrive while a batch
// is being written wait for the next one, so N concurrent items cost one commit instead of N.
// It flushes eagerly (whatever is queued) and never waits for a batch to fill, so a lone item
// pays no extra latency.
func (w *Worker) finish(ctx context.Context, end store.AttemptEnd) (bool, error) {
	w.finisherOnce.Do(func() {
		w.finishCh = make(chan *finishReq, maxFinishBatch)
		go w.finishLoop()
	})
	req := &finishReq{end: end, done: make(chan finishRes, 1)}
	select {
	case w.finishCh <- req:
	case <-ctx.Done():
		return false, ctx.Err()
	}
	res := <-req.done
	return res.shardComplete, res.err
}

func (w *Worker) finishLoop() {
	batch := make([]*finishReq, 0, maxFinishBatch)
	ends := make([]store.AttemptEnd, 0, maxFinishBatch)
	for first := range w.finishCh {
		batch = append(batch[:0], first)
	drain:
		for len(batch) < maxFinishBatch {
			select {
			case r := <-w.finishCh:
				batch = append(batch, r)
			default:
				break drain
			}
		}
		ends = ends[:0]
		for _, r := range batch {
			ends = append(ends, r.end)
		}
		// Not the attempt's context: the record must land even while the worker shuts down.
		res, err := w.cfg.Store.FinishAttempts(context.Background(), ends)
		for i, r := range batch {
			if err != nil {
				r.done <- finishRes{err: err}
				continue
			}
			r.done <- finishRes{shardComplete: res[i].ShardComplete, err: res[i].Err}
		}
	}
}
