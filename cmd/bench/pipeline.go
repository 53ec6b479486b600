package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hibiken/asynq"
	"github.com/rs/zerolog"

	"github.com/etlexec/etlexec/internal/dbtest"
	"github.com/etlexec/etlexec/internal/enqueue"
	"github.com/etlexec/etlexec/internal/runstate"
	"github.com/etlexec/etlexec/internal/servertest"
	"github.com/etlexec/etlexec/internal/store"
	"github.com/etlexec/etlexec/internal/worker"
)

func init() {
	commands["pipeline"] = command{
		summary: "bare asynq vs etlexec worker processes on private Postgres/Redis: rates and per-item costs",
		run:     pipeline,
	}
}

const (
	pipelineJobID = "bench_pipeline_noop"
	bareTaskType  = "bench:noop"
	bareEnqueuers = 16
	// pipelineTemplateDB is migrated once; each etlexec phase runs in a fresh copy of it.
	pipelineTemplateDB = "etlexec"
	// harnessRole is the role of the benchmark's own observing sessions, whose statements
	// pg_stat_statements then tells apart from etlexec's.
	harnessRole = "bench_harness"
	// pollInterval is how often a phase's end is checked.
	pollInterval = 10 * time.Millisecond
	// readyTimeout bounds the wait for processes to register with asynq, and for their exit.
	readyTimeout = time.Minute
)

// pipelineConfig is the command's flags.
type pipelineConfig struct {
	n           int
	procs       []int
	concurrency int
	workerBin   string
	logLevel    string
	timeout     time.Duration
}

// phaseResult is one measured phase: bare asynq or etlexec with some number of processes.
type phaseResult struct {
	procs   int
	system  string // "bare" or "etlexec"
	process time.Duration
	trigger time.Duration // etlexec: Trigger's wall time; bare: the enqueue
	// Redis bytes per pending task: used_memory after enqueue, before processing, minus before.
	redisPerTask float64
	// consumerCPU is the consuming processes' CPU (asynq servers / etlexec workers) up to the
	// end of the processing; redisCPU is the Redis server's over the processing.
	consumerCPU, redisCPU time.Duration
	// Postgres figures over trigger + processing (etlexec only).
	pg *pgCosts
}

