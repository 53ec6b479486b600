package serve_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/hibiken/asynq"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/etlexec/etlexec/internal/dbtest"
	"github.com/etlexec/etlexec/internal/enqueue"
	"github.com/etlexec/etlexec/internal/redistest"
	"github.com/etlexec/etlexec/internal/serve"
	"github.com/etlexec/etlexec/internal/store"
)

const testToken = "s3cret-token-for-tests"

// testBundle is one server on its own database and queue.
type testBundle struct {
	st    *store.Store
	queue string
	srv   *serve.Server
	ts    *httptest.Server
}

func setup(t *testing.T, mod func(*serve.Config)) *testBundle {
	t.Helper()
	b := &testBundle{st: dbtest.Store(t), queue: redistest.Queue(t)}
	cfg := serve.Config{Store: b.st, Redis: redistest.ConnOpt(t), Token: testToken, Logger: zerolog.Nop()}
	if mod != nil {
		mod(&cfg)
	}
	srv, err := serve.New(cfg)
	if err != nil {
		t.Fatalf("serve.New: %v", err)
	}
	b.srv = srv
	b.ts = httptest.NewServer(srv.Handler())
	t.Cleanup(func() {
		b.ts.Close()
		_ = srv.Close()
	})
	return b
}

func bearer(tok string) func(*http.Request) {
	return func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+tok) }
}

func basic(user, pass string) func(*http.Request) {
	return func(r *http.Request) { r.SetBasicAuth(user, pass) }
}

type response struct {
	status int
	header http.Header
	body   string
}

func (b *testBundle) do(t *testing.T, method, path string, body url.Values, mods ...func(*http.Request)) response {
	t.Helper()
	var rd io.Reader
	if body != nil {
		rd = strings.NewReader(body.Encode())
	}
	req, err := http.NewRequestWithContext(t.Context(), method, b.ts.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for _, m := range mods {
		m(req)
	}
	res, err := b.ts.Client().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{status: res.StatusCode, header: res.Header, body: string(raw)}
}

func (b *testBundle) get(t *testing.T, path string, mods ...func(*http.Request)) response {
	t.Helper()
	return b.do(t, http.MethodGet, path, nil, mods...)
}

func wantStatus(t *testing.T, r response, want int) {
	t.Helper()
	if r.status != want {
		body := r.body
		if len(body) > 600 {
			body = body[:600] + "…"
		}
		t.Fatalf("status %d, want %d; body:\n%s", r.status, want, body)
	}
}

func wantContains(t *testing.T, body string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(body, w) {
			t.Errorf("page lacks %q", w)
		}
	}
}

