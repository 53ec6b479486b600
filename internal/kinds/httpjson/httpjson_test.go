package httpjson_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strconv"
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
)

var base = time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)

func at(i int) time.Time { return base.Add(time.Duration(i) * time.Minute) }

// records returns n API records with ids 1..n, updated a minute apart.
func records(n int) []map[string]any {
	recs := make([]map[string]any, n)
	for i := range recs {
		id := i + 1
		recs[i] = map[string]any{
			"id":         id,
			"name":       fmt.Sprintf("record %d", id),
			"updated_at": at(id).Format(time.RFC3339),
			"nested":     map[string]any{"score": float64(id) * 1.5},
		}
	}
	return recs
}

// fakeAPI serves records in every pagination style:
//
//	/none    the whole array
//	/page    ?page=1..&limit=n under {"data":{"items":[…]}}
//	/offset  ?offset=&limit=n, likewise
//	/cursor  ?cursor=<index>&limit=n with the next index at meta.next (null at the end)
//	/link    ?page=&limit=n with a relative Link rel="next" until the last page
//
// It records every request.
type fakeAPI struct {
	recs []map[string]any

	mu       sync.Mutex
	requests []*http.Request
}

func (a *fakeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	a.requests = append(a.requests, r.Clone(context.Background()))
	a.mu.Unlock()

	q := r.URL.Query()
	limit, _ := strconv.Atoi(q.Get("limit"))
	slice := func(from int) []map[string]any {
		from = min(from, len(a.recs))
		return a.recs[from:min(from+limit, len(a.recs))]
	}
	w.Header().Set("Content-Type", "application/json")
	var body any
	switch r.URL.Path {
	case "/none":
		body = a.recs
	case "/page":
		page, _ := strconv.Atoi(q.Get("page"))
		body = map[string]any{"data": map[string]any{"items": slice((page - 1) * limit)}}
	case "/offset":
		offset, _ := strconv.Atoi(q.Get("offset"))
		body = map[string]any{"data": map[string]any{"items": slice(offset)}}
	case "/cursor":
		from, _ := strconv.Atoi(q.Get("cursor"))
		var next any
		if from+limit < len(a.recs) {
			next = strconv.Itoa(from + limit)
		}
		body = map[string]any{"data": map[string]any{"items": slice(from)}, "meta": map[string]any{"next": next}}
	case "/link":
		page := max(1, atoi(q.Get("page")))
		if page*limit < len(a.recs) {
			w.Header().Add("Link", fmt.Sprintf(`</link?page=%d&limit=%d>; rel="next", </link?page=1&limit=%d>; rel="first"`, page+1, limit, limit))
		}
		body = map[string]any{"data": map[string]any{"items": slice((page - 1) * limit)}}
	default:
		http.NotFound(w, r)
		return
	}
	_ = json.NewEncoder(w).Encode(body)
}

func atoi(s string) int { n, _ := strconv.Atoi(s); return n }

func (a *fakeAPI) requestCount() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.requests)
}