func pipeline(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("bench pipeline", flag.ContinueOnError)
	var cfg pipelineConfig
	var procs string
	fs.IntVar(&cfg.n, "n", 20000, "tasks (bare asynq) and items (etlexec) per phase")
	fs.StringVar(&procs, "procs", "1,2,4", "process counts to measure, comma-separated")
	fs.IntVar(&cfg.concurrency, "concurrency", worker.ConcurrencyDefault, "asynq Concurrency of each process (bare) / ETL_CONCURRENCY (etlexec)")
	fs.StringVar(&cfg.workerBin, "worker", "", "worker binary (default: built from ./cmd/worker into a temp dir)")
	fs.StringVar(&cfg.logLevel, "log-level", "info", "ETL_LOG_LEVEL of the workers (info is the default deployment: two run-log lines per item)")
	fs.DurationVar(&cfg.timeout, "timeout", 10*time.Minute, "give up on a phase after this long")
	if err := fs.Parse(args); err != nil {
		return err
	}
	for _, s := range strings.Split(procs, ",") {
		k, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || k < 1 {
			return fmt.Errorf("-procs: want positive integers, got %q", procs)
		}
		cfg.procs = append(cfg.procs, k)
	}
	if cfg.n < 1 || cfg.concurrency < 1 {
		return errors.New("-n and -concurrency must be at least 1")
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	if cfg.workerBin == "" {
		dir, err := os.MkdirTemp("", "etlexec-bench-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		if err := phase("build worker", func() error {
			cfg.workerBin, err = buildWorker(ctx, dir)
			return err
		}); err != nil {
			return err
		}
	}

	var pg *servertest.PostgresServer
	defer servertest.RemoveTemplates()
	if err := phase("private postgres (fsync on)", func() error {
		pg, err = servertest.StartPostgres(servertest.PostgresOptions{
			MaxConnections: 100 + workerSessions(cfg.concurrency)*slices.Max(cfg.procs),
			StatStatements: true, Fsync: true, Template: "bench-pipeline", Prepare: preparePipeline,
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
	b := &bench{cfg: cfg, self: self, pg: pg, redis: rs, redisOpt: asynq.RedisClientOpt{Addr: rs.Addr()}}
	fmt.Printf("bench pipeline: n=%d concurrency=%d procs=%v log level %s; private postgres :%d, redis %s\n",
		cfg.n, cfg.concurrency, cfg.procs, cfg.logLevel, pg.Port(), rs.Addr())

	var results []phaseResult
	for _, k := range cfg.procs {
		pctx, cancel := context.WithTimeout(ctx, cfg.timeout)
		var bare, etl phaseResult
		err := phase(fmt.Sprintf("bare asynq, %d process(es)", k), func() error {
			bare, err = b.bare(pctx, k)
			return err
		})
		if err == nil {
			err = phase(fmt.Sprintf("etlexec, %d process(es)", k), func() error {
				etl, err = b.etlexec(pctx, k)
				return err
			})
		}
		cancel()
		if err != nil {
			return err
		}
		results = append(results, bare, etl)
	}
	printPipeline(cfg, results)
	return nil
}

// workerSessions bounds the Postgres sessions of one worker process running concurrency items
// (its pool, shared by bookkeeping and target transactions, its liveness pool and its log sink,
// with room to spare).
func workerSessions(concurrency int) int { return 2*concurrency + 16 }

// preparePipeline creates and migrates the template database and the harness role.
func preparePipeline(ctx context.Context, s *servertest.PostgresServer) error {
	if err := s.CreateDatabase(ctx, pipelineTemplateDB); err != nil {
		return err
	}
	if err := dbtest.Migrate(ctx, s.URL(pipelineTemplateDB)); err != nil {
		return err
	}
	if err := execSQL(ctx, s.URL("postgres"), `CREATE ROLE `+harnessRole+` LOGIN SUPERUSER`); err != nil {
		return err
	}
	// In the template, so that every phase's copy can read it.
	return execSQL(ctx, s.URL(pipelineTemplateDB), `CREATE EXTENSION pg_stat_statements`)
}

// buildWorker builds ./cmd/worker of this module into dir.
func buildWorker(ctx context.Context, dir string) (string, error) {
	return buildCommand(ctx, dir, "worker")
}

// buildCommand builds ./cmd/name of this module into dir.
func buildCommand(ctx context.Context, dir, name string) (string, error) {
	gomod, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	build := exec.CommandContext(ctx, "go", "build", "-o", dir+"/", "./cmd/"+name)
	build.Dir = filepath.Dir(strings.TrimSpace(string(gomod)))
	if out, err := build.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/%s: %w\n%s", name, err, out)
	}
	return filepath.Join(dir, name), nil
}

// bench holds what the phases share.
type bench struct {
	cfg      pipelineConfig
	self     string // this binary, for bare-server processes
	pg       *servertest.PostgresServer
	redis    *servertest.RedisServer
	redisOpt asynq.RedisClientOpt
}

// pausedQueue empties Redis and pauses queue, so that tasks wait until the consumers are up.
func (b *bench) pausedQueue(queue string) (*asynq.Inspector, error) {
	if err := b.redis.FlushAll(); err != nil {
		return nil, err
	}
	insp := asynq.NewInspector(b.redisOpt)
	if err := insp.PauseQueue(queue); err != nil {
		insp.Close()
		return nil, err
	}
	return insp, nil
}

// usedMemory is Redis's used_memory.
func (b *bench) usedMemory() (int64, error) { return b.redis.InfoInt("memory", "used_memory") }

// bare measures bare asynq: n no-op tasks enqueued while the queue is paused, then k server
// processes with a no-op handler, timed from the unpause until the queue is empty.
func (b *bench) bare(ctx context.Context, k int) (phaseResult, error) {
	res := phaseResult{procs: k, system: "bare"}
	const queue = "bare"
	insp, err := b.pausedQueue(queue)
	if err != nil {
		return res, err
	}
	defer insp.Close()
	mem0, err := b.usedMemory()
	if err != nil {
		return res, err
	}
	client := asynq.NewClient(b.redisOpt)
	began := time.Now()
	err = bareEnqueue(ctx, client, queue, b.cfg.n)
	res.trigger = time.Since(began)
	// Closed before measuring, as the etlexec trigger's: client buffers are not the tasks' cost.
	client.Close()
	if err != nil {
		return res, err
	}
	mem1, err := b.usedMemory()
	if err != nil {
		return res, err
	}
	res.redisPerTask = float64(mem1-mem0) / float64(b.cfg.n)
	procs, start, err := release(ctx, insp, queue, k, func(i int) *exec.Cmd {
		cmd := exec.Command(b.self, "bare-server", "-queue", queue, "-concurrency", strconv.Itoa(b.cfg.concurrency))
		cmd.Env = append(os.Environ(), "REDIS_URL="+b.redis.URL())
		return cmd
	})
	if err != nil {
		return res, err
	}
	defer procs.stop()
	redis0, err := b.redis.CPUTime()
	if err != nil {
		return res, err
	}
	if err := servertest.Poll(b.cfg.timeout, pollInterval, func() (bool, error) {
		if err := ctx.Err(); err != nil {
			return false, err
		}
		left, err := b.queueLeft(queue)
		return err == nil && left == 0, procs.failed()
	}); err != nil {
		return res, fmt.Errorf("bare asynq, %d processes: %w", k, err)
	}
	res.process = time.Since(start)
	if err := b.cpuAfter(&res, procs, redis0); err != nil {
		return res, err
	}
	return res, procs.stop()
}

// queueLeft counts the queue's pending and active tasks (asynq's own lists; Inspector's
// GetQueueInfo samples memory usage, far too costly to poll).
func (b *bench) queueLeft(queue string) (int64, error) {
	var total int64
	for _, key := range []string{"pending", "active"} {
		v, err := b.redis.Do("LLEN", "asynq:{"+queue+"}:"+key)
		if err != nil {
			return 0, err
		}
		n, _ := v.(int64)
		total += n
	}
	return total, nil
}

// bareEnqueue hands n no-op tasks to Redis from bareEnqueuers goroutines sharing client.
func bareEnqueue(ctx context.Context, client *asynq.Client, queue string, n int) error {
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, bareEnqueuers)
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
	close(errs)
	return <-errs
}

// etlexec measures k worker processes on a fresh copy of the migrated database: a run of n
// no-op synthetic items is triggered while its queue is paused, the workers start and register,
// and the run is timed from the unpause until it is terminal. Postgres costs cover the trigger
// and the processing.
func (b *bench) etlexec(ctx context.Context, k int) (phaseResult, error) {
	res := phaseResult{procs: k, system: "etlexec"}
	db := fmt.Sprintf("etlexec_p%d", k)
	queue := "etl_p" + strconv.Itoa(k)
	if err := execSQL(ctx, b.pg.URL("postgres"), "DROP DATABASE IF EXISTS "+db,
		"CREATE DATABASE "+db+" TEMPLATE "+pipelineTemplateDB); err != nil {
		return res, err
	}
	url := b.pg.URL(db)
	if err := defineJob(ctx, url, queue); err != nil {
		return res, err
	}
	obs, err := newObserver(ctx, b.pg, db)
	if err != nil {
		return res, err
	}
	defer obs.close()
	if err := obs.waitNoSessions(ctx); err != nil { // defineJob's statistics are in
		return res, err
	}
	insp, err := b.pausedQueue(queue)
	if err != nil {
		return res, err
	}
	defer insp.Close()
	before, err := obs.snapshot(ctx)
	if err != nil {
		return res, err
	}
	mem0, err := b.usedMemory()
	if err != nil {
		return res, err
	}
	runID, took, err := b.trigger(ctx, url)
	if err != nil {
		return res, err
	}
	res.trigger = took
	mem1, err := b.usedMemory()
	if err != nil {
		return res, err
	}
	res.redisPerTask = float64(mem1-mem0) / float64(b.cfg.n)

	procs, start, err := release(ctx, insp, queue, k, func(i int) *exec.Cmd {
		cmd := exec.Command(b.cfg.workerBin)
		cmd.Env = append(os.Environ(), "DATABASE_URL="+url, "REDIS_URL="+b.redis.URL(), "ETL_QUEUES="+queue,
			"ETL_CONCURRENCY="+strconv.Itoa(b.cfg.concurrency), "ETL_LOG_LEVEL="+b.cfg.logLevel, "ETL_HTTP_ADDR=",
			"ETL_WORKER_ID=bench-"+strconv.Itoa(i))
		return cmd
	})
	if err != nil {
		return res, err
	}
	defer procs.stop()
	redis0, err := b.redis.CPUTime()
	if err != nil {
		return res, err
	}
	var status string
	if err := servertest.Poll(b.cfg.timeout, pollInterval, func() (bool, error) {
		if err := ctx.Err(); err != nil {
			return false, err
		}
		var done bool
		status, done, err = obs.runStatus(ctx, runID)
		return err == nil && done, procs.failed()
	}); err != nil {
		return res, fmt.Errorf("etlexec, %d processes: run %s: %w", k, status, err)
	}
	res.process = time.Since(start)
	if err := b.cpuAfter(&res, procs, redis0); err != nil {
		return res, err
	}
	if runstate.Status(status) != runstate.StatusSuccess {
		return res, fmt.Errorf("etlexec, %d processes: run ended %s", k, status)
	}
	after, err := obs.snapshot(ctx)
	if err != nil {
		return res, err
	}
	// Table statistics reach the shared counters when a backend exits (or idles): stop the
	// workers and wait for their sessions to end before reading them.
	if err := procs.stop(); err != nil {
		return res, err
	}
	if err := obs.waitNoSessions(ctx); err != nil {
		return res, err
	}
	tables, err := obs.tables(ctx)
	if err != nil {
		return res, err
	}
	res.pg = costs(before, after, tables, b.cfg.n)
	return res, nil
}

// cpuAfter reads the consumers' CPU so far and Redis's since redis0, at the end of a processing.
func (b *bench) cpuAfter(res *phaseResult, p *procs, redis0 time.Duration) error {
	r, err := b.redis.CPUTime()
	if err != nil {
		return err
	}
	res.redisCPU = r - redis0
	for _, c := range p.cmds {
		d, err := servertest.ProcessCPU(c.Process.Pid)
		if err != nil {
			return fmt.Errorf("CPU of process %d: %w", c.Process.Pid, err)
		}
		res.consumerCPU += d
	}
	return nil
}

// defineJob creates the benchmark's job on its own short-lived connection (its statistics are
// flushed when that connection ends, before the measurement starts).
func defineJob(ctx context.Context, url, queue string) error {
	st, err := store.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer st.Close()
	_, err = st.UpsertJobs(ctx, []store.JobSpec{{
		JobID: pipelineJobID, Kind: "synthetic", Description: "bench pipeline: no-op items",
		SupportsParams: true, Strategy: "none", CursorPolicy: "run", Config: json.RawMessage(`{}`),
		OverlapPolicy: "allow", Queue: queue, MaxAttempts: 3, TimeoutMs: 60_000, RetentionMs: 0, Enabled: true,
	}})
	if err != nil {
		return fmt.Errorf("define job: %w", err)
	}
	return nil
}

// trigger starts the run through the enqueuer package, as `enqueuer trigger` does, on a pool
// closed afterwards so that its statistics are flushed.
func (b *bench) trigger(ctx context.Context, url string) (runID string, took time.Duration, err error) {
	st, err := store.Open(ctx, url, store.Options{Bounded: true, MaxConns: int32(b.cfg.concurrency + 8)})
	if err != nil {
		return "", 0, err
	}
	defer st.Close()
	enq, err := enqueue.New(enqueue.Config{Store: st, Redis: b.redisOpt, Logger: zerolog.Nop()})
	if err != nil {
		return "", 0, err
	}
	defer enq.Close()
	params := make([]json.RawMessage, b.cfg.n)
	for i := range params {
		params[i] = json.RawMessage(fmt.Sprintf(`{"noop": true, "key": "k%d"}`, i))
	}
	start := time.Now()
	tr, err := enq.Trigger(ctx, enqueue.Request{JobID: pipelineJobID, Params: params})
	took = time.Since(start)
	if err != nil {
		return "", 0, err
	}
	if tr.Items != b.cfg.n || tr.Enqueued != b.cfg.n {
		return "", 0, fmt.Errorf("trigger made %d items and enqueued %d tasks, want %d", tr.Items, tr.Enqueued, b.cfg.n)
	}
	return tr.Run.RunID.String(), took, nil
}

// procs are the phase's child processes, their output kept for errors.
type procs struct {
	cmds   []*exec.Cmd
	outs   []*strings.Builder
	exited []chan struct{}
	once   sync.Once
	err    error
}

// syncBuilder is a strings.Builder safe for the exec package's copying goroutine.
type syncBuilder struct {
	mu sync.Mutex
	b  *strings.Builder
}

func (s *syncBuilder) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.b.Len() > 64<<10 {
		return len(p), nil // enough to explain a failure
	}
	return s.b.Write(p)
}

func startProcs(k int, mk func(i int) *exec.Cmd) (*procs, error) {
	p := &procs{}
	for i := range k {
		cmd := mk(i)
		out := &strings.Builder{}
		w := &syncBuilder{b: out}
		cmd.Stdout, cmd.Stderr = w, w
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			return nil, errors.Join(err, p.stop())
		}
		exited := make(chan struct{})
		go func() { _ = cmd.Wait(); close(exited) }()
		p.cmds, p.outs, p.exited = append(p.cmds, cmd), append(p.outs, out), append(p.exited, exited)
	}
	return p, nil
}