func wantNotContains(t *testing.T, body string, nots ...string) {
	t.Helper()
	for _, n := range nots {
		if strings.Contains(body, n) {
			t.Errorf("page has %q, want it absent", n)
		}
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		cfg     serve.Config
		wantErr []string // substrings; nil means valid
	}{
		{name: "TokenOnly", cfg: serve.Config{Token: "t"}},
		{name: "BasicOnly", cfg: serve.Config{BasicUser: "ops", BasicPassword: "pw"}},
		{name: "NoCredentials", cfg: serve.Config{}, wantErr: []string{"ETL_SERVE_TOKEN", "ETL_SERVE_USER", "ETL_SERVE_PASSWORD"}},
		{name: "UserWithoutPassword", cfg: serve.Config{BasicUser: "ops"}, wantErr: []string{"set both or neither"}},
		{name: "InsecureDefaultAddr", cfg: serve.Config{Insecure: true}, wantErr: []string{"loopback", `":8080"`}},
		{name: "InsecureAllInterfaces", cfg: serve.Config{Insecure: true, Addr: "0.0.0.0:8080"}, wantErr: []string{"loopback"}},
		{name: "InsecurePublicHost", cfg: serve.Config{Insecure: true, Addr: "example.com:8080"}, wantErr: []string{"loopback"}},
		{name: "InsecureWithTokenStillLoopbackOnly", cfg: serve.Config{Insecure: true, Token: "t", Addr: ":9000"}, wantErr: []string{"loopback"}},
		{name: "InsecureIPv4Loopback", cfg: serve.Config{Insecure: true, Addr: "127.0.0.1:8080"}},
		{name: "InsecureIPv6Loopback", cfg: serve.Config{Insecure: true, Addr: "[::1]:8080"}},
		{name: "InsecureLocalhost", cfg: serve.Config{Insecure: true, Addr: "localhost:0"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := tc.cfg
			cfg.WithDefaults()
			err := cfg.Validate()
			if tc.wantErr == nil {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Validate accepted the config")
			}
			for _, w := range tc.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
	t.Run("NewRefusesNoCredentials", func(t *testing.T) {
		t.Parallel()
		_, err := serve.New(serve.Config{Store: &store.Store{}, Redis: asynq.RedisClientOpt{Addr: "127.0.0.1:1"}})
		if !errors.Is(err, serve.ErrNoCredentials) {
			t.Fatalf("New: %v, want ErrNoCredentials", err)
		}
	})
}

func TestAuth(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *serve.Config) { c.BasicUser, c.BasicPassword = "ops", "ops-password" })

	t.Run("NoCredentials", func(t *testing.T) {
		r := b.get(t, "/")
		wantStatus(t, r, http.StatusUnauthorized)
		if got := r.header.Get("WWW-Authenticate"); !strings.HasPrefix(got, `Basic realm="etlexec"`) {
			t.Errorf("WWW-Authenticate %q, want a Basic realm=\"etlexec\" challenge", got)
		}
	})
	for _, tc := range []struct {
		name string
		path string
		mod  func(*http.Request)
		want int
	}{
		{"BadBearer", "/", bearer("wrong"), http.StatusUnauthorized},
		{"EmptyBearer", "/", bearer(""), http.StatusUnauthorized},
		{"TokenPrefixIsNotToken", "/", bearer(testToken[:5]), http.StatusUnauthorized},
		{"GoodBearer", "/", bearer(testToken), http.StatusOK},
		{"BasicTokenAsPasswordAnyUser", "/", basic("alice", testToken), http.StatusOK},
		{"BasicTokenEmptyUser", "/", basic("", testToken), http.StatusOK},
		{"BasicUserPassword", "/", basic("ops", "ops-password"), http.StatusOK},
		{"BasicWrongPassword", "/", basic("ops", "nope"), http.StatusUnauthorized},
		{"BasicPasswordOtherUser", "/", basic("mallory", "ops-password"), http.StatusUnauthorized},
		{"QueryTokenRefusedByDefault", "/?token=" + testToken, nil, http.StatusUnauthorized},
		{"AsynqmonNeedsAuth", "/asynqmon/", nil, http.StatusUnauthorized},
		{"UnknownPathNeedsAuth", "/nope", nil, http.StatusUnauthorized},
		{"UnknownPathWithAuth", "/nope", bearer(testToken), http.StatusNotFound},
		{"HealthzOpen", "/healthz", nil, http.StatusOK},
		{"ReadyzOpen", "/readyz", nil, http.StatusOK},
		{"StaticOpen", "/static/console.css", nil, http.StatusOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var mods []func(*http.Request)
			if tc.mod != nil {
				mods = append(mods, tc.mod)
			}
			wantStatus(t, b.get(t, tc.path, mods...), tc.want)
		})
	}
	t.Run("PrincipalShown", func(t *testing.T) {
		wantContains(t, b.get(t, "/", basic("ops", "ops-password")).body, `<span class="who" title="authenticated as">ops</span>`)
	})
}

func TestQueryTokenWhenAllowed(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *serve.Config) { c.AllowQueryToken = true })
	wantStatus(t, b.get(t, "/?token="+testToken), http.StatusOK)
	wantStatus(t, b.get(t, "/?token=wrong"), http.StatusUnauthorized)
}

func TestInsecureLoopbackServesWithoutAuth(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *serve.Config) { c.Token, c.Insecure, c.Addr = "", true, "127.0.0.1:0" })
	r := b.get(t, "/")
	wantStatus(t, r, http.StatusOK)
	wantContains(t, r.body, "anonymous")
}

func TestAsynqmon(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	client := asynq.NewClient(redistest.ConnOpt(t))
	defer client.Close()
	if _, err := client.Enqueue(asynq.NewTask("serve:test", nil), asynq.Queue(b.queue)); err != nil {
		t.Fatal(err)
	}

	r := b.get(t, "/asynqmon/", bearer(testToken))
	wantStatus(t, r, http.StatusOK)
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "text/html") {
		t.Errorf("Content-Type %q, want text/html", ct)
	}
	wantContains(t, r.body, "/asynqmon")

	// Other packages' tests create and delete queues on the shared Redis; asynqmon answers 500
	// when a queue vanishes between listing and reading it, so retry that race for a while.
	var queues struct {
		Queues []struct {
			Queue string `json:"queue"`
			Size  int    `json:"size"`
		} `json:"queues"`
	}
	require.Eventually(t, func() bool {
		r = b.get(t, "/asynqmon/api/queues", bearer(testToken))
		return r.status == http.StatusOK
	}, 10*time.Second, 100*time.Millisecond, "asynqmon /api/queues never answered 200")
	wantStatus(t, r, http.StatusOK)
	if err := json.Unmarshal([]byte(r.body), &queues); err != nil {
		t.Fatalf("asynqmon /api/queues: %v\n%s", err, r.body)
	}
	found := false
	for _, q := range queues.Queues {
		if q.Queue == b.queue {
			found = q.Size == 1
		}
	}
	if !found {
		t.Errorf("asynqmon /api/queues lacks queue %s with 1 task: %s", b.queue, r.body)
	}
	wantStatus(t, b.get(t, "/asynqmon/api/queues"), http.StatusUnauthorized)
}