func (a *fakeAPI) request(i int) *http.Request {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.requests[i]
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

// config is a job config loading srv's path into api_items, with overrides; a nil
// override removes the field.
func config(t *testing.T, baseURL string, overrides map[string]any) json.RawMessage {
	t.Helper()
	c := map[string]any{
		"base_url":       baseURL,
		"records_path":   "data.items",
		"modified_field": "updated_at",
		"target_table":   "api_items",
		"key_columns":    []string{"id"},
		"columns":        map[string]string{"id": "id", "name": "name", "updated_at": "updated_at", "score": "nested.score"},
		"timeout":        "10s",
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

func TestHandler(t *testing.T) {
	t.Parallel()

	t.Run("Paginations", func(t *testing.T) {
		t.Parallel()
		for _, tc := range []struct {
			path       string
			pagination map[string]any
			pages      int64
		}{
			{"/none", map[string]any{"type": "none"}, 1},
			{"/page", map[string]any{"type": "page", "limit": 10}, 3},
			{"/offset", map[string]any{"type": "offset", "limit": 10}, 3},
			{"/cursor", map[string]any{"type": "cursor", "limit": 10, "cursor_path": "meta.next"}, 3},
			{"/link", map[string]any{"type": "link", "limit": 10}, 3},
		} {
			t.Run(strings.TrimPrefix(tc.path, "/"), func(t *testing.T) {
				t.Parallel()
				b := setup(t)
				api := &fakeAPI{recs: records(23)}
				srv := serve(t, api)
				overrides := map[string]any{"pagination": tc.pagination}
				if tc.path == "/none" {
					overrides["records_path"] = ""
				}
				it, err := b.run(t, etl.ItemSpec{Config: config(t, srv.URL+tc.path, overrides)})
				require.NoError(t, err)
				m := it.Metrics()
				require.Equal(t, int64(23), m.RecordsRead)
				require.Equal(t, int64(23), m.RecordsWritten)
				require.Equal(t, tc.pages, m.Pages)
				require.Equal(t, int(tc.pages), api.requestCount())
				require.NotNil(t, m.Watermark)
				require.True(t, at(23).Equal(*m.Watermark), "watermark %s", m.Watermark)
				require.Equal(t, 23, b.count(t))

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

	t.Run("PageEndsExactlyOnLimit", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		api := &fakeAPI{recs: records(20)}
		srv := serve(t, api)
		it, err := b.run(t, etl.ItemSpec{Config: config(t, srv.URL+"/page", map[string]any{
			"pagination": map[string]any{"type": "page", "limit": 10},
		})})
		require.NoError(t, err)
		require.Equal(t, int64(3), it.Metrics().Pages, "an empty third page ends it")
		require.Equal(t, int64(20), it.Metrics().RecordsRead)
	})

	t.Run("TemplatesRenderParamsAndWindow", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		api := &fakeAPI{recs: records(2)}
		mux := http.NewServeMux()
		mux.HandleFunc("/v1/{region}/orders", func(w http.ResponseWriter, r *http.Request) {
			api.mu.Lock()
			api.requests = append(api.requests, r.Clone(context.Background()))
			api.mu.Unlock()
			_ = json.NewEncoder(w).Encode(api.recs)
		})
		srv := serve(t, mux)
		cfg := config(t, srv.URL+`/v1/{{.params.region | pathescape}}/orders?fixed=1`, map[string]any{
			"records_path": "",
			"query": map[string]string{
				"since":  "{{.cursor_start}}",
				"until":  "{{.cursor_end}}",
				"region": "{{.params.region}}",
			},
		})
		start, end := time.Date(2026, 3, 1, 10, 0, 0, 0, time.FixedZone("CET", 3600)), at(90)
		_, err := b.run(t, etl.ItemSpec{
			Config:      cfg,
			Params:      json.RawMessage(`{"region":"eu west"}`),
			WindowStart: &start,
			WindowEnd:   &end,
			Strategy:    etl.StrategyLastRun,
		})
		require.NoError(t, err)
		r := api.request(0)
		require.Equal(t, "/v1/eu%20west/orders", r.URL.EscapedPath())
		require.Equal(t, url.Values{
			"fixed":  {"1"},
			"since":  {"2026-03-01T09:00:00Z"},
			"until":  {"2026-03-01T01:30:00Z"},
			"region": {"eu west"},
		}, r.URL.Query())

		// A first load has no window: the empty parameters are left out.
		_, err = b.run(t, etl.ItemSpec{Config: cfg, Params: json.RawMessage(`{"region":"eu"}`)})
		require.NoError(t, err)
		require.Equal(t, url.Values{"fixed": {"1"}, "region": {"eu"}}, api.request(1).URL.Query())

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
		api := &fakeAPI{recs: records(3)}
		var calls sync.Map
		srv := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if _, seen := calls.LoadOrStore("first", true); !seen {
				http.Error(w, "boom", http.StatusInternalServerError)
				return
			}
			r.URL.Path = "/none"
			api.ServeHTTP(w, r)
		}))
		cfg := config(t, srv.URL, map[string]any{"records_path": ""})
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
		srv := serve(t, &fakeAPI{})
		_, err := b.run(t, etl.ItemSpec{Config: config(t, srv.URL+"/nowhere", nil)})
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
		} {
			srv := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				_, _ = w.Write([]byte(body))
			}))
			_, err := b.run(t, etl.ItemSpec{Config: config(t, srv.URL, nil)})
			requireClass(t, err, etl.CategoryData, true)
			require.ErrorContains(t, err, want, body)
		}
	})

	t.Run("NullRecordsIsAnEmptyPage", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		srv := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = w.Write([]byte(`{"data": {"items": null}}`))
		}))
		it, err := b.run(t, etl.ItemSpec{Config: config(t, srv.URL, nil)})
		require.NoError(t, err)
		require.Equal(t, etl.Metrics{Pages: 1}, it.Metrics())
	})

	t.Run("AuthHeader", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		const secret = "Bearer s3cr3t-t0ken-value"
		env := setEnv(t, secret)
		api := &fakeAPI{recs: records(1)}
		srv := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/echo" {
				// A careless server echoing the credential in its error.
				http.Error(w, "bad token "+r.Header.Get("X-Api-Key")+" / "+strings.TrimPrefix(r.Header.Get("X-Api-Key"), "Bearer "), http.StatusUnauthorized)
				return
			}
			r.URL.Path = "/none"
			api.ServeHTTP(w, r)
		}))

		_, err := b.run(t, etl.ItemSpec{Config: config(t, srv.URL, map[string]any{"records_path": "", "auth_env": env})})
		require.NoError(t, err)
		require.Equal(t, secret, api.request(0).Header.Get("Authorization"))

		_, err = b.run(t, etl.ItemSpec{Config: config(t, srv.URL, map[string]any{
			"records_path": "", "auth_env": env, "auth_header": "X-Api-Key",
		})})
		require.NoError(t, err)
		require.Equal(t, secret, api.request(1).Header.Get("X-Api-Key"))
		require.Empty(t, api.request(1).Header.Get("Authorization"))

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
		api := &fakeAPI{recs: records(5)}
		srv := serve(t, api)
		cfg := config(t, srv.URL+"/page", map[string]any{
			"rate_limit": 5,
			"pagination": map[string]any{"type": "page", "limit": 1},
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
		_, err := b.run(t, etl.ItemSpec{Config: config(t, srv.URL, map[string]any{"pagination": map[string]any{"type": "link"}})})
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
		srv := serve(t, &fakeAPI{recs: records(1)})
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		tx, err := b.target.Begin(t.Context())
		require.NoError(t, err)
		defer tx.Rollback(context.Background()) //nolint:errcheck
		err = httpjson.Handler(ctx, newItem(tx, etl.ItemSpec{Config: config(t, srv.URL+"/none", map[string]any{"records_path": ""})}))
		require.ErrorIs(t, err, context.Canceled)
		require.Equal(t, etl.CategorySystem, etl.Classify(err))
	})

	t.Run("BadConfig", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		srv := serve(t, &fakeAPI{recs: records(1)})
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
			`target table "nowhere"`:           {"target_table": "nowhere", "base_url": srv.URL + "/none", "records_path": ""},
			"pagination.type":                  {"pagination": map[string]any{"type": "scroll"}},
			"pagination.limit: required":       {"pagination": map[string]any{"type": "page"}},
			"pagination.cursor_path: required": {"pagination": map[string]any{"type": "cursor"}},
			`unknown field "url"`:              {"url": "http://x"},
		} {
			cfgURL := srv.URL
			if _, ok := override["base_url"]; ok {
				cfgURL = ""
			}
			cfg := config(t, cfgURL, override)
			_, err := b.run(t, etl.ItemSpec{Config: cfg})
			requireClass(t, err, etl.CategoryData, true)
			require.ErrorContains(t, err, want)
		}
		err := httpjson.Handler(t.Context(), newItem(nil, etl.ItemSpec{Config: config(t, srv.URL, nil)}))
		requireClass(t, err, etl.CategoryData, true)
		require.ErrorContains(t, err, "no target database")
	})
}

func TestRegister(t *testing.T) {
	t.Parallel()
	r := etl.NewRegistry()
	httpjson.Register(r)
	h, ok := r.Lookup(httpjson.Kind)
	require.True(t, ok)
	require.NotNil(t, h)
	require.Panics(t, func() { httpjson.Register(r) }, "registering twice is a start-up bug")
}
