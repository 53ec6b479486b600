package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/google/uuid"
	"github.com/hibiken/asynq"
	"github.com/rs/zerolog"

	"github.com/etlexec/etlexec/internal/reconcile"
	"github.com/etlexec/etlexec/internal/runstate"
	"github.com/etlexec/etlexec/internal/servertest"
	"github.com/etlexec/etlexec/internal/store"
	"github.com/etlexec/etlexec/internal/worker"
)

func init() {
	commands["scale"] = command{
		summary: "one run of N items end to end on private Postgres/Redis: trigger, fan-out, RSS, Redis bytes, WAL, items/s, finalise, reconciler pass, runs show",
		run:     scale,
	}
}

const (
	scaleQueue = "etl_scale"
	// scaleBareMax caps the bare asynq enqueue baseline: its rate is what matters, not its size.
	scaleBareMax = 200_000
	// scaleShowCalls is how many times the finished run's summary is read for its p95.
	scaleShowCalls = 200
)

type scaleConfig struct {
	n, workers, concurrency int
	timeout                 time.Duration
}

// scaleResult is what the scale run prints.
type scaleResult struct {
	trigger, bareEnqueue           time.Duration
	fanout                         time.Duration // the trigger's enqueue phase, as it reports it
	bareTasks                      int
	enqueuerRSS, workerRSS         int64 // peak resident set, bytes (largest worker)
	redisPeak, redisPerTask        float64
	reconcile                      time.Duration
	reconcileReport                reconcile.Report
	process                        time.Duration
	walPerItem                     float64
	finalise                       time.Duration
	showP50, showP95, showMax      time.Duration
	status                         runstate.Status
	attempts                       int64
	pgCPUPerItem, workerCPUPerItem float64
}

