package httpjson_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"
)

// version is one state of one record of the fake source.
type version struct {
	ID      int
	Name    string
	Ver     int
	Deleted bool
	Updated time.Time
	// Visible is when the version can be read: a writer committing late makes it later than
	// Updated.
	Visible time.Time
}

func (v version) json() map[string]any {
	return map[string]any{
		"id": v.ID, "name": v.Name, "ver": v.Ver, "deleted": v.Deleted,
		"updated_at": v.Updated.UTC().Format(time.RFC3339),
		"nested":     map[string]any{"score": float64(v.ID) * 1.5},
	}
}

// fakeSource is a REST API over a record store with a logical clock (the Date it sends), whose
// records keep every version. It serves every pagination style on /items:
//
//	order=asc|desc              by (updated_at, id); asc by default
//	since=T [after=ID]          updated_at >= T, or (updated_at, id) > (T, ID) with after
//	until=T                     updated_at < T
//	limit=N and page=P (from 1) | offset=O | cursor=O (the next offset at meta.next) | link (Link rel=next)
//
// under {"data": {"items": [...]}}. Before serving a request it calls onRequest, which may
// mutate the store (through the methods, which lock).
type fakeSource struct {
	mu        sync.Mutex
	clock     time.Time
	versions  map[int][]version // by id, oldest first
	requests  []*http.Request
	dates     []time.Time                  // the Date sent with each response
	onRequest func(r *http.Request, n int) // n counts requests from 1
	// ignoreRange makes the API disregard since and until, as some do silently.
	ignoreRange bool
}

func newFakeSource(clock time.Time) *fakeSource {
	return &fakeSource{clock: clock.UTC().Truncate(time.Second), versions: map[int][]version{}}
}

// serve starts the source on loopback, closed when the test ends.
func (s *fakeSource) serve(t *testing.T) string {
	t.Helper()
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	return srv.URL
}

func (s *fakeSource) now() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.clock
}

// tick advances the clock.
func (s *fakeSource) tick(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.clock = s.clock.Add(d)
}

// put writes a new version of id modified at updated, visible from visible (zero: at once).
func (s *fakeSource) put(id int, updated, visible time.Time, deleted bool) version {
	s.mu.Lock()
	defer s.mu.Unlock()
	if visible.IsZero() {
		visible = s.clock
	}
	ver := 1
	if vs := s.versions[id]; len(vs) > 0 {
		ver = vs[len(vs)-1].Ver + 1
	}
	v := version{ID: id, Name: fmt.Sprintf("record %d v%d", id, ver), Ver: ver, Deleted: deleted,
		Updated: updated.UTC(), Visible: visible.UTC()}
	s.versions[id] = append(s.versions[id], v)
	return v
}

// visibleAt returns each record's version readable at t: the latest made visible by then.
func (s *fakeSource) visibleAt(t time.Time) []version {
	var out []version
	for _, vs := range s.versions {
		// Versions are kept in Ver order: the newest visible one is the first from the end.
		for i := len(vs) - 1; i >= 0; i-- {
			if !vs[i].Visible.After(t) {
				out = append(out, vs[i])
				break
			}
		}
	}
	return out
}

// latest returns every record's latest version, visible or not.
func (s *fakeSource) latest() map[int]version {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[int]version{}
	for id, vs := range s.versions {
		out[id] = vs[len(vs)-1]
	}
	return out
}

func (s *fakeSource) requestCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.requests)
}

func (s *fakeSource) request(i int) *http.Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.requests[i]
}

// response returns the headers the i-th response carried that tests look at.
func (s *fakeSource) response(i int) http.Header {
	s.mu.Lock()
	defer s.mu.Unlock()
	return http.Header{"Date": {s.dates[i].Format(http.TimeFormat)}}
}

func (s *fakeSource) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.requests = append(s.requests, r.Clone(context.Background()))
	n, hook := len(s.requests), s.onRequest
	s.mu.Unlock()
	if hook != nil {
		hook(r, n)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	w.Header().Set("Date", s.clock.Format(http.TimeFormat))
	s.dates = append(s.dates, s.clock)
	if r.Method == http.MethodHead {
		return
	}
	if r.URL.Path != "/items" {
		http.NotFound(w, r)
		return
	}
	q := r.URL.Query()
	parseT := func(name string) (time.Time, bool) {
		v := q.Get(name)
		if v == "" || s.ignoreRange {
			return time.Time{}, false
		}
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			http.Error(w, name+": "+err.Error(), http.StatusBadRequest)
		}
		return t, err == nil
	}
	since, hasSince := parseT("since")
	until, hasUntil := parseT("until")
	after, hasAfter := 0, q.Get("after") != ""
	if hasAfter {
		after, _ = strconv.Atoi(q.Get("after"))
	}
	var recs []version
	for _, v := range s.visibleAt(s.clock) {
		switch {
		case hasSince && hasAfter && (v.Updated.Before(since) || v.Updated.Equal(since) && v.ID <= after):
		case hasSince && !hasAfter && v.Updated.Before(since):
		case hasUntil && !v.Updated.Before(until):
		default:
			recs = append(recs, v)
		}
	}
	desc := q.Get("order") == "desc"
	slices.SortFunc(recs, func(a, b version) int {
		c := a.Updated.Compare(b.Updated)
		if c == 0 {
			c = a.ID - b.ID
		}
		if desc {
			return -c
		}
		return c
	})
	limit, _ := strconv.Atoi(q.Get("limit"))
	if limit <= 0 {
		limit = len(recs) + 1
	}
	from := 0
	switch {
	case q.Has("page"):
		p, _ := strconv.Atoi(q.Get("page"))
		from = (max(p, 1) - 1) * limit
	case q.Has("offset"):
		from, _ = strconv.Atoi(q.Get("offset"))
	case q.Has("cursor"):
		from, _ = strconv.Atoi(q.Get("cursor"))
	}
	from = min(from, len(recs))
	to := min(from+limit, len(recs))
	items := make([]map[string]any, 0, to-from)
	for _, v := range recs[from:to] {
		items = append(items, v.json())
	}
	meta := map[string]any{"next": nil}
	if to < len(recs) {
		meta["next"] = strconv.Itoa(to)
		if !q.Has("offset") && !q.Has("cursor") {
			next := r.URL.Query()
			next.Set("page", strconv.Itoa(from/limit+2))
			w.Header().Add("Link", fmt.Sprintf(`</items?%s>; rel="next", </items?page=1>; rel="first"`, next.Encode()))
		}
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"data": map[string]any{"items": items}, "meta": meta})
}