// seeded is a job with two finished runs, written with plain SQL.
type seeded struct {
	jobID      string
	runOK      uuid.UUID
	runPartial uuid.UUID
	attempts   []uuid.UUID // of runPartial: item1 try1, item2 try1, item3 try1, item3 try2
}

func seed(t *testing.T, st *store.Store, queue string) seeded {
	t.Helper()
	ctx := t.Context()
	s := seeded{jobID: "orders_sync", runOK: uuid.Must(uuid.NewV7()), runPartial: uuid.Must(uuid.NewV7())}
	for range 4 {
		s.attempts = append(s.attempts, uuid.Must(uuid.NewV7()))
	}
	a := s.attempts
	stmts := []struct {
		sql  string
		args []any
	}{
		{`INSERT INTO dw_etl_jobs (job_id, kind, description, queue, supports_params, schedule)
		  VALUES ($1, 'synthetic', 'Nightly orders sync', $2, true, '0 3 * * *')`, []any{s.jobID, queue}},
		{`INSERT INTO dw_etl_runs (run_id, job_id, status, trigger, created_at, started_at, ended_at, duration_ms,
		    item_count, items_succeeded, attempt_count, records_read, records_written)
		  VALUES ($1, $2, 'SUCCESS', 'schedule', now() - interval '2 hours', now() - interval '2 hours', now() - interval '2 hours' + interval '5 seconds',
		    5000, 2, 2, 2, 1500, 1200)`, []any{s.runOK, s.jobID}},
		{`INSERT INTO dw_etl_runs (run_id, job_id, status, error_category, error_message, dry_run, trigger, created_at, started_at,
		    enqueued_at, ended_at, duration_ms, item_count, items_succeeded, items_failed, items_cancelled, attempt_count,
		    records_read, records_written, page_count, metrics)
		  VALUES ($1, $2, 'PARTIAL_SUCCESS', 'API', '1 of 4 items failed', true, 'manual', now() - interval '1 hour', now() - interval '1 hour',
		    now() - interval '1 hour', now() - interval '1 hour' + interval '90 seconds', 90000, 4, 2, 1, 1, 4,
		    880, 777, 9, '{"rows_skipped": 7, "http_calls": 12}')`, []any{s.runPartial, s.jobID}},
		{`UPDATE dw_etl_runs SET cursor_note = 'run PARTIAL_SUCCESS: cursors held (cursor policy run)' WHERE run_id = $1`, []any{s.runPartial}},
		{`INSERT INTO dw_etl_run_progress (run_id, shard, attempts_started, attempts_ended, retries, backoff_ms,
		    max_item_attempt, succeeded, failed, cancelled, failed_api) VALUES ($1, 2, 4, 4, 1, 10000, 2, 2, 1, 1, 1)`, []any{s.runPartial}},
		{`INSERT INTO dw_etl_run_items (run_id, item_no, params, param_hash, status, error_category, error_message,
		    attempts, records_written, cursor_note) VALUES
		  ($1, 1, '{"region":"eu"}', 'h1', 'SUCCESS', 'NONE', NULL, 1, 400, 'held: run not successful'),
		  ($1, 2, '{"region":"us"}', 'h2', 'SUCCESS', 'NONE', NULL, 1, 377, 'held: run not successful'),
		  ($1, 3, '{"region":"apac"}', 'h3', 'FAILED', 'API', 'upstream 503', 2, 0, NULL),
		  ($1, 4, '{"region":"latam"}', 'h4', 'CANCELLED', 'NONE', NULL, 0, 0, NULL)`, []any{s.runPartial}},
		{`INSERT INTO dw_etl_run_attempts (attempt_id, run_id, item_no, item_attempt, status, error_category, error_message,
		    backoff_ms, started_at, ended_at, duration_ms, records_written, worker_id)
		  SELECT v.id, $1, v.item, v.try, v.status, v.cat, v.msg, v.backoff,
		    now() - interval '1 hour' + v.s * interval '1 second', now() - interval '1 hour' + v.e * interval '1 second',
		    (v.e - v.s) * 1000, v.w, 'worker-a'
		  FROM (VALUES
		    ($2::uuid, 1, 1, 'SUCCESS', 'NONE', NULL, NULL::bigint, 0, 20, 400),
		    ($3::uuid, 2, 1, 'SUCCESS', 'NONE', NULL, NULL, 5, 40, 377),
		    ($4::uuid, 3, 1, 'FAILED', 'API', 'upstream 503', 10000, 5, 30, 0),
		    ($5::uuid, 3, 2, 'FAILED', 'API', 'upstream 503 again', NULL, 45, 80, 0)
		  ) AS v(id, item, try, status, cat, msg, backoff, s, e, w)
		  ORDER BY v.s, v.item`, []any{s.runPartial, a[0], a[1], a[2], a[3]}},
		{`INSERT INTO dw_etl_run_logs (ts, run_id, attempt_id, job_id, item_no, level, message, fields) VALUES
		  (now() - interval '3 minutes', $1, $2, $5, 1, 'info', 'page loaded', '{"page": 1, "rows": 200}'),
		  (now() - interval '2 minutes', $1, $3, $5, 3, 'error', 'upstream returned 503', '{"status": 503}'),
		  (now() - interval '1 minute', $1, $4, $5, 3, 'warn', 'retrying after backoff', '{"backoff_ms": 10000}'),
		  (now(), $1, NULL, $5, NULL, 'info', 'run finalised', '{}')`, []any{s.runPartial, a[0], a[2], a[3], s.jobID}},
	}
	for _, stmt := range stmts {
		if _, err := st.Pool().Exec(ctx, stmt.sql, stmt.args...); err != nil {
			t.Fatalf("seed: %v\n%s", err, stmt.sql)
		}
	}
	return s
}