func scale(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("bench scale", flag.ContinueOnError)
	var cfg scaleConfig
	fs.IntVar(&cfg.n, "n", 1_000_000, "items of the run")
	fs.IntVar(&cfg.workers, "workers", 2, "worker processes")
	fs.IntVar(&cfg.concurrency, "concurrency", worker.ConcurrencyDefault, "ETL_CONCURRENCY of each worker")
	fs.DurationVar(&cfg.timeout, "timeout", 30*time.Minute, "give up after this long")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if cfg.n < 1 || cfg.workers < 1 || cfg.concurrency < 1 {
		return errors.New("-n, -workers and -concurrency must be at least 1")
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.timeout)
	defer cancel()
	dir, err := os.MkdirTemp("", "etlexec-bench-scale-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	var workerBin, enqueuerBin string
	if err := phase("build worker and enqueuer", func() error {
		if workerBin, err = buildCommand(ctx, dir, "worker"); err != nil {
			return err
		}
		enqueuerBin, err = buildCommand(ctx, dir, "enqueuer")
		return err
	}); err != nil {
		return err
	}
	var pg *servertest.PostgresServer
	defer servertest.RemoveTemplates()
	if err := phase("private postgres (fsync on)", func() error {
		pg, err = servertest.StartPostgres(servertest.PostgresOptions{
			MaxConnections: 100 + workerSessions(cfg.concurrency)*cfg.workers, Fsync: true,
			Template: "bench-pipeline", Prepare: preparePipeline,
		})
		return err
	}); err != nil {
		return err
	}
	defer pg.Close()
	rs, err := servertest.StartRedis(servertest.RedisOptions{})
	if err != nil {
		return err
	}
	defer rs.Close()
	b := &bench{pg: pg, redis: rs, redisOpt: asynq.RedisClientOpt{Addr: rs.Addr()}}
	fmt.Printf("bench scale: n=%d, %d workers × concurrency %d; private postgres :%d, redis %s\n",
		cfg.n, cfg.workers, cfg.concurrency, pg.Port(), rs.Addr())
	res, err := b.scaleRun(ctx, cfg, dir, workerBin, enqueuerBin)
	if err != nil {
		return err
	}
	printScale(cfg, res)
	return nil
}

func (b *bench) scaleRun(ctx context.Context, cfg scaleConfig, dir, workerBin, enqueuerBin string) (scaleResult, error) {
	var res scaleResult
	url := b.pg.URL(pipelineTemplateDB)
	if err := defineJob(ctx, url, scaleQueue); err != nil {
		return res, err
	}
	// Baseline: bare asynq's 16-goroutine enqueue on the same Redis.
	if err := phase("bare asynq enqueue (baseline)", func() error {
		res.bareTasks = min(cfg.n, scaleBareMax)
		client := asynq.NewClient(b.redisOpt)
		defer client.Close()
		began := time.Now()
		err := bareEnqueue(ctx, client, "bare", res.bareTasks)
		res.bareEnqueue = time.Since(began)
		return err
	}); err != nil {
		return res, err
	}
	if err := b.redis.FlushAll(); err != nil {
		return res, err
	}
	params := filepath.Join(dir, "params.jsonl")
	if err := phase("write the params file", func() error { return writeParams(params, cfg.n) }); err != nil {
		return res, err
	}
	st, err := store.Open(ctx, url, store.Options{Bounded: true})
	if err != nil {
		return res, err
	}
	defer st.Close()
	lsn0, err := currentLSN(ctx, st)
	if err != nil {
		return res, err
	}
	cpu0, err := b.pg.CPUTime()
	if err != nil {
		return res, err
	}
	mem0, err := b.usedMemory()
	if err != nil {
		return res, err
	}
	// Workers are not running yet: every task waits in Redis, every item pending in Postgres.
	var runID uuid.UUID
	if err := phase(fmt.Sprintf("trigger %d items (enqueuer process)", cfg.n), func() error {
		began := time.Now()
		var tr triggered
		tr, err = b.triggerProcess(ctx, enqueuerBin, url, params)
		res.trigger, res.fanout, res.enqueuerRSS, runID = time.Since(began), tr.enqueue, tr.rss, tr.runID
		return err
	}); err != nil {
		return res, err
	}
	mem1, err := b.usedMemory()
	if err != nil {
		return res, err
	}
	res.redisPerTask = float64(mem1-mem0) / float64(cfg.n)
	if err := phase("one reconciler pass at the peak", func() error {
		rec, err := reconcile.New(reconcile.Config{Store: st, Redis: b.redisOpt, Interval: time.Minute, Lease: time.Minute,
			Name: "bench", Logger: zerolog.Nop()})
		if err != nil {
			return err
		}
		defer rec.Close()
		began := time.Now()
		res.reconcileReport, err = rec.Once(ctx)
		res.reconcile = time.Since(began)
		return err
	}); err != nil {
		return res, err
	}
	procs, err := startProcs(cfg.workers, func(i int) *exec.Cmd {
		cmd := exec.Command(workerBin)
		cmd.Env = append(os.Environ(), "DATABASE_URL="+url, "REDIS_URL="+b.redis.URL(), "ETL_QUEUES="+scaleQueue,
			"ETL_CONCURRENCY="+strconv.Itoa(cfg.concurrency), "ETL_LOG_LEVEL=warn", "ETL_HTTP_ADDR=",
			"ETL_WORKER_ID=scale-"+strconv.Itoa(i))
		return cmd
	})
	if err != nil {
		return res, err
	}
	defer procs.stop()
	began := time.Now()
	if err := phase(fmt.Sprintf("%d workers run the items", cfg.workers), func() error {
		return servertest.Poll(cfg.timeout, 100*time.Millisecond, func() (bool, error) {
			if err := ctx.Err(); err != nil {
				return false, err
			}
			run, err := st.GetRun(ctx, runID)
			if err != nil {
				return false, err
			}
			res.status, res.attempts = run.Status, int64(run.AttemptCount)
			return run.EndedAt != nil, procs.failed()
		})
	}); err != nil {
		return res, err
	}
	res.process = time.Since(began)
	for _, c := range procs.cmds {
		d, err := servertest.ProcessCPU(c.Process.Pid)
		if err == nil {
			res.workerCPUPerItem += float64(d.Microseconds()) / float64(cfg.n)
		}
	}
	if err := procs.stop(); err != nil {
		return res, err
	}
	for _, c := range procs.cmds {
		if ru, ok := c.ProcessState.SysUsage().(*syscall.Rusage); ok {
			res.workerRSS = max(res.workerRSS, ru.Maxrss*1024)
		}
	}
	cpu1, err := b.pg.CPUTime()
	if err != nil {
		return res, err
	}
	res.pgCPUPerItem = float64((cpu1 - cpu0).Microseconds()) / float64(cfg.n)
	lsn1, err := currentLSN(ctx, st)
	if err != nil {
		return res, err
	}
	res.walPerItem = float64(lsnDiff(lsn1, lsn0)) / float64(cfg.n)
	peak, err := b.redis.InfoInt("memory", "used_memory_peak")
	if err != nil {
		return res, err
	}
	res.redisPeak = float64(peak)
	// Finalise latency: from the last end the counters saw to the run's end.
	var secs float64
	if err := st.Pool().QueryRow(ctx, `SELECT extract(epoch FROM r.ended_at - max(p.last_ended_at))::float8
		FROM dw_etl_runs r JOIN dw_etl_run_progress p USING (run_id) WHERE r.run_id = $1 GROUP BY r.ended_at`,
		runID).Scan(&secs); err != nil {
		return res, fmt.Errorf("finalise latency: %w", err)
	}
	res.finalise = time.Duration(secs * float64(time.Second))
	if err := phase("runs show on the finished run", func() error {
		var took []time.Duration
		for range scaleShowCalls {
			t0 := time.Now()
			if _, err := st.HistoryRun(ctx, runID); err != nil {
				return err
			}
			took = append(took, time.Since(t0))
		}
		slices.Sort(took)
		res.showP50, res.showP95, res.showMax = took[len(took)/2], took[len(took)*95/100], took[len(took)-1]
		return nil
	}); err != nil {
		return res, err
	}
	return res, nil
}

// writeParams writes n param sets as JSON lines.
func writeParams(path string, n int) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	for i := range n {
		fmt.Fprintf(w, `{"noop": true, "key": "k%d"}`+"\n", i)
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// triggered is what one `enqueuer trigger` reported and cost.
type triggered struct {
	runID   uuid.UUID
	enqueue time.Duration // its fan-out phase (tasks to Redis), from its --json output
	rss     int64         // its peak resident set, bytes
}

// triggerProcess runs `enqueuer trigger` with the params file, as an operator would.
func (b *bench) triggerProcess(ctx context.Context, bin, url, params string) (triggered, error) {
	cmd := exec.CommandContext(ctx, bin, "trigger", pipelineJobID, "--params-file", params, "--json")
	cmd.Env = append(os.Environ(), "DATABASE_URL="+url, "REDIS_URL="+b.redis.URL(), "ETL_LOG_LEVEL=warn")
	var out, errOut strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		return triggered{}, fmt.Errorf("enqueuer trigger: %w\n%s", err, servertest.Tail(errOut.String(), 20))
	}
	var run struct {
		RunID     uuid.UUID `json:"run_id"`
		EnqueueMs int64     `json:"enqueue_ms"`
	}
	if err := json.Unmarshal([]byte(out.String()), &run); err != nil || run.RunID == uuid.Nil {
		return triggered{}, fmt.Errorf("enqueuer trigger printed no run: %q", servertest.Tail(out.String(), 5))
	}
	tr := triggered{runID: run.RunID, enqueue: time.Duration(run.EnqueueMs) * time.Millisecond}
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		tr.rss = ru.Maxrss * 1024
	}
	return tr, nil
}

