package faults_test

// Issue 10 and Redis as a delivery channel only: a Redis that may evict keys is refused unless
// the operator says otherwise, eviction and a FLUSHALL mid-run cost no item more than one
// success, and a large run survives losing Redis's data.

import (
	"fmt"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/etlexec/etlexec/internal/runstate"
	"github.com/etlexec/etlexec/internal/servertest"
)

const allowEvictionEnv = "ETL_ALLOW_REDIS_EVICTION=true"

func TestFaultRedisEviction(t *testing.T) {
	t.Parallel()

	// An evicting Redis loses tasks silently: both binaries refuse it, naming the setting.
	t.Run("Refused", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, 10*time.Second)
		require.NoError(t, e.redis.ConfigSet("maxmemory-policy", "allkeys-lru"))
		for _, c := range []struct {
			name, bin string
			args      []string
		}{
			{"worker", workerBin, nil},
			{"enqueuer trigger", enqueuerBin, []string{"trigger", jobID, "--param", "key=refused"}},
		} {
			out, err := e.runProc(c.name, c.bin, c.args, 30*time.Second, "ETL_QUEUES="+e.queue, "ETL_HTTP_ADDR=")
			require.Error(t, err, "%s started with maxmemory-policy allkeys-lru:\n%s", c.name, servertest.Tail(out, 20))
			require.Contains(t, out, "maxmemory-policy", "%s's refusal names the setting", c.name)
		}
	})

	// The operator's override (env or flag) lets both start.
	t.Run("Override", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, 10*time.Second)
		require.NoError(t, e.redis.ConfigSet("maxmemory-policy", "allkeys-lru"))
		insp := e.inspector()
		for i, o := range []struct {
			how  string
			args []string
			env  []string
		}{
			{"env", nil, []string{allowEvictionEnv}},
			{"flag", []string{"--allow-redis-eviction"}, nil},
		} {
			w := e.startProc("worker-"+o.how, workerBin, o.args, append([]string{"ETL_QUEUES=" + e.queue, "ETL_HTTP_ADDR="}, o.env...)...)
			// Started means serving: its asynq server has registered in Redis.
			e.waitFor("worker ("+o.how+") to serve or exit", 30*time.Second, func() bool {
				return w.exited() || e.serving(insp, w)
			})
			require.False(t, w.exited(), "worker with the override (%s) exited: %v\n%s", o.how, w.err, servertest.Tail(w.log(), 20))
			w.signal(t, syscall.SIGTERM)
			w.waitExit(t, 30*time.Second)
			require.NoError(t, w.err, "worker (%s) after SIGTERM", o.how)

			args := append([]string{"trigger", jobID, "--param", "key=override" + strconv.Itoa(i)}, o.args...)
			out, err := e.runProc("trigger-"+o.how, enqueuerBin, args, 30*time.Second, o.env...)
			require.NoError(t, err, "enqueuer trigger with the override (%s):\n%s", o.how, servertest.Tail(out, 20))
		}
		require.Equal(t, 2, e.count(`SELECT count(*) FROM dw_etl_runs WHERE job_id = $1`, jobID), "both triggers made a run")
	})

	// Keys evicted mid-run (tasks among them), then room and noeviction restored: the run ends
	// with every item succeeding exactly once.
	t.Run("EvictedMidRun", func(t *testing.T) {
		t.Parallel()
		loadSensitive(t)
		start := time.Now()
		e := newEnv(t, 30*time.Second)
		e.lease = 15 * time.Second // nothing kills a worker here; see TestFaultTenThousandItems
		e.startWorker("w1", allowEvictionEnv)
		e.startWorker("w2", allowEvictionEnv)
		const n = 20000
		runID := e.trigger(noopItems("evict", n), false)
		e.waitFor("1000 items SUCCESS", 60*time.Second, func() bool { return e.itemsWithStatus(runID, "SUCCESS") >= 1000 })

		evicted0, err := e.redis.InfoInt("stats", "evicted_keys")
		require.NoError(t, err)
		used, err := e.redis.InfoInt("memory", "used_memory")
		require.NoError(t, err)
		require.NoError(t, e.redis.ConfigSet("maxmemory-policy", "allkeys-lru"))
		require.NoError(t, e.redis.ConfigSet("maxmemory", strconv.FormatInt(used*6/10, 10)))
		// Filler keys keep the pressure on until a good share of the keys went.
		value := make([]byte, 4096)
		var fillers []any
		var evicted int64
		for i := 0; i < 5000 && evicted < 2000; i++ {
			key := fmt.Sprintf("filler:%d", i)
			_, err := e.redis.Do("SET", key, value)
			require.NoError(t, err)
			fillers = append(fillers, key)
			if i%50 == 0 {
				now, err := e.redis.InfoInt("stats", "evicted_keys")
				require.NoError(t, err)
				evicted = now - evicted0
			}
		}
		mid := e.itemsWithStatus(runID, "SUCCESS")
		t.Logf("evicted %d keys (maxmemory %d of %d bytes used, %d filler keys) with %d/%d items SUCCESS",
			evicted, used*6/10, used, len(fillers), mid, n)
		require.Greater(t, evicted, int64(0), "nothing was evicted: the fault did not happen")
		require.Less(t, mid, n, "the eviction must happen mid-run")
		_, err = e.redis.Do(append([]any{"DEL"}, fillers...)...)
		require.NoError(t, err)
		require.NoError(t, e.redis.ConfigSet("maxmemory", "0"))
		require.NoError(t, e.redis.ConfigSet("maxmemory-policy", "noeviction"))

		run := e.waitRun(runID, 180*time.Second)
		e.logAttempts(runID)
		e.checkInvariants(runID, runstate.StatusSuccess) // one SUCCESS attempt per item
		t.Logf("run %s with %d attempts for %d items; elapsed %s", run.Status, run.AttemptCount, n, time.Since(start).Round(time.Millisecond))
	})
}

// TestFaultFiftyThousandItemsFlush is issue 10's acceptance: a 50,000-item run loses all of
// Redis's data mid-way and still ends SUCCESS with exactly one attempt per item.
func TestFaultFiftyThousandItemsFlush(t *testing.T) {
	t.Parallel()
	loadSensitive(t)
	start := time.Now()
	e := newEnv(t, 30*time.Second)
	e.lease = 15 * time.Second // nothing kills a worker here; see TestFaultTenThousandItems
	e.startWorker("w1")
	e.startWorker("w2")
	const n = 50000
	trig := time.Now()
	runID := e.trigger(noopItems("fifty", n), false)
	e.waitFor("10000 items SUCCESS", 120*time.Second, func() bool { return e.itemsWithStatus(runID, "SUCCESS") >= 10000 })
	mid := e.itemsWithStatus(runID, "SUCCESS")
	e.flushRedis()
	require.Less(t, mid, n*4/5, "the flush must happen mid-run")
	t.Logf("FLUSHALL with %d/%d items SUCCESS, %s after the trigger", mid, n, time.Since(trig).Round(time.Millisecond))
	run := e.waitRun(runID, 300*time.Second)
	took := time.Since(trig)
	e.logAttempts(runID)
	e.checkInvariants(runID, runstate.StatusSuccess)
	t.Logf("50k items with a FLUSHALL: trigger→terminal %s (%.0f items/s), %d attempts; elapsed %s", took.Round(time.Millisecond),
		float64(n)/took.Seconds(), run.AttemptCount, time.Since(start).Round(time.Millisecond))
	require.EqualValues(t, n, run.AttemptCount, "exactly one attempt per item")
}
