// Package redistest isolates tests that share one Redis: each test gets its own asynq queue
// name, and the queue is deleted when the test ends. asynq namespaces every queue key with the
// queue name in a hash tag, so tests never see each other's tasks.
package redistest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"testing"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
)

// DefaultURL is used when REDIS_URL is unset (and no container was started).
const DefaultURL = "redis://127.0.0.1:6379/0"

// URL returns the Redis URL tests run against: REDIS_URL, else a per-process container when
// built with -tags containers (containers.go), else DefaultURL.
func URL() string {
	if u := os.Getenv("REDIS_URL"); u != "" {
		return u
	}
	if u := containerURL(); u != "" {
		return u
	}
	return DefaultURL
}

// ConnOpt parses URL() for asynq.
func ConnOpt(t testing.TB) asynq.RedisConnOpt {
	t.Helper()
	opt, err := asynq.ParseRedisURI(URL())
	if err != nil {
		t.Fatalf("redistest: parse REDIS_URL: %v", err)
	}
	return opt
}

// Queue returns a queue name unique to this test and removes the queue afterwards.
func Queue(t testing.TB) string {
	t.Helper()
	var b [6]byte
	_, _ = rand.Read(b[:])
	q := "t_" + hex.EncodeToString(b[:])
	opt := ConnOpt(t)
	t.Cleanup(func() {
		insp := asynq.NewInspector(opt)
		defer insp.Close()
		_ = insp.DeleteQueue(q, true)
		// DeleteQueue leaves the queue's daily counters and completed tasks behind; a shared
		// Redis should not collect them run after run.
		rdb, ok := opt.MakeRedisClient().(redis.UniversalClient)
		if !ok {
			return
		}
		defer rdb.Close()
		ctx := context.Background()
		var keys []string
		for _, pat := range []string{"asynq:{" + q + "}:*", "etlexec:{" + q + "}:*"} {
			iter := rdb.Scan(ctx, 0, pat, 500).Iterator()
			for iter.Next(ctx) {
				keys = append(keys, iter.Val())
			}
		}
		if len(keys) > 0 {
			rdb.Del(ctx, keys...)
		}
	})
	return q
}