func currentLSN(ctx context.Context, st *store.Store) (string, error) {
	var lsn string
	err := st.Pool().QueryRow(ctx, `SELECT pg_current_wal_lsn()::text`).Scan(&lsn)
	return lsn, err
}

func printScale(cfg scaleConfig, r scaleResult) {
	mib := func(b float64) string { return fmt.Sprintf("%.0f MiB", b/(1<<20)) }
	bareRate := float64(r.bareTasks) / r.bareEnqueue.Seconds()
	rate := float64(cfg.n) / r.trigger.Seconds()
	fmt.Println()
	fmt.Printf("%-44s %s\n", "figure", "value")
	row := func(k, v string) { fmt.Printf("%-44s %s\n", k, v) }
	row("items", strconv.Itoa(cfg.n))
	row("trigger (params file → COPY → Redis)", fmt.Sprintf("%s, %.0f items/s", r.trigger.Round(time.Millisecond), rate))
	row("bare asynq enqueue ×16 goroutines", fmt.Sprintf("%.0f tasks/s (%d tasks)", bareRate, r.bareTasks))
	fanRate := float64(cfg.n) / r.fanout.Seconds()
	row("fan-out phase (tasks → Redis)", fmt.Sprintf("%s, %.0f tasks/s", r.fanout.Round(time.Millisecond), fanRate))
	row("fan-out ÷ bare enqueue", fmt.Sprintf("%.2f", fanRate/bareRate))
	row("whole trigger ÷ bare enqueue", fmt.Sprintf("%.2f", rate/bareRate))
	row("enqueuer peak RSS", mib(float64(r.enqueuerRSS)))
	row("Redis bytes per pending task", fmt.Sprintf("%.0f", r.redisPerTask))
	row("Redis peak memory", mib(r.redisPeak))
	row("reconciler pass at the peak", fmt.Sprintf("%s (%d tasks enqueued, %d replaced, %d queues repaired)",
		r.reconcile.Round(time.Millisecond), r.reconcileReport.TasksEnqueued, r.reconcileReport.TasksReplaced, r.reconcileReport.QueuesRepaired))
	row(fmt.Sprintf("items/s, %d workers × %d", cfg.workers, cfg.concurrency), fmt.Sprintf("%.0f (%s)", float64(cfg.n)/r.process.Seconds(), r.process.Round(time.Second)))
	row("run status, attempts", fmt.Sprintf("%s, %d", r.status, r.attempts))
	row("worker peak RSS (largest)", mib(float64(r.workerRSS)))
	row("WAL per item (trigger + run)", fmt.Sprintf("%.0f B", r.walPerItem))
	row("Postgres CPU per item", fmt.Sprintf("%.0f µs", r.pgCPUPerItem))
	row("worker CPU per item (all workers)", fmt.Sprintf("%.0f µs", r.workerCPUPerItem))
	row("finalise (last end → run ended)", r.finalise.Round(time.Millisecond).String())
	row(fmt.Sprintf("runs show p50 / p95 / max (%d calls)", scaleShowCalls),
		fmt.Sprintf("%s / %s / %s", r.showP50.Round(10*time.Microsecond), r.showP95.Round(10*time.Microsecond), r.showMax.Round(10*time.Microsecond)))
}
