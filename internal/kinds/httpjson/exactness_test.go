package httpjson_test

import (
	"context"
	"math/rand/v2"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/etlexec/etlexec/etl"
	"github.com/etlexec/etlexec/internal/kinds/kindtest"
)

// lag is the jobs' safety lag; the source's late writers become visible within it.
const lag = 5 * time.Second

// apiExactness drives the fake API through many rounds of change, between runs and between the
// pages of a run, and after each round checks that nothing modified before upper was lost:
// every record whose latest version is older than upper is in the target exactly, nothing in
// the target is at or past upper, the cursor stays below upper, and a run re-reads no more
// records than its window covers. A quiet final run must make the target equal the source.
type apiExactness struct {
	t   *testing.T
	rng *rand.Rand
	src *fakeSource
	b   *testBundle
	job kindtest.Job
	cur kindtest.Cursor

	mu      sync.Mutex
	nextID  int
	running bool // mutate between pages only while a run is on
	attempt int  // a retried item meets a quieter source: writes come in bursts
}

func (e *apiExactness) newID() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.nextID++
	return e.nextID
}

// mutate writes n random changes at the source's clock: updates that move records forward,
// inserts and soft deletes, a third of them made visible only later (within the lag), as a
// transaction committing late would.
func (e *apiExactness) mutate(n int) {
	for range n {
		now := e.src.now()
		visible := time.Time{}
		if e.rng.IntN(3) == 0 {
			visible = now.Add(time.Duration(1+e.rng.IntN(int(lag/time.Second))) * time.Second)
		}
		e.mu.Lock()
		existing := 1 + e.rng.IntN(e.nextID)
		e.mu.Unlock()
		switch e.rng.IntN(3) {
		case 0:
			e.src.put(existing, now, visible, false)
		case 1:
			e.src.put(e.newID(), now, visible, false)
		case 2:
			e.src.put(existing, now, visible, true)
		}
	}
	e.src.tick(time.Duration(e.rng.IntN(3)) * time.Second)
}

func (e *apiExactness) onRequest(r *http.Request, _ int) {
	e.mu.Lock()
	running, attempt := e.running, e.attempt
	e.mu.Unlock()
	if running && r.Method == http.MethodGet && e.rng.IntN(2*attempt*attempt) == 0 {
		e.mutate(1 + e.rng.IntN(3))
	}
}

type apiRow struct {
	ver     int
	updated time.Time
}

func (e *apiExactness) targetRows() map[int]apiRow {
	rows, err := e.b.target.Query(e.t.Context(), `SELECT id, ver, updated_at FROM api_items`)
	require.NoError(e.t, err)
	out := map[int]apiRow{}
	var (
		id int
		r  apiRow
	)
	_, err = pgx.ForEachRow(rows, []any{&id, &r.ver, &r.updated}, func() error { out[id] = r; return nil })
	require.NoError(e.t, err)
	return out
}

