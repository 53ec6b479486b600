package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"
	"github.com/rs/zerolog"

	"github.com/etlexec/etlexec/internal/enqueue"
	"github.com/etlexec/etlexec/internal/kinds"
	"github.com/etlexec/etlexec/internal/runstate"
	"github.com/etlexec/etlexec/internal/store"
	"github.com/etlexec/etlexec/internal/worker"
)

func init() {
	commands["pipeline"] = command{
		summary: "N no-op tasks through bare asynq, then N no-op synthetic items through etlexec; print throughput",
		run:     pipeline,
	}
}

// pipelineDatabase is created (dropped first) by this command and by nothing else.
const pipelineDatabase = "etlexec_bench_pipeline"

// redisURLDefault is the local Redis that scripts/services.sh provides.
const redisURLDefault = "redis://127.0.0.1:6379/0"

const (
	pipelineJobID   = "bench_pipeline_noop"
	bareTaskType    = "bench:noop"
	bareEnqueuers   = 16
	runPollInterval = 20 * time.Millisecond
)

type pipelineResult struct {
	bareEnqueue  time.Duration
	bareProcess  time.Duration
	trigger      time.Duration // wall time of Enqueuer.Trigger: expansion, CreateRun, Redis fan-out
	triggerRedis time.Duration // Result.EnqueueTime: the Redis part of it
	etlProcess   time.Duration
	run          store.Run
}

