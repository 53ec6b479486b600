package httpjson_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/etlexec/etlexec/etl"
	"github.com/etlexec/etlexec/internal/dbtest"
	"github.com/etlexec/etlexec/internal/kinds/httpjson"
	"github.com/etlexec/etlexec/internal/kinds/kindtest"
)

// base is two days ago on the hour: the records' times, below any upper.
var base = time.Now().UTC().Truncate(time.Hour).Add(-48 * time.Hour)

func at(i int) time.Time { return base.Add(time.Duration(i) * time.Minute) }

// staticSource holds records 1..n updated a minute apart, with the real clock.
func staticSource(n int) *fakeSource {
	s := newFakeSource(time.Now())
	for id := 1; id <= n; id++ {
		s.put(id, at(id), time.Time{}, false)
	}
	return s
}

type testBundle struct {
	target *pgxpool.Pool
}

func setup(t *testing.T) *testBundle {
	t.Helper()
	pool := dbtest.Pool(t)
	_, err := pool.Exec(t.Context(), `CREATE TABLE api_items (
		id int PRIMARY KEY,
		name text,
		ver int,
		deleted boolean,
		updated_at timestamptz,
		score numeric,
		loaded_at timestamptz NOT NULL DEFAULT now()
	)`)
	require.NoError(t, err)
	return &testBundle{target: pool}
}

// serve starts an HTTP server on loopback, closed when the test ends.
func serve(t *testing.T, h http.Handler) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