// failed returns an error when a process has exited before being told to.
func (p *procs) failed() error {
	for i, ch := range p.exited {
		select {
		case <-ch:
			return fmt.Errorf("process %s exited early (%v):\n%s", filepath.Base(p.cmds[i].Path), p.cmds[i].ProcessState,
				servertest.Tail(p.outs[i].String(), 20))
		default:
		}
	}
	return nil
}

// stop sends SIGTERM to every process and waits for them (SIGKILL after readyTimeout).
func (p *procs) stop() error {
	p.once.Do(func() {
		for _, c := range p.cmds {
			_ = c.Process.Signal(syscall.SIGTERM)
		}
		for i, ch := range p.exited {
			select {
			case <-ch:
			case <-time.After(readyTimeout):
				_ = p.cmds[i].Process.Kill()
				<-ch
				p.err = errors.Join(p.err, fmt.Errorf("process %d did not stop within %s of SIGTERM", p.cmds[i].Process.Pid, readyTimeout))
			}
		}
	})
	return p.err
}

// release starts k processes consuming the paused queue, waits until each has registered its
// asynq server, and unpauses the queue: the returned time is the start of the processing.
func release(ctx context.Context, insp *asynq.Inspector, queue string, k int, mk func(i int) *exec.Cmd) (*procs, time.Time, error) {
	p, err := startProcs(k, mk)
	if err != nil {
		return nil, time.Time{}, err
	}
	err = servertest.Poll(readyTimeout, pollInterval, func() (bool, error) {
		if err := ctx.Err(); err != nil {
			return false, err
		}
		if err := p.failed(); err != nil {
			return false, err
		}
		servers, err := insp.Servers()
		return err == nil && len(servers) >= k, nil
	})
	if err == nil {
		err = insp.UnpauseQueue(queue)
	}
	if err != nil {
		return nil, time.Time{}, errors.Join(err, p.stop())
	}
	return p, time.Now(), nil
}