func pipeline(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("bench pipeline", flag.ContinueOnError)
	n := fs.Int("n", 20000, "tasks (baseline) and items (etlexec)")
	concurrency := fs.Int("concurrency", worker.ConcurrencyDefault, "asynq Concurrency of each server / worker")
	servers := fs.Int("servers", 1, "asynq servers (baseline) and workers (etlexec) run in this process")
	timeout := fs.Duration("timeout", 15*time.Minute, "give up on a phase after this long")
	cpuprofile := fs.String("cpuprofile", "", "write a CPU profile of the etlexec processing phase to this file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *n < 1 || *concurrency < 1 || *servers < 1 {
		return errors.New("-n, -concurrency and -servers must be at least 1")
	}
	redisURL := os.Getenv("REDIS_URL")
	if redisURL == "" {
		redisURL = redisURLDefault
	}
	opt, err := asynq.ParseRedisURI(redisURL)
	if err != nil {
		return fmt.Errorf("REDIS_URL: %w", err)
	}
	zerolog.SetGlobalLevel(zerolog.WarnLevel)
	log := zerolog.New(zerolog.ConsoleWriter{Out: os.Stderr, TimeFormat: time.TimeOnly}).
		Level(zerolog.WarnLevel).With().Timestamp().Logger()

	var b [6]byte
	_, _ = rand.Read(b[:])
	suffix := hex.EncodeToString(b[:])
	bareQueue, etlQueue := "bench_bare_"+suffix, "bench_etl_"+suffix
	insp := asynq.NewInspector(opt)
	defer insp.Close()
	defer func() {
		for _, q := range []string{bareQueue, etlQueue} {
			if err := insp.DeleteQueue(q, true); err != nil && !errors.Is(err, asynq.ErrQueueNotFound) {
				log.Warn().Err(err).Str("queue", q).Msg("delete bench queue")
			}
		}
	}()

	fmt.Printf("bench pipeline: n=%d concurrency=%d servers=%d queues %s / %s, database %s\n",
		*n, *concurrency, *servers, bareQueue, etlQueue, pipelineDatabase)
	var res pipelineResult
	client := asynq.NewClient(opt)
	defer client.Close()

	pctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	if err := phase("baseline: enqueue", func() error {
		res.bareEnqueue, err = bareEnqueue(pctx, client, bareQueue, *n)
		return err
	}); err != nil {
		return err
	}
	if err := phase("baseline: process", func() error {
		res.bareProcess, err = bareProcess(pctx, opt, bareQueue, *n, *concurrency, *servers, log)
		return err
	}); err != nil {
		return err
	}

	var u string
	if err := phase("etlexec: recreate+migrate database", func() error {
		u, err = recreateDatabase(ctx, pipelineDatabase)
		return err
	}); err != nil {
		return err
	}
	st, err := store.Open(ctx, u, store.Options{Bounded: true, MaxConns: int32(*concurrency + 8)})
	if err != nil {
		return err
	}
	defer st.Close()
	if _, err := st.UpsertJobs(ctx, []store.UpsertJob{{
		JobID: pipelineJobID, Kind: "synthetic", Description: "bench pipeline: no-op items",
		SupportsParams: true, Strategy: "none", CursorPolicy: "run", Config: json.RawMessage(`{}`),
		OverlapPolicy: "allow", Queue: etlQueue, MaxAttempts: 3, TimeoutMs: 60_000, RetentionMs: 0, Enabled: true,
	}}); err != nil {
		return fmt.Errorf("define job: %w", err)
	}
	enq, err := enqueue.New(enqueue.Config{Store: st, Redis: opt, Logger: log})
	if err != nil {
		return err
	}
	params := make([]json.RawMessage, *n)
	for i := range params {
		params[i] = json.RawMessage(fmt.Sprintf(`{"noop": true, "key": "k%d"}`, i))
	}
	var tr enqueue.Result
	if err := phase("etlexec: trigger", func() error {
		start := time.Now()
		tr, err = enq.Trigger(pctx, enqueue.Request{JobID: pipelineJobID, Params: params})
		res.trigger = time.Since(start)
		res.triggerRedis = tr.EnqueueTime
		if err == nil && (tr.Items != *n || tr.Enqueued != *n) {
			err = fmt.Errorf("trigger made %d items and enqueued %d tasks, want %d", tr.Items, tr.Enqueued, *n)
		}
		return err
	}); err != nil {
		return err
	}
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
	}
	err = phase("etlexec: process", func() error {
		res.etlProcess, res.run, err = etlProcess(pctx, st, u, opt, etlQueue, tr, *concurrency, *servers, log)
		return err
	})
	if *cpuprofile != "" {
		pprof.StopCPUProfile()
	}
	if err != nil {
		return err
	}
	if res.run.Status != string(runstate.StatusSuccess) {
		return fmt.Errorf("run %s ended %s (succeeded %d, failed %d, cancelled %d, skipped %d): %s",
			res.run.RunID, res.run.Status, res.run.ItemsSucceeded, res.run.ItemsFailed, res.run.ItemsCancelled,
			res.run.ItemsSkipped, deref(res.run.ErrorMessage))
	}
	printPipeline(*n, *concurrency, *servers, res)
	return nil
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// bareEnqueue hands n no-op tasks to Redis from bareEnqueuers goroutines sharing client.
func bareEnqueue(ctx context.Context, client *asynq.Client, queue string, n int) (time.Duration, error) {
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, bareEnqueuers)
	start := time.Now()
	for range bareEnqueuers {
		wg.Go(func() {
			for {
				i := next.Add(1)
				if i > int64(n) {
					return
				}
				t := asynq.NewTask(bareTaskType, []byte(fmt.Sprintf(`{"i":%d}`, i)))
				if _, err := client.EnqueueContext(ctx, t, asynq.Queue(queue), asynq.MaxRetry(0)); err != nil {
					errs <- fmt.Errorf("enqueue task %d: %w", i, err)
					return
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(errs)
	return elapsed, <-errs
}

// bareProcess runs servers asynq servers with a no-op handler until n tasks were handled; the
// time runs from the first server's start to the n-th completion.
func bareProcess(ctx context.Context, opt asynq.RedisConnOpt, queue string, n, concurrency, servers int, log zerolog.Logger) (time.Duration, error) {
	var count atomic.Int64
	done := make(chan struct{})
	var once sync.Once
	mux := asynq.NewServeMux()
	mux.HandleFunc(bareTaskType, func(context.Context, *asynq.Task) error {
		if count.Add(1) == int64(n) {
			once.Do(func() { close(done) })
		}
		return nil
	})
	srvs := make([]*asynq.Server, servers)
	for i := range srvs {
		srvs[i] = asynq.NewServer(opt, asynq.Config{
			Concurrency: concurrency, Queues: map[string]int{queue: 1},
			Logger: zerologAsynq{log}, LogLevel: asynq.WarnLevel,
		})
	}
	start := time.Now()
	for _, s := range srvs {
		if err := s.Start(mux); err != nil {
			return 0, fmt.Errorf("start asynq server: %w", err)
		}
	}
	defer func() {
		for _, s := range srvs {
			s.Shutdown()
		}
	}()
	select {
	case <-done:
		return time.Since(start), nil
	case <-ctx.Done():
		return 0, fmt.Errorf("%d of %d tasks handled: %w", count.Load(), n, ctx.Err())
	}
}

// etlProcess runs servers workers, each with its own pool sized for concurrency, from before
// their start until the run is terminal.
func etlProcess(ctx context.Context, st *store.Store, u string, opt asynq.RedisConnOpt, queue string, tr enqueue.Result,
	concurrency, servers int, log zerolog.Logger) (time.Duration, store.Run, error) {
	wctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { stop(); wg.Wait() }()
	reg := kinds.Builtin()
	workers := make([]*worker.Worker, servers)
	for i := range workers {
		wst := st
		if i > 0 {
			var err error
			if wst, err = store.Open(ctx, u, store.Options{Bounded: true, MaxConns: int32(concurrency + 8)}); err != nil {
				return 0, store.Run{}, err
			}
			defer wst.Close()
		}
		w, err := worker.New(worker.Config{
			Store: wst, Redis: opt, Registry: reg, Queues: []string{queue}, Concurrency: concurrency,
			Name: fmt.Sprintf("bench-%d", i), Logger: log,
		})
		if err != nil {
			return 0, store.Run{}, err
		}
		workers[i] = w
	}
	start := time.Now()
	for _, w := range workers {
		wg.Go(func() {
			if err := w.Run(wctx); err != nil {
				log.Error().Err(err).Str("worker", w.ID().String()).Msg("worker stopped")
			}
		})
	}
	tick := time.NewTicker(runPollInterval)
	defer tick.Stop()
	for {
		run, err := st.GetRun(ctx, tr.Run.RunID)
		if err != nil {
			return 0, store.Run{}, err
		}
		if runstate.Status(run.Status).Terminal() {
			return time.Since(start), run, nil
		}
		select {
		case <-ctx.Done():
			return 0, run, fmt.Errorf("run %s still %s (%d succeeded of %d): %w",
				run.RunID, run.Status, run.ItemsSucceeded, run.ItemCount, ctx.Err())
		case <-tick.C:
		}
	}
}

func printPipeline(n, concurrency, servers int, r pipelineResult) {
	bareRate := float64(n) / r.bareProcess.Seconds()
	etlRate := float64(n) / r.etlProcess.Seconds()
	perItem := func(d time.Duration) float64 { return float64(d.Microseconds()) / float64(n) }
	fmt.Println()
	fmt.Printf("machine: GOMAXPROCS=%d NumCPU=%d %s %s/%s\n", runtime.GOMAXPROCS(0), runtime.NumCPU(),
		runtime.Version(), runtime.GOOS, runtime.GOARCH)
	fmt.Printf("n=%d concurrency=%d servers=%d (same process, same Redis)\n\n", n, concurrency, servers)
	fmt.Printf("%-46s %14s %14s\n", "metric", "value", "per item")
	fmt.Printf("%-46s %14s %14s\n", "bare asynq enqueue (16 goroutines, 1 client)", r.bareEnqueue.Round(time.Millisecond), fmt.Sprintf("%.1f µs", perItem(r.bareEnqueue)))
	fmt.Printf("%-46s %14s %14s\n", "bare asynq process (start → N-th done)", r.bareProcess.Round(time.Millisecond), fmt.Sprintf("%.1f µs", perItem(r.bareProcess)))
	fmt.Printf("%-46s %14.0f %14s\n", "bare asynq tasks/s", bareRate, "")
	fmt.Printf("%-46s %14s %14s\n", "etlexec trigger → enqueued (Trigger wall)", r.trigger.Round(time.Millisecond), fmt.Sprintf("%.1f µs", perItem(r.trigger)))
	fmt.Printf("%-46s %14s %14s\n", "  of which Redis fan-out (Result.EnqueueTime)", r.triggerRedis.Round(time.Millisecond), fmt.Sprintf("%.1f µs", perItem(r.triggerRedis)))
	fmt.Printf("%-46s %14s %14s\n", "  of which Postgres + expansion (rest)", (r.trigger - r.triggerRedis).Round(time.Millisecond), fmt.Sprintf("%.1f µs", perItem(r.trigger-r.triggerRedis)))
	fmt.Printf("%-46s %14s %14s\n", "etlexec process (worker start → run terminal)", r.etlProcess.Round(time.Millisecond), fmt.Sprintf("%.1f µs", perItem(r.etlProcess)))
	fmt.Printf("%-46s %14.0f %14s\n", "etlexec items/s", etlRate, "")
	fmt.Printf("%-46s %14.3f %14s\n", "ratio items/s ÷ bare tasks/s", etlRate/bareRate, "")
	fmt.Printf("%-46s %14s %14s\n", "run status", r.run.Status, "")
	fmt.Printf("%-46s %14d %14s\n", "run attempts (items succeeded)", r.run.AttemptCount, fmt.Sprintf("(%d)", r.run.ItemsSucceeded))
}

// zerologAsynq routes the baseline servers' asynq logs into zerolog.
type zerologAsynq struct{ l zerolog.Logger }

func (a zerologAsynq) Debug(args ...any) { a.l.Debug().Msg(fmt.Sprint(args...)) }
func (a zerologAsynq) Info(args ...any)  { a.l.Info().Msg(fmt.Sprint(args...)) }
func (a zerologAsynq) Warn(args ...any)  { a.l.Warn().Msg(fmt.Sprint(args...)) }
func (a zerologAsynq) Error(args ...any) { a.l.Error().Msg(fmt.Sprint(args...)) }
func (a zerologAsynq) Fatal(args ...any) { a.l.Fatal().Msg(fmt.Sprint(args...)) }