func (e *apiExactness) round(ctx context.Context, r int) (retries int) {
	t := e.t
	e.mutate(e.rng.IntN(6))
	if e.cur.Value != nil && e.rng.IntN(3) == 0 {
		for range 1 + e.rng.IntN(3) {
			e.src.put(e.newID(), *e.cur.Value, time.Time{}, false) // written later at the cursor's own time
		}
	}
	e.src.tick(time.Duration(e.rng.IntN(4)) * time.Second)

	before := e.targetRows()
	var start *time.Time
	if e.cur.Value != nil {
		start = e.cur.Value // lookback 0
	}
	covered := 0
	for _, row := range before {
		if start == nil || !row.updated.Before(*start) {
			covered++
		}
	}
	var res kindtest.Result
	var first int
	for attempt := 1; ; attempt++ {
		first = e.src.requestCount()
		e.mu.Lock()
		e.running, e.attempt = true, attempt
		e.mu.Unlock()
		res = kindtest.Run(ctx, e.job, &e.cur, kindtest.Options{Attempt: attempt})
		e.mu.Lock()
		e.running = false
		e.mu.Unlock()
		if res.Err == nil {
			break
		}
		require.False(t, etl.IsPermanent(res.Err), "round %d: %v", r, res.Err)
		require.Less(t, attempt, 50, "round %d: still failing: %v", r, res.Err)
		retries++
		e.src.tick(time.Second)
	}
	// upper is the Date of the attempt's first response, less the lag.
	date, err := http.ParseTime(e.src.response(first).Get("Date"))
	require.NoError(t, err)
	upper := date.Add(-lag)

	m := res.Metrics
	if e.cur.Value != nil {
		require.True(t, e.cur.Value.Before(upper), "round %d: cursor %s not below upper %s", r, e.cur.Value, upper)
	}
	require.LessOrEqual(t, int(m.RecordsRead-m.RecordsWritten), covered,
		"round %d: re-read %d unchanged records, but the window covered %d loaded ones", r, m.RecordsRead-m.RecordsWritten, covered)
	got := e.targetRows()
	latest := e.src.latest()
	for id, row := range got {
		l, ok := latest[id]
		require.True(t, ok, "round %d: target record %d has no source record", r, id)
		require.True(t, row.updated.Before(upper), "round %d: record %d at %s is not below upper %s", r, id, row.updated, upper)
		require.LessOrEqual(t, row.ver, l.Ver)
	}
	for id, l := range latest {
		if l.Updated.Before(upper) {
			require.Equal(t, l.Ver, got[id].ver, "round %d: record %d, modified %s before upper %s, is missing or stale", r, id, l.Updated, upper)
		}
	}
	return retries
}

func TestExactness(t *testing.T) {
	t.Parallel()
	rounds := kindtest.ExactnessRounds(t)
	type mode struct {
		name       string
		query      map[string]string
		pagination map[string]any
	}
	var modes []mode
	for _, p := range paginations {
		if p.name == "keyset" {
			// Since alone cannot get past a page whose records share one second (the kind
			// refuses to loop); writes here come several a second.
			p.pagination = map[string]any{"type": "keyset", "limit": 50, "since_param": "since", "until_param": "until"}
		}
		modes = append(modes, mode(p))
	}
	modes = append(modes,
		mode{"page_asc", nil, map[string]any{"type": "page", "limit": 10, "order": "asc"}},
		mode{"offset_asc", nil, map[string]any{"type": "offset", "limit": 10, "order": "asc"}},
		mode{"link_asc", nil, map[string]any{"type": "link", "limit": 10, "order": "asc"}})
	for _, mode := range modes {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			seed := kindtest.ExactnessSeed(t)
			t.Logf("seed %d (ETL_EXACTNESS_SEED replays it), %d rounds", seed, rounds)
			e := &apiExactness{t: t, rng: rand.New(rand.NewPCG(seed, 2)), b: setup(t),
				src: newFakeSource(time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC))}
			e.src.onRequest = e.onRequest
			for range 40 {
				e.src.put(e.newID(), e.src.now().Add(-time.Duration(e.rng.IntN(600))*time.Second), time.Time{}, false)
			}
			e.job = e.b.job(t, e.src.serve(t)+"/items", map[string]any{"pagination": mode.pagination, "query": mode.query})
			retries := 0
			for r := 1; r <= rounds; r++ {
				retries += e.round(t.Context(), r)
			}
			// Quiet: everything becomes visible and older than upper; one more run.
			e.src.tick(2 * lag)
			res := kindtest.Run(t.Context(), e.job, &e.cur, kindtest.Options{})
			require.NoError(t, res.Err)
			got := e.targetRows()
			latest := e.src.latest()
			require.Len(t, got, len(latest))
			for id, l := range latest {
				require.Equal(t, l.Ver, got[id].ver, "record %d after a quiet run", id)
			}
			t.Logf("%d rounds, %d records, %d attempts retried after a detected shift", rounds, len(latest), retries)
		})
	}
}