func printPipeline(cfg pipelineConfig, rs []phaseResult) {
	fmt.Println()
	fmt.Printf("machine: NumCPU=%d %s %s/%s; Postgres, Redis, the workers and this command share it\n",
		runtime.NumCPU(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
	fmt.Printf("n=%d per phase, concurrency %d per process, worker log level %s\n\n", cfg.n, cfg.concurrency, cfg.logLevel)
	fmt.Printf("%5s  %-8s %9s %7s %10s %9s %9s %9s %11s %11s %10s %10s %10s %10s\n", "procs", "system", "items/s", "ratio",
		"enqueue", "stmts/it", "nested/it", "WAL B/it", "idx ent/it", "(partial ≤)", "PG CPU µs", "proc CPU µs", "Redis CPU", "Redis B/t")
	bareRate := map[int]float64{}
	for _, r := range rs {
		rate := float64(cfg.n) / r.process.Seconds()
		enq := fmt.Sprintf("%.1f µs", float64(r.trigger.Microseconds())/float64(cfg.n))
		perItem := func(d time.Duration) float64 { return float64(d.Microseconds()) / float64(cfg.n) }
		if r.system == "bare" {
			bareRate[r.procs] = rate
			fmt.Printf("%5d  %-8s %9.0f %7s %10s %9s %9s %9s %11s %11s %10s %10.0f %10.0f %10.0f\n", r.procs, r.system, rate, "1",
				enq, "-", "-", "-", "-", "-", "-", perItem(r.consumerCPU), perItem(r.redisCPU), r.redisPerTask)
			continue
		}
		c := r.pg
		fmt.Printf("%5d  %-8s %9.0f %7.3f %10s %9.2f %9.2f %9.0f %11.1f %11.1f %10.0f %10.0f %10.0f %10.0f\n", r.procs, r.system, rate,
			rate/bareRate[r.procs], enq, c.statements, c.nested, c.walBytes, c.indexEntries, c.partialEntries, c.cpuMicros,
			perItem(r.consumerCPU), perItem(r.redisCPU), r.redisPerTask)
	}
	fmt.Println()
	fmt.Println("items/s: processing only (unpause → N-th task done / run terminal); ratio: etlexec ÷ bare at the same")
	fmt.Println("process count; enqueue: per item, bare EnqueueContext ×16 goroutines / etlexec Trigger; the rest per")
	fmt.Println("item over trigger + processing; proc CPU: the consuming processes' (asynq servers / etlexec workers),")
	fmt.Println("Redis CPU: the server's over the processing, both µs per item; see docs/benchmarks.md.")
	for _, r := range rs {
		if r.pg == nil {
			continue
		}
		fmt.Printf("\netlexec, %d process(es): index entries by table (inserts + non-HOT updates) × indexes\n", r.procs)
		fmt.Printf("  %-34s %8s %8s %8s %6s %8s %10s\n", "table", "ins/it", "upd/it", "hot/it", "idx", "partial", "entries/it")
		for _, t := range r.pg.tables {
			fmt.Printf("  %-34s %8.2f %8.2f %8.2f %6d %8d %10.2f\n", t.name, t.ins, t.upd, t.hot, t.indexes, t.partial, t.entries)
		}
		fmt.Printf("  top statements (calls, planning µs and execution µs per item; nested = run inside another, e.g. foreign key checks):\n")
		for _, s := range r.pg.top {
			nested := ""
			if !s.toplevel {
				nested = "nested "
			}
			fmt.Printf("  %8.3f %7.1f %7.1f  %s%s\n", s.perItem, s.planMicros, s.execMicros, nested, s.query)
		}
	}
}