func TestConsole(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	s := seed(t, b.st, b.queue)
	auth := bearer(testToken)

	t.Run("Jobs", func(t *testing.T) {
		r := b.get(t, "/", auth)
		wantStatus(t, r, http.StatusOK)
		wantContains(t, r.body, `href="/jobs/orders_sync"`, "Nightly orders sync", "0 3 * * *",
			`class="badge st-partial-success" href="/runs/`+s.runPartial.String()+`"`)
		if csp := r.header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") {
			t.Errorf("Content-Security-Policy %q", csp)
		}
		wantNotContains(t, r.body, "http://", "https://") // everything from the binary, no CDN
		wantNotContains(t, r.body, `badge paused`)
		if _, err := b.st.PauseJob(t.Context(), s.jobID, "t", ""); err != nil {
			t.Fatal(err)
		}
		defer func() { _, _ = b.st.ResumeJob(context.Background(), s.jobID) }()
		wantContains(t, b.get(t, "/", auth).body, `<span class="badge paused">paused</span>`)
	})

	t.Run("Job", func(t *testing.T) {
		r := b.get(t, "/jobs/"+s.jobID, auth)
		wantStatus(t, r, http.StatusOK)
		wantContains(t, r.body, s.runOK.String(), s.runPartial.String(), ">SUCCESS<", ">PARTIAL_SUCCESS<",
			"1,200", "777", "5.0s", "1m30s", "dry run", "Duration per run", "Records written per run")
		// One bar per run in each chart, oldest first, each linking to its run.
		bars := regexp.MustCompile(`<a href="/runs/([0-9a-f-]+)"><rect class="st-`).FindAllStringSubmatch(r.body, -1)
		if len(bars) != 4 || bars[0][1] != s.runOK.String() || bars[1][1] != s.runPartial.String() {
			t.Errorf("chart bars %v, want [runOK runPartial] twice", bars)
		}
		wantNotContains(t, r.body, "Older runs")
	})

	t.Run("JobStatusFilter", func(t *testing.T) {
		r := b.get(t, "/jobs/"+s.jobID+"?status=SUCCESS", auth)
		wantStatus(t, r, http.StatusOK)
		wantContains(t, r.body, "<code>"+s.runOK.String())
		wantNotContains(t, r.body, ">PARTIAL_SUCCESS</span>", "<code>"+s.runPartial.String())
		wantStatus(t, b.get(t, "/jobs/"+s.jobID+"?status=BOGUS", auth), http.StatusBadRequest)
		wantStatus(t, b.get(t, "/jobs/"+s.jobID+"?after=garbage", auth), http.StatusBadRequest)
	})

	t.Run("UnknownJobAndRun", func(t *testing.T) {
		wantStatus(t, b.get(t, "/jobs/nope", auth), http.StatusNotFound)
		wantStatus(t, b.get(t, "/runs/"+uuid.NewString(), auth), http.StatusNotFound)
		wantStatus(t, b.get(t, "/runs/not-a-uuid", auth), http.StatusNotFound)
	})

	t.Run("Run", func(t *testing.T) {
		r := b.get(t, "/runs/"+s.runPartial.String(), auth)
		wantStatus(t, r, http.StatusOK)
		wantContains(t, r.body,
			`id="run-status">PARTIAL_SUCCESS<`, "1 of 4 items failed", `class="badge dry"`,
			`<dd id="count-items">4</dd>`, `<dd id="count-succeeded">2</dd>`, `<dd id="count-failed">1</dd>`,
			`<dd id="count-attempts">4</dd>`, `<dd id="count-written">777</dd>`,
			// the run's cursor decision, metrics
			"run PARTIAL_SUCCESS: cursors held (cursor policy run)", "rows_skipped", "http_calls",
			// asynqmon link
			`href="/asynqmon/queues/`+b.queue+`"`,
			// logs, newest first
			"run finalised", "retrying after backoff", "upstream returned 503", "page loaded",
			// rerun is offered on a finished run, cancel is not
			`id="rerun-form"`,
		)
		wantNotContains(t, r.body, `id="cancel-button"`)
		if i, j := strings.Index(r.body, "run finalised"), strings.Index(r.body, "page loaded"); i > j {
			t.Error("logs are not newest first")
		}
		// Status grid: one square per item, in item order, with its tooltip.
		squares := regexp.MustCompile(`<a class="sq (st-[a-z-]+)" href="\?item=(\d+)#logs" title="([^"]*)"`).FindAllStringSubmatch(r.body, -1)
		wantSquares := [][2]string{{"st-success", "1"}, {"st-success", "2"}, {"st-failed", "3"}, {"st-cancelled", "4"}}
		if len(squares) != len(wantSquares) {
			t.Fatalf("grid has %d squares, want 4", len(squares))
		}
		for i, w := range wantSquares {
			if squares[i][1] != w[0] || squares[i][2] != w[1] {
				t.Errorf("square %d = %s item %s, want %s item %s", i, squares[i][1], squares[i][2], w[0], w[1])
			}
		}
		wantContains(t, squares[2][3], "item 3 · FAILED · API", "region", "apac", "attempts 2", "upstream 503")
		// Timeline: one bar per attempt in attempt_no order, coloured by status.
		bars := regexp.MustCompile(`<a href="/runs/[0-9a-f-]+\?attempt=([0-9a-f-]+)#logs">(?:<text[^>]*>[^<]*</text>)?<rect class="(st-[a-z-]+)"`).FindAllStringSubmatch(r.body, -1)
		if len(bars) != 4 {
			t.Fatalf("timeline has %d bars, want 4", len(bars))
		}
		for i, want := range []string{"st-success", "st-success", "st-failed", "st-failed"} {
			if bars[i][1] != s.attempts[i].String() || bars[i][2] != want {
				t.Errorf("timeline bar %d = %s %s, want %s %s", i, bars[i][1], bars[i][2], s.attempts[i], want)
			}
		}
		wantContains(t, r.body, "upstream 503 again") // the attempt errors table
		wantNotContains(t, r.body, `id="alert-deliveries"`)
		if _, err := b.st.Pool().Exec(t.Context(), `INSERT INTO dw_etl_alert_deliveries (delivery_id, run_id, job_id, event, occurred_at,
			destination, status, attempts, last_status_code, payload) VALUES (gen_random_uuid(), $1, $2, 'run_ended', now(), 'slack',
			'DELIVERED', 2, 200, '{}')`, s.runPartial, s.jobID); err != nil {
			t.Fatal(err)
		}
		wantContains(t, b.get(t, "/runs/"+s.runPartial.String(), auth).body, `id="alert-deliveries"`,
			"<td>run_ended</td><td>slack</td><td>DELIVERED</td><td class=\"num\">2</td><td>200</td>")
	})

	t.Run("LogFilters", func(t *testing.T) {
		path := "/runs/" + s.runPartial.String()
		for _, tc := range []struct {
			query     url.Values
			want, not []string
		}{
			{url.Values{"level": {"error"}}, []string{"upstream returned 503"}, []string{"page loaded", "run finalised", "retrying"}},
			{url.Values{"item": {"1"}}, []string{"page loaded"}, []string{"upstream returned 503", "run finalised"}},
			{url.Values{"attempt": {s.attempts[3].String()}}, []string{"retrying after backoff"}, []string{"page loaded", "upstream returned 503"}},
			{url.Values{"text": {"BACKOFF"}}, []string{"retrying after backoff"}, []string{"page loaded"}},
			{url.Values{"fields": {`{"status":503}`}}, []string{"upstream returned 503"}, []string{"page loaded", "retrying"}},
			{url.Values{"level": {"debug"}}, []string{"No log lines match these filters"}, []string{"page loaded"}},
		} {
			r := b.get(t, path+"?"+tc.query.Encode(), auth)
			wantStatus(t, r, http.StatusOK)
			logs := r.body[strings.Index(r.body, `id="logs"`):]
			wantContains(t, logs, tc.want...)
			wantNotContains(t, logs, tc.not...)
		}
		for _, q := range []string{"fields=notjson", "level=loud", "item=x", "attempt=x"} {
			r := b.get(t, path+"?"+q, auth)
			wantStatus(t, r, http.StatusBadRequest)
			wantContains(t, r.body, `id="log-error"`, `id="run-status"`) // the page still renders
		}
	})

	t.Run("APIBehindAuth", func(t *testing.T) {
		wantStatus(t, b.get(t, "/api/v1/runs/"+s.runPartial.String()), http.StatusUnauthorized)
		r := b.get(t, "/api/v1/runs/"+s.runPartial.String(), auth)
		wantStatus(t, r, http.StatusOK)
		if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
			t.Errorf("Content-Type %q", ct)
		}
		wantContains(t, r.body, s.runPartial.String(), `"PARTIAL_SUCCESS"`)
		wantStatus(t, b.get(t, "/api/v1/jobs", basic("x", testToken)), http.StatusOK)
	})

	t.Run("JobPagination", func(t *testing.T) {
		// 60 more runs: the first page shows 50 and a keyset link to the other 12.
		if _, err := b.st.Pool().Exec(t.Context(), `INSERT INTO dw_etl_runs (run_id, job_id, status, started_at, ended_at, duration_ms)
			SELECT gen_random_uuid(), $1, 'SUCCESS', now() - interval '3 hours' - g * interval '1 minute',
			  now() - interval '3 hours' - g * interval '1 minute' + interval '1 second', 1000
			FROM generate_series(1, 60) g`, s.jobID); err != nil {
			t.Fatal(err)
		}
		r := b.get(t, "/jobs/"+s.jobID, auth)
		wantStatus(t, r, http.StatusOK)
		next := regexp.MustCompile(`<a href="(/jobs/orders_sync\?after=[^"]+)" rel="next">`).FindStringSubmatch(r.body)
		if next == nil {
			t.Fatal("no Older runs link on a full page")
		}
		if n := strings.Count(r.body, `<td class="nowrap"><a href="/runs/`); n != 50 {
			t.Errorf("first page has %d runs, want 50", n)
		}
		r = b.get(t, strings.ReplaceAll(next[1], "&amp;", "&"), auth)
		wantStatus(t, r, http.StatusOK)
		if n := strings.Count(r.body, `<td class="nowrap"><a href="/runs/`); n != 12 {
			t.Errorf("second page has %d runs, want 12", n)
		}
		wantNotContains(t, r.body, `rel="next"`)
		wantContains(t, r.body, "« Newest")
	})
}