// config is a job config loading the fake's /items into api_items, with overrides; a nil
// override removes the field.
func config(t *testing.T, baseURL string, overrides map[string]any) json.RawMessage {
	t.Helper()
	c := map[string]any{
		"base_url":       baseURL,
		"records_path":   "data.items",
		"modified_field": "updated_at",
		"target_table":   "api_items",
		"key_columns":    []string{"id"},
		"columns": map[string]string{"id": "id", "name": "name", "ver": "ver", "deleted": "deleted",
			"updated_at": "updated_at", "score": "nested.score"},
		"timeout": "10s",
	}
	for k, v := range overrides {
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	raw, err := json.Marshal(c)
	require.NoError(t, err)
	return raw
}

func (b *testBundle) job(t *testing.T, baseURL string, overrides map[string]any) kindtest.Job {
	t.Helper()
	return kindtest.Job{Kind: httpjson.Kind, Handler: httpjson.Handler, Strategy: etl.StrategyModifiedDate,
		Config: config(t, baseURL, overrides), Target: b.target}
}

func newItem(tx pgx.Tx, spec etl.ItemSpec) *etl.Item {
	spec.JobID = "http_json_test"
	spec.Kind = httpjson.Kind
	spec.ItemAttempt = 1
	spec.MaxAttempts = 3
	if spec.Strategy == "" {
		spec.Strategy = etl.StrategyModifiedDate
	}
	if tx != nil {
		spec.Target = tx
	}
	return etl.NewItem(spec)
}

// run runs one item in its own target transaction, committed when the handler
// succeeds and rolled back otherwise.
func (b *testBundle) run(t *testing.T, spec etl.ItemSpec) (*etl.Item, error) {
	t.Helper()
	tx, err := b.target.Begin(t.Context())
	require.NoError(t, err)
	t.Cleanup(func() { _ = tx.Rollback(context.Background()) })
	it := newItem(tx, spec)
	err = httpjson.Handler(t.Context(), it)
	if err == nil {
		require.NoError(t, tx.Commit(t.Context()))
	} else {
		require.NoError(t, tx.Rollback(t.Context()))
	}
	return it, err
}

func (b *testBundle) count(t *testing.T) int {
	t.Helper()
	var n int
	require.NoError(t, b.target.QueryRow(t.Context(), `SELECT count(*) FROM api_items`).Scan(&n))
	return n
}

// versions returns the target's id → ver.
func (b *testBundle) versions(t *testing.T) map[int]int {
	t.Helper()
	rows, err := b.target.Query(t.Context(), `SELECT id, ver FROM api_items`)
	require.NoError(t, err)
	out := map[int]int{}
	var id, ver int
	_, err = pgx.ForEachRow(rows, []any{&id, &ver}, func() error { out[id] = ver; return nil })
	require.NoError(t, err)
	return out
}

// setEnv sets a variable of a unique name (t.Setenv forbids parallel tests) and
// returns the name.
func setEnv(t *testing.T, value string) string {
	t.Helper()
	var b [6]byte
	_, _ = rand.Read(b[:])
	name := "ETL_TEST_AUTH_" + strings.ToUpper(hex.EncodeToString(b[:]))
	require.NoError(t, os.Setenv(name, value))
	t.Cleanup(func() { _ = os.Unsetenv(name) })
	return name
}

func requireClass(t *testing.T, err error, category etl.Category, permanent bool) {
	t.Helper()
	require.Error(t, err)
	require.Equal(t, category, etl.Classify(err), "%v", err)
	require.Equal(t, permanent, etl.IsPermanent(err), "permanent: %v", err)
}

// paginations are the styles the fake serves, each in an order safe under change where the
// style allows one.
var paginations = []struct {
	name       string
	query      map[string]string
	pagination map[string]any
}{
	{"none", nil, map[string]any{"type": "none"}},
	{"page", map[string]string{"order": "desc"}, map[string]any{"type": "page", "limit": 10, "order": "desc"}},
	{"offset", map[string]string{"order": "desc"}, map[string]any{"type": "offset", "limit": 10, "order": "desc"}},
	{"cursor", map[string]string{"order": "desc"}, map[string]any{"type": "cursor", "limit": 10, "cursor_path": "meta.next", "order": "desc"}},
	{"link", map[string]string{"order": "desc"}, map[string]any{"type": "link", "limit": 10, "order": "desc"}},
	{"keyset", nil, map[string]any{"type": "keyset", "limit": 10, "since_param": "since", "until_param": "until"}},
	{"keyset_after", nil, map[string]any{"type": "keyset", "limit": 10, "since_param": "since", "after_param": "after"}},
}

func TestHandler(t *testing.T) {
	t.Parallel()

	t.Run("Paginations", func(t *testing.T) {
		t.Parallel()
		for _, tc := range paginations {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				b := setup(t)
				src := staticSource(23)
				u := src.serve(t)
				r := kindtest.Run(t.Context(), b.job(t, u+"/items", map[string]any{"pagination": tc.pagination, "query": tc.query}),
					&kindtest.Cursor{}, kindtest.Options{})
				require.NoError(t, r.Err)
				m := r.Metrics
				require.Equal(t, int64(23), m.RecordsRead)
				require.Equal(t, int64(23), m.RecordsWritten)
				require.NotNil(t, m.Watermark)
				require.True(t, at(23).Equal(*m.Watermark), "watermark %s", m.Watermark)
				require.Equal(t, 23, b.count(t))
				require.Contains(t, m.Note, "first load: read 23 rows, wrote 23 in")

				var (
					score   string
					updated time.Time
				)
				require.NoError(t, b.target.QueryRow(t.Context(),
					`SELECT score::text, updated_at FROM api_items WHERE id = 17`).Scan(&score, &updated))
				require.Equal(t, "25.5", score)
				require.True(t, at(17).Equal(updated))
			})
		}
	})

	t.Run("KeysetDeduplicatesTheBoundary", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		src := newFakeSource(time.Now())
		for id := 1; id <= 30; id++ {
			src.put(id, at(id/3), time.Time{}, false) // three records a minute
		}
		keyset := map[string]any{"type": "keyset", "limit": 10, "since_param": "since"}
		r := kindtest.Run(t.Context(), b.job(t, src.serve(t)+"/items", map[string]any{"pagination": keyset}), &kindtest.Cursor{}, kindtest.Options{})
		require.NoError(t, r.Err)
		require.Equal(t, int64(30), r.Metrics.RecordsRead)
		require.Equal(t, 30, b.count(t))
		require.Contains(t, r.Metrics.Note, "repeated at page boundaries skipped")
	})

	t.Run("KeysetRefusesAPageItCannotLeave", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		src := newFakeSource(time.Now())
		for id := 1; id <= 25; id++ {
			src.put(id, at(1), time.Time{}, false)
		}
		u := src.serve(t) + "/items"
		keyset := map[string]any{"type": "keyset", "limit": 10, "since_param": "since"}
		r := kindtest.Run(t.Context(), b.job(t, u, map[string]any{"pagination": keyset}), &kindtest.Cursor{}, kindtest.Options{})
		requireClass(t, r.Err, etl.CategoryData, true)
		require.ErrorContains(t, r.Err, "a whole page of 10 records shares updated_at")

		keyset["after_param"] = "after"
		r = kindtest.Run(t.Context(), b.job(t, u, map[string]any{"pagination": keyset}), &kindtest.Cursor{}, kindtest.Options{})
		require.NoError(t, r.Err, "the compound keyset gets past the tie")
		require.Equal(t, 25, b.count(t))
	})

	// Measured on main: records ascending, 50 a page; after page 4 an early record moved to a
	// new time, every later record shifted a slot, one was never fetched, the run succeeded and
	// the cursor jumped past the lost record. Now ascending paging notices the move and the
	// item fails, to be retried; descending and keyset paging lose nothing.
	t.Run("RecordMovedWhilePaging", func(t *testing.T) {
		t.Parallel()
		for _, tc := range []struct {
			name       string
			pagination map[string]any
			query      map[string]string
			retried    bool
		}{
			{"page_asc", map[string]any{"type": "page", "limit": 50, "order": "asc"}, nil, true},
			{"offset_asc", map[string]any{"type": "offset", "limit": 50, "order": "asc"}, nil, true},
			{"link_asc", map[string]any{"type": "link", "limit": 50, "order": "asc"}, nil, true},
			{"page_desc", map[string]any{"type": "page", "limit": 50, "order": "desc"}, map[string]string{"order": "desc"}, false},
			{"offset_desc", map[string]any{"type": "offset", "limit": 50, "order": "desc"}, map[string]string{"order": "desc"}, false},
			{"link_desc", map[string]any{"type": "link", "limit": 50, "order": "desc"}, map[string]string{"order": "desc"}, false},
			{"keyset", map[string]any{"type": "keyset", "limit": 50, "since_param": "since", "until_param": "until"}, nil, false},
		} {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				b := setup(t)
				src := staticSource(300)
				src.onRequest = func(r *http.Request, n int) {
					if n == 5 { // after page 4 (keyset: after its 4th page)
						src.tick(time.Second)
						src.put(3, src.now(), time.Time{}, false)
					}
				}
				job := b.job(t, src.serve(t)+"/items", map[string]any{"pagination": tc.pagination, "query": tc.query})
				var cur kindtest.Cursor
				r := kindtest.Run(t.Context(), job, &cur, kindtest.Options{})
				if tc.retried {
					requireClass(t, r.Err, etl.CategoryAPI, false)
					require.ErrorContains(t, r.Err, "record 3 came back modified")
					require.Nil(t, cur.Value, "a failed item moves no cursor")
					src.onRequest = nil
					r = kindtest.Run(t.Context(), job, &cur, kindtest.Options{Attempt: 2})
				}
				require.NoError(t, r.Err)
				got := b.versions(t)
				for id := 1; id <= 300; id++ {
					if id != 3 { // its only version now is newer than upper: the next run's
						require.Contains(t, got, id, "record %d lost", id)
					}
				}
				require.Less(t, *cur.Value, src.now().Add(-httpjson.SafetyLagDefault+time.Second), "the cursor stays below upper")
				// The moved record's new version is newer than upper: the next run reads it.
				src.tick(10 * time.Second)
				r = kindtest.Run(t.Context(), job, &cur, kindtest.Options{})
				require.NoError(t, r.Err)
				require.Equal(t, 2, b.versions(t)[3])
			})
		}
	})

	// Measured on main: an API that silently ignored its range operator was re-read whole on
	// every run, and the run said "no new rows".
	t.Run("IgnoredRangeFilterFailsTheItem", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		src := staticSource(20)
		src.ignoreRange = true
		u := src.serve(t) + "/items"
		cursor := at(15)
		for _, tc := range []struct {
			overrides map[string]any
			filter    string
		}{
			{map[string]any{"query": map[string]string{"since": "{{.cursor_start}}", "order": "desc"},
				"pagination": map[string]any{"type": "page", "limit": 5, "order": "desc"}}, "range filter since"},
			{map[string]any{"pagination": map[string]any{"type": "keyset", "limit": 5, "since_param": "since"}}, "range filter since"},
		} {
			r := kindtest.Run(t.Context(), b.job(t, u, tc.overrides), &kindtest.Cursor{Value: &cursor}, kindtest.Options{})
			requireClass(t, r.Err, etl.CategoryData, true)
			require.ErrorContains(t, r.Err, tc.filter)
			require.ErrorContains(t, r.Err, "before")

		}
		// An API that pads its pages may be allowed to: the records outside the window are
		// skipped, and paging newest first stops at the window's start.
		cur := kindtest.Cursor{Value: &cursor}
		r := kindtest.Run(t.Context(), b.job(t, u, map[string]any{"allow_out_of_window": true,
			"query":      map[string]string{"since": "{{.cursor_start}}", "order": "desc"},
			"pagination": map[string]any{"type": "page", "limit": 5, "order": "desc"}}), &cur, kindtest.Options{})
		require.NoError(t, r.Err)
		require.Equal(t, int64(6), r.Metrics.RecordsRead, "records 15..20 only")
		require.Equal(t, int64(2), r.Metrics.Pages, "it stops at the first record before the window")
		require.Contains(t, r.Metrics.Note, "1 outside the window skipped")
	})

	t.Run("UpperFromTheAPIsClock", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		src := newFakeSource(at(100))
		src.put(1, at(50), time.Time{}, false)
		src.put(2, at(100).Add(-3*time.Second), time.Time{}, false) // within the 5s safety lag
		job := b.job(t, src.serve(t)+"/items", nil)
		var cur kindtest.Cursor
		r := kindtest.Run(t.Context(), job, &cur, kindtest.Options{})
		require.NoError(t, r.Err)
		require.Equal(t, int64(1), r.Metrics.RecordsRead)
		require.Contains(t, r.Metrics.Note, "upper "+at(100).Add(-5*time.Second).Format(time.RFC3339Nano)+" (the API's Date header − 5s safety lag)")

		src.tick(time.Minute)
		r = kindtest.Run(t.Context(), job, &cur, kindtest.Options{})
		require.NoError(t, r.Err)
		require.Equal(t, 2, b.count(t))
	})

	t.Run("TemplatesRenderParamsAndWindow", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		src := staticSource(2)
		var (
			mu   sync.Mutex
			reqs []*http.Request
		)
		mux := http.NewServeMux()
		mux.HandleFunc("/v1/{region}/orders", func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			reqs = append(reqs, r.Clone(context.Background()))
			mu.Unlock()
			r.URL.Path = "/items"
			src.ServeHTTP(w, r)
		})
		request := func(i int) *http.Request {
			mu.Lock()
			defer mu.Unlock()
			return reqs[i]
		}
		srv := serve(t, mux)
		cfg := config(t, srv.URL+`/v1/{{.params.region | pathescape}}/orders?fixed=1`, map[string]any{
			"query": map[string]string{
				"since":  "{{.cursor_start}}",
				"until":  "{{.cursor_end}}",
				"region": "{{.params.region}}",
			},
		})
		start, end := time.Date(2026, 3, 1, 10, 0, 0, 0, time.FixedZone("CET", 3600)), at(90).Add(300*time.Millisecond)
		_, err := b.run(t, etl.ItemSpec{
			Config:      cfg,
			Params:      json.RawMessage(`{"region":"eu west"}`),
			WindowStart: &start,
			WindowEnd:   &end,
			Strategy:    etl.StrategyLastRun,
		})
		require.NoError(t, err)
		r := request(0)
		require.Equal(t, "/v1/eu%20west/orders", r.URL.EscapedPath())
		require.Equal(t, url.Values{
			"fixed":  {"1"},
			"since":  {"2026-03-01T09:00:00Z"},
			"until":  {end.Add(700 * time.Millisecond).UTC().Format(time.RFC3339)}, // rounded up: last_run's end is inclusive
			"region": {"eu west"},
		}, r.URL.Query())

		// A first load has no window start: the empty parameter is left out; the end is upper,
		// so the API's clock is asked first.
		n := src.requestCount()
		_, err = b.run(t, etl.ItemSpec{Config: cfg, Params: json.RawMessage(`{"region":"eu"}`)})
		require.NoError(t, err)
		require.Equal(t, http.MethodHead, request(n).Method)
		got := request(n + 1).URL.Query()
		require.Equal(t, []string{"fixed", "region", "until"}, sortedKeys(got))

		// A missing param is a DATA error naming it.
		_, err = b.run(t, etl.ItemSpec{Config: cfg, Params: json.RawMessage(`{"country":"fr"}`)})
		requireClass(t, err, etl.CategoryData, true)
		require.ErrorContains(t, err, "region")
	})

	t.Run("TooManyRequestsCarriesRetryAfter", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		for header, want := range map[string]time.Duration{
			"7": 7 * time.Second,
			time.Now().Add(time.Hour).UTC().Format(http.TimeFormat): time.Hour,
		} {
			srv := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Retry-After", header)
				http.Error(w, "slow down", http.StatusTooManyRequests)
			}))
			_, err := b.run(t, etl.ItemSpec{Config: config(t, srv.URL, nil)})
			requireClass(t, err, etl.CategoryAPI, false)
			wait, ok := etl.RetryAfterOf(err)
			require.True(t, ok)
			require.InDelta(t, want.Seconds(), wait.Seconds(), 2, "Retry-After %q", header)
			require.ErrorContains(t, err, "429")
		}
	})

	t.Run("ServerErrorIsRetried", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		src := staticSource(3)
		var calls sync.Map
		srv := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if _, seen := calls.LoadOrStore("first", true); !seen {
				http.Error(w, "boom", http.StatusInternalServerError)
				return
			}
			src.ServeHTTP(w, r)
		}))
		cfg := config(t, srv.URL+"/items", nil)
		_, err := b.run(t, etl.ItemSpec{Config: cfg})
		requireClass(t, err, etl.CategoryAPI, false)
		require.ErrorContains(t, err, "http status 500: boom")
		_, ok := etl.RetryAfterOf(err)
		require.False(t, ok)

		it, err := b.run(t, etl.ItemSpec{Config: cfg, ItemAttempt: 2})
		require.NoError(t, err)
		require.Equal(t, int64(3), it.Metrics().RecordsWritten)
		require.Equal(t, 3, b.count(t))
	})

	t.Run("NotFoundIsPermanent", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		u := staticSource(0).serve(t)
		_, err := b.run(t, etl.ItemSpec{Config: config(t, u+"/nowhere", nil)})
		requireClass(t, err, etl.CategoryAPI, true)
		require.ErrorContains(t, err, "404")
	})

	t.Run("MalformedResponsesAreData", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		for body, want := range map[string]string{
			`{"data": {"items": [{"id": 1}`:                               "truncated JSON",
			`<html>oops</html>`:                                           "invalid character",
			`{"data": {"items": {"id": 1}}}`:                              "an object, want an array",
			`{"data": {}}`:                                                "not found",
			`{"data": {"items": [1, 2]}}`:                                 "record 1 is a number",
			`{"data": {"items": []}} {"x":1}`:                             "unexpected data",
			`{"data": {"items": [{"id": 1, "updated_at": "yesterday"}]}}`: "modified_field updated_at",
			`{"data": {"items": [{"id": 1, "updated_at": 5}]}}`:           "a number, want an RFC 3339 string",
		} {
			srv := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				_, _ = w.Write([]byte(body))
			}))
			_, err := b.run(t, etl.ItemSpec{Config: config(t, srv.URL, nil)})
			requireClass(t, err, etl.CategoryData, true)
			require.ErrorContains(t, err, want, body)
		}
	})

	t.Run("OrderIsChecked", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		u := staticSource(5).serve(t) + "/items"
		r := kindtest.Run(t.Context(), b.job(t, u, map[string]any{"pagination": map[string]any{"type": "page", "limit": 2, "order": "desc"}}),
			&kindtest.Cursor{}, kindtest.Options{})
		requireClass(t, r.Err, etl.CategoryData, true)
		require.ErrorContains(t, r.Err, "pagination.order desc")
	})

	t.Run("NullRecordsIsAnEmptyPage", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		srv := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = w.Write([]byte(`{"data": {"items": null}}`))
		}))
		it, err := b.run(t, etl.ItemSpec{Config: config(t, srv.URL, nil)})
		require.NoError(t, err)
		m := it.Metrics()
		require.Equal(t, int64(1), m.Pages)
		require.Zero(t, m.RecordsRead)
		require.Nil(t, m.Watermark)
	})

	t.Run("AuthHeader", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		const secret = "Bearer s3cr3t-t0ken-value"
		env := setEnv(t, secret)
		src := staticSource(1)
		srv := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/echo" {
				// A careless server echoing the credential in its error.
				http.Error(w, "bad token "+r.Header.Get("X-Api-Key")+" / "+strings.TrimPrefix(r.Header.Get("X-Api-Key"), "Bearer "), http.StatusUnauthorized)
				return
			}
			src.ServeHTTP(w, r)
		}))

		_, err := b.run(t, etl.ItemSpec{Config: config(t, srv.URL+"/items", map[string]any{"auth_env": env})})
		require.NoError(t, err)
		require.Equal(t, secret, src.request(0).Header.Get("Authorization"))

		_, err = b.run(t, etl.ItemSpec{Config: config(t, srv.URL+"/items", map[string]any{"auth_env": env, "auth_header": "X-Api-Key"})})
		require.NoError(t, err)
		require.Equal(t, secret, src.request(1).Header.Get("X-Api-Key"))
		require.Empty(t, src.request(1).Header.Get("Authorization"))

		_, err = b.run(t, etl.ItemSpec{Config: config(t, srv.URL+"/echo", map[string]any{"auth_env": env, "auth_header": "X-Api-Key"})})
		requireClass(t, err, etl.CategoryAPI, true)
		require.NotContains(t, err.Error(), "s3cr3t")

		_, err = b.run(t, etl.ItemSpec{Config: config(t, srv.URL, map[string]any{"auth_env": "ETL_TEST_NO_SUCH_TOKEN"})})
		requireClass(t, err, etl.CategorySystem, true)
		require.ErrorContains(t, err, "ETL_TEST_NO_SUCH_TOKEN")
	})

	t.Run("RateLimit", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		src := staticSource(5)
		cfg := config(t, src.serve(t)+"/items", map[string]any{
			"rate_limit": 5,
			"pagination": map[string]any{"type": "page", "limit": 1, "order": "asc"},
		})
		begin := time.Now()
		it, err := b.run(t, etl.ItemSpec{Config: cfg})
		elapsed := time.Since(begin)
		require.NoError(t, err)
		require.Equal(t, int64(6), it.Metrics().Pages, "5 full pages and an empty one")
		// Burst 1 at 5/s: the first request goes at once, the other five 200ms apart.
		require.GreaterOrEqual(t, elapsed, 950*time.Millisecond)
		require.Less(t, elapsed, 10*time.Second)
	})

	t.Run("CrossHostLinkRefused", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		srv := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Link", `<http://elsewhere.example/next>; rel="next"`)
			_, _ = w.Write([]byte(`{"data": {"items": []}}`))
		}))
		_, err := b.run(t, etl.ItemSpec{Config: config(t, srv.URL, map[string]any{"pagination": map[string]any{"type": "link", "order": "desc"}})})
		requireClass(t, err, etl.CategoryAPI, true)
		require.ErrorContains(t, err, "elsewhere.example")
	})

	t.Run("RepeatedCursorRefused", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		srv := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = w.Write([]byte(`{"data": {"items": []}, "next": 7}`))
		}))
		it, err := b.run(t, etl.ItemSpec{Config: config(t, srv.URL, map[string]any{
			"pagination": map[string]any{"type": "cursor", "cursor_path": "next"},
		})})
		requireClass(t, err, etl.CategoryData, true)
		require.ErrorContains(t, err, `cursor "7" twice`)
		require.Equal(t, int64(2), it.Metrics().Pages)
	})

	t.Run("NetworkErrorIsAPI", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		srv := httptest.NewServer(http.NotFoundHandler())
		srv.Close() // nothing listens on its port now
		_, err := b.run(t, etl.ItemSpec{Config: config(t, srv.URL, nil)})
		requireClass(t, err, etl.CategoryAPI, false)
	})

	t.Run("RequestTimeoutIsAPI", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		release := make(chan struct{})
		srv := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-r.Context().Done():
			case <-release:
			case <-time.After(10 * time.Second):
			}
		}))
		t.Cleanup(func() { close(release) })
		_, err := b.run(t, etl.ItemSpec{Config: config(t, srv.URL, map[string]any{"timeout": "100ms"})})
		requireClass(t, err, etl.CategoryAPI, false)
	})

	t.Run("CancelledContext", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		u := staticSource(1).serve(t)
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		tx, err := b.target.Begin(t.Context())
		require.NoError(t, err)
		defer tx.Rollback(context.Background()) //nolint:errcheck
		err = httpjson.Handler(ctx, newItem(tx, etl.ItemSpec{Config: config(t, u+"/items", nil)}))
		require.ErrorIs(t, err, context.Canceled)
		require.Equal(t, etl.CategorySystem, etl.Classify(err))
	})

	t.Run("BadConfig", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		u := staticSource(1).serve(t)
		for want, override := range map[string]map[string]any{
			"base_url: required":               {"base_url": nil},
			"want an http or https URL":        {"base_url": "ftp://example.com/x"},
			"base_url":                         {"base_url": "{{.nope"},
			"query.since":                      {"query": map[string]string{"since": "{{"}},
			"timeout":                          {"timeout": "soon"},
			"rate_limit":                       {"rate_limit": -1},
			"auth_header":                      {"auth_header": "X Bad"},
			"modified_field: required":         {"modified_field": nil},
			"columns: required":                {"columns": nil},
			"key_columns":                      {"key_columns": nil},
			"target_table":                     {"target_table": "a.b.c"},
			`target table "nowhere"`:           {"target_table": "nowhere", "base_url": u + "/items"},
			"pagination.type":                  {"pagination": map[string]any{"type": "scroll"}},
			"pagination.limit: required":       {"pagination": map[string]any{"type": "page"}},
			"pagination.cursor_path: required": {"pagination": map[string]any{"type": "cursor"}},
			"pagination.order: required":       {"pagination": map[string]any{"type": "offset", "limit": 5}},
			`pagination.order "sideways"`:      {"pagination": map[string]any{"type": "offset", "limit": 5, "order": "sideways"}},
			"pagination.since_param: required": {"pagination": map[string]any{"type": "keyset", "limit": 5}},
			"keyset pages ascending":           {"pagination": map[string]any{"type": "keyset", "limit": 5, "since_param": "s", "order": "desc"}},
			"for pagination type keyset only":  {"pagination": map[string]any{"type": "page", "limit": 5, "order": "asc", "since_param": "s"}},
			`time_format "iso"`:                {"time_format": "iso"},
			`clock "atomic"`:                   {"clock": "atomic"},
			"lookback":                         {"lookback": "a while"},
			`unknown key "url"`:                {"url": "http://x"},
			`did you mean "pagination"`:        {"pagniation": map[string]any{}},
			`"pagination.limt"`:                {"pagination": map[string]any{"limt": 5}},
		} {
			cfgURL := u
			if _, ok := override["base_url"]; ok {
				cfgURL = ""
			}
			_, err := b.run(t, etl.ItemSpec{Config: config(t, cfgURL, override)})
			requireClass(t, err, etl.CategoryData, true)
			require.ErrorContains(t, err, want)
		}
		err := httpjson.Handler(t.Context(), newItem(nil, etl.ItemSpec{Config: config(t, u, nil)}))
		requireClass(t, err, etl.CategoryData, true)
		require.ErrorContains(t, err, "no target database")
	})
}

func sortedKeys(v url.Values) []string {
	keys := make([]string, 0, len(v))
	for k := range v {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func TestRegister(t *testing.T) {
	t.Parallel()
	r := etl.NewRegistry()
	httpjson.Register(r)
	h, ok := r.Lookup(httpjson.Kind)
	require.True(t, ok)
	require.NotNil(t, h)
	require.Error(t, r.ValidateConfig(httpjson.Kind, json.RawMessage(`{"pagniation":{}}`), etl.StrategyNone), "the config is declared")
	require.Panics(t, func() { httpjson.Register(r) }, "registering twice is a start-up bug")
}