func TestReadOnly(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *serve.Config) { c.ReadOnly = true })
	s := seed(t, b.st, b.queue)
	auth := bearer(testToken)

	r := b.get(t, "/runs/"+s.runPartial.String(), auth)
	wantStatus(t, r, http.StatusOK)
	wantNotContains(t, r.body, `id="rerun-form"`, `id="cancel-button"`, `action="/runs/`+s.runPartial.String()+`/rerun"`)
	wantContains(t, r.body, "read-only")

	wantStatus(t, b.do(t, http.MethodPost, "/runs/"+s.runPartial.String()+"/cancel", url.Values{}, auth), http.StatusForbidden)
	wantStatus(t, b.do(t, http.MethodPost, "/runs/"+s.runPartial.String()+"/rerun?preview=1&status=FAILED", url.Values{}, auth), http.StatusForbidden)
	// The API's writes are refused too; its reads still answer.
	wantStatus(t, b.do(t, http.MethodPost, "/api/v1/runs/"+s.runPartial.String()+"/cancel", url.Values{}, auth), http.StatusForbidden)
	wantStatus(t, b.do(t, http.MethodPost, "/api/v1/jobs/"+s.jobID+"/trigger", url.Values{}, auth), http.StatusForbidden)
	wantStatus(t, b.do(t, http.MethodPost, "/api/v1/jobs/"+s.jobID+"/pause", url.Values{}, auth), http.StatusForbidden)
	wantStatus(t, b.do(t, http.MethodPost, "/jobs/"+s.jobID+"/pause", url.Values{}, auth), http.StatusForbidden)
	wantStatus(t, b.get(t, "/api/v1/runs/"+s.runPartial.String(), auth), http.StatusOK)
	wantNotContains(t, b.get(t, "/jobs/"+s.jobID, auth).body, `id="trigger-form"`, `id="pause-button"`)
	// asynqmon's own API refuses writes too.
	wantStatus(t, b.do(t, http.MethodPost, "/asynqmon/api/queues/"+b.queue+":pause", nil, auth), http.StatusMethodNotAllowed)

	var status string
	if err := b.st.Pool().QueryRow(t.Context(), `SELECT status FROM dw_etl_runs WHERE run_id = $1`, s.runPartial).Scan(&status); err != nil {
		t.Fatal(err)
	}
	if status != "PARTIAL_SUCCESS" {
		t.Errorf("run status %s after refused actions", status)
	}
}

// TestCancelAndRerun drives the console's actions end to end: a run triggered by the enqueuer
// (tasks in Redis), cancelled, previewed, rerun — through internal/ops, as the CLI does.
func TestCancelAndRerun(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	ctx := t.Context()
	if _, err := b.st.Pool().Exec(ctx, `INSERT INTO dw_etl_jobs (job_id, kind, queue, supports_params) VALUES ('regions', 'synthetic', $1, true)`, b.queue); err != nil {
		t.Fatal(err)
	}
	enq, err := enqueue.New(enqueue.Config{Store: b.st, Redis: redistest.ConnOpt(t), Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	res, err := enq.Trigger(ctx, enqueue.Request{JobID: "regions", Params: []json.RawMessage{
		json.RawMessage(`{"r":"eu"}`), json.RawMessage(`{"r":"us"}`), json.RawMessage(`{"r":"apac"}`)}})
	if err != nil {
		t.Fatal(err)
	}
	runID := res.Run.RunID.String()
	insp := asynq.NewInspector(redistest.ConnOpt(t))
	defer insp.Close()
	pending := func() int {
		t.Helper()
		qi, err := insp.GetQueueInfo(b.queue)
		if err != nil {
			t.Fatal(err)
		}
		return qi.Pending
	}
	if n := pending(); n != 3 {
		t.Fatalf("%d pending tasks after trigger, want 3", n)
	}
	auth := bearer(testToken)

	r := b.get(t, "/runs/"+runID, auth)
	wantStatus(t, r, http.StatusOK)
	wantContains(t, r.body, `id="cancel-button"`)
	wantNotContains(t, r.body, `id="rerun-form"`)

	t.Run("CrossOriginPostRefused", func(t *testing.T) {
		r := b.do(t, http.MethodPost, "/runs/"+runID+"/cancel", url.Values{"reason": {"csrf"}}, auth, func(r *http.Request) {
			r.Header.Set("Origin", "https://evil.example")
			r.Header.Set("Sec-Fetch-Site", "cross-site")
		})
		wantStatus(t, r, http.StatusForbidden)
		if n := pending(); n != 3 {
			t.Fatalf("%d pending tasks after a refused cancel, want 3", n)
		}
	})

	t.Run("RerunOfActiveRunConflicts", func(t *testing.T) {
		wantStatus(t, b.do(t, http.MethodPost, "/runs/"+runID+"/rerun?preview=1", url.Values{}, auth), http.StatusConflict)
	})

	t.Run("Cancel", func(t *testing.T) {
		r := b.do(t, http.MethodPost, "/runs/"+runID+"/cancel", url.Values{"reason": {"wrong params"}}, auth, func(r *http.Request) {
			r.Header.Set("Origin", b.ts.URL) // a same-origin browser form post
			r.Header.Set("Sec-Fetch-Site", "same-origin")
		})
		wantStatus(t, r, http.StatusOK)
		wantContains(t, r.body, "Cancel requested", "3 pending items cancelled (3 tasks removed from Redis)", ">CANCELLED<")
		var status, by, reason string
		if err := b.st.Pool().QueryRow(ctx, `SELECT status, cancelled_by, cancel_reason FROM dw_etl_runs WHERE run_id = $1`, res.Run.RunID).
			Scan(&status, &by, &reason); err != nil {
			t.Fatal(err)
		}
		if status != "CANCELLED" || by != "console:token" || reason != "wrong params" {
			t.Errorf("run %s by %q reason %q, want CANCELLED by console:token, reason \"wrong params\"", status, by, reason)
		}
		if n := pending(); n != 0 {
			t.Errorf("%d pending tasks after cancel, want 0", n)
		}
		wantStatus(t, b.do(t, http.MethodPost, "/runs/"+runID+"/cancel", url.Values{}, auth), http.StatusConflict)
	})

	t.Run("RerunPreview", func(t *testing.T) {
		r := b.do(t, http.MethodPost, "/runs/"+runID+"/rerun?preview=1&status=FAILED,CANCELLED", url.Values{}, auth)
		wantStatus(t, r, http.StatusOK)
		wantContains(t, r.body, "Rerun preview", "would re-run 3 items (FAILED,CANCELLED)", `id="rerun-confirm"`, `{&#34;r&#34;:&#34;apac&#34;}`)
		if n := pending(); n != 0 {
			t.Errorf("%d pending tasks after a preview, want 0", n)
		}
		// JSON for scripts: the CLI's --json shape.
		r = b.do(t, http.MethodPost, "/runs/"+runID+"/rerun?preview=1&status=FAILED", url.Values{}, auth,
			func(r *http.Request) { r.Header.Set("Accept", "application/json") })
		wantStatus(t, r, http.StatusConflict) // no FAILED items
		wantStatus(t, b.do(t, http.MethodPost, "/runs/"+runID+"/rerun?status=BOGUS", url.Values{}, auth), http.StatusBadRequest)
		wantStatus(t, b.do(t, http.MethodPost, "/runs/"+runID+"/rerun?preview=maybe", url.Values{}, auth), http.StatusBadRequest)
	})

	t.Run("Rerun", func(t *testing.T) {
		// The confirm form posts its fields in the body; the query string may carry them too.
		r := b.do(t, http.MethodPost, "/runs/"+runID+"/rerun", url.Values{"status": {"CANCELLED"}, "preview": {"0"}}, auth,
			func(r *http.Request) { r.Header.Set("Accept", "application/json") })
		wantStatus(t, r, http.StatusOK)
		var got struct {
			Preview  bool              `json:"preview"`
			Items    []json.RawMessage `json:"items"`
			Enqueued int               `json:"enqueued"`
		}
		if err := json.Unmarshal([]byte(r.body), &got); err != nil {
			t.Fatalf("%v: %s", err, r.body)
		}
		if got.Preview || len(got.Items) != 3 || got.Enqueued != 3 {
			t.Errorf("rerun result %s, want 3 items enqueued", r.body)
		}
		if n := pending(); n != 3 {
			t.Errorf("%d pending tasks after rerun, want 3", n)
		}
		r = b.get(t, "/runs/"+runID, auth)
		wantContains(t, r.body, `id="run-status">RUNNING<`, `id="cancel-button"`)
	})
}

func TestServeShutsDownOnContext(t *testing.T) {
	t.Parallel()
	st := dbtest.Store(t)
	srv, err := serve.New(serve.Config{Store: st, Redis: redistest.ConnOpt(t), Token: testToken, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	res, err := http.Get("http://" + ln.Addr().String() + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("/readyz %d", res.StatusCode)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Serve did not return after its context ended")
	}
	if _, err := http.Get("http://" + ln.Addr().String() + "/healthz"); err == nil {
		t.Error("server still answers after shutdown")
	}
}

// TestItemGridPages: a run of 1,200 items draws one page of 500 squares with a status
// histogram and a keyset link to the next page, not every item; a status filter pages too.
func TestItemGridPages(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	ctx := t.Context()
	runID := uuid.Must(uuid.NewV7())
	for _, q := range []string{
		`INSERT INTO dw_etl_jobs (job_id, kind) VALUES ('big', 'synthetic')`,
		`INSERT INTO dw_etl_runs (run_id, job_id, status, exclusive, item_count) VALUES ('` + runID.String() + `', 'big', 'RUNNING', false, 1200)`,
		`INSERT INTO dw_etl_run_items (run_id, item_no, params, param_hash, status)
		 SELECT '` + runID.String() + `', g, jsonb_build_object('n', g, 'pad', repeat('x', 200)), md5(g::text),
		   CASE WHEN g % 10 = 0 THEN 'FAILED' WHEN g % 3 = 0 THEN 'PENDING' ELSE 'SUCCESS' END
		 FROM generate_series(1, 1200) g`,
		// The run's counters, as workers would have left them (the histogram reads these).
		`INSERT INTO dw_etl_run_progress (run_id, shard, succeeded, failed, failed_api)
		 VALUES ('` + runID.String() + `', 0, 720, 120, 120)`,
	} {
		if _, err := b.st.Pool().Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	auth := bearer(testToken)
	squares := regexp.MustCompile(`<a class="sq st-[a-z-]+" href="\?item=(\d+)#logs"`)
	next := regexp.MustCompile(`<a href="([^"]+)" rel="next" id="items-next">`)

	r := b.get(t, "/runs/"+runID.String(), auth)
	wantStatus(t, r, http.StatusOK)
	if len(r.body) > 400<<10 {
		t.Errorf("run page is %d KB for 1,200 items", len(r.body)>>10)
	}
	wantContains(t, r.body, `id="item-histogram"`, "<title>SUCCESS: 720 items</title>", "<title>FAILED: 120 items</title>",
		"<title>PENDING: 360 items</title>", `href="/api/v1/runs/`+runID.String()+`/items?format=csv"`)
	seen := 0
	for page := 1; ; page++ {
		got := squares.FindAllStringSubmatch(r.body, -1)
		want := min(500, 1200-seen)
		if len(got) != want {
			t.Fatalf("page %d has %d squares, want %d", page, len(got), want)
		}
		if first := got[0][1]; first != strconv.Itoa(seen+1) {
			t.Fatalf("page %d starts at item %s, want %d", page, first, seen+1)
		}
		seen += len(got)
		m := next.FindStringSubmatch(r.body)
		if m == nil {
			break
		}
		r = b.get(t, strings.ReplaceAll(m[1], "&amp;", "&"), auth)
		wantStatus(t, r, http.StatusOK)
	}
	if seen != 1200 {
		t.Errorf("the pages showed %d items, want 1200", seen)
	}

	r = b.get(t, "/runs/"+runID.String()+"?items_status=FAILED", auth)
	wantStatus(t, r, http.StatusOK)
	got := squares.FindAllStringSubmatch(r.body, -1)
	if len(got) != 120 || got[0][1] != "10" || strings.Count(r.body, `<a class="sq st-failed"`) != 120 {
		t.Errorf("FAILED grid has %d squares from item %v", len(got), got[0][1])
	}
	wantStatus(t, b.get(t, "/runs/"+runID.String()+"?items_status=NOPE", auth), http.StatusBadRequest)
}
