package httpjson

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/etlexec/etlexec/etl"
	"github.com/etlexec/etlexec/internal/kinds/incremental"
	"github.com/etlexec/etlexec/internal/kinds/pgtarget"
)

// run is one attempt's load: the requests, the window every record is checked against, and
// what was seen.
type run struct {
	it     *etl.Item
	cfg    *Config
	p      *Pagination
	w      *incremental.Window
	params map[string]any
	fields []string
	f      fetcher
	loader *pgtarget.PageLoader
	tally  *incremental.Tally
	// keyNames are the key columns, keyFields the record fields feeding them.
	keyNames, keyFields []string

	// seen maps a record's key to the modification time it was loaded with in this run: a
	// record repeated at a page boundary is skipped, one coming back newer under ascending
	// positional paging shows the positions shifted.
	seen map[string]time.Time
	// prev is the previous record's time, for the order check.
	prev *time.Time
	// lowerSent and upperSent name the request's range filters (empty: none was sent);
	// since is keyset's current lower bound as sent.
	lowerSent, upperSent []string
	since                *time.Time
	after                string

	page, offset               int
	links                      map[string]bool
	written, outside, repeated int64
	pages                      int64
}

func newRun(it *etl.Item, cfg *Config, w *incremental.Window, params map[string]any, fields []string, auth string) *run {
	r := &run{it: it, cfg: cfg, p: &cfg.Pagination, w: w, params: params, fields: fields,
		tally: incremental.NewTally(w), seen: map[string]time.Time{}, links: map[string]bool{}}
	for _, k := range cfg.KeyColumns {
		r.keyNames = append(r.keyNames, k)
		r.keyFields = append(r.keyFields, cfg.target().SourceField(k))
	}
	r.f = fetcher{cfg: cfg, auth: auth, source: it.Limiter()}
	return r
}

func (r *run) load(ctx context.Context) error {
	// For modified_date the window's upper is fixed before (or by) the first request; when a
	// request carries it, it must be known first.
	needUpper := r.w.Strategy == etl.StrategyModifiedDate
	if needUpper && (r.cfg.Clock == ClockLocal || len(r.cfg.upperParams) > 0 || r.p.UntilParam != "") {
		if err := r.fixUpper(ctx, nil); err != nil {
			return err
		}
		needUpper = false
	}
	if r.w.Strategy == etl.StrategyLastRun && r.w.Upper != nil {
		// last_run's window ends inclusively at the run's logical start, where the executor
		// moves the cursor: round it up, so the request never leaves out a record before it.
		e := r.cfg.ceil(*r.w.Upper)
		r.w.Upper = &e
	}
	base, err := r.cfg.startURL(r.params, r.w)
	if err != nil {
		return err
	}
	r.f.limiter = limiterFor(base.Host, r.cfg.RateLimit)
	if r.w.Start != nil && len(r.cfg.lowerParams) > 0 {
		r.lowerSent = r.cfg.lowerParams
	}
	if r.w.Upper != nil && len(r.cfg.upperParams) > 0 {
		r.upperSent = r.cfg.upperParams
	}
	for u := r.first(base); u != nil; {
		resp, err := r.f.get(ctx, u)
		r.pages++
		if err != nil {
			return fmt.Errorf("http_json: page %d: %w", r.pages, err)
		}
		if needUpper {
			if err := r.fixUpper(ctx, resp.header); err != nil {
				return err
			}
			needUpper = false
		}
		doc, err := decode(resp.body)
		if err != nil {
			return fmt.Errorf("http_json: page %d: %w", r.pages, err)
		}
		records, err := recordsAt(doc, r.cfg.RecordsPath)
		if err != nil {
			return fmt.Errorf("http_json: page %d: %w", r.pages, err)
		}
		r.it.AddPages(1)
		r.it.Log().Debug().Int64("page", r.pages).Str("host", u.Host).Str("path", u.Path).
			Int("records", len(records)).Msg("http_json page fetched")
		page := pgtarget.Page{Fields: r.fields}
		stop := false
		for i, rec := range records {
			keep, halt, err := r.admit(rec)
			if err != nil {
				return fmt.Errorf("http_json: page %d record %d: %w", r.pages, i+1, err)
			}
			if keep {
				row := make([]any, len(r.fields))
				for j, field := range r.fields {
					row[j], _ = lookup(rec, field)
				}
				page.Rows = append(page.Rows, row)
			}
			if halt {
				stop = true
				break
			}
		}
		if page.Len() > 0 {
			n, err := r.loader.Load(ctx, page)
			if err != nil {
				return fmt.Errorf("http_json: page %d: %w", r.pages, err)
			}
			r.written += n
		}
		r.it.SetProgress(fmt.Sprintf("page %d: %d records loaded", r.pages, r.tally.Read))
		if stop {
			break
		}
		if u, err = r.next(u, records, doc, resp.header); err != nil {
			return fmt.Errorf("http_json: after page %d: %w", r.pages, err)
		}
	}
	r.it.AddRead(r.tally.Read)
	r.it.AddWritten(r.written)
	r.tally.Finish(r.it, r.written, r.how())
	return nil
}

// fixUpper fixes modified_date's upper: the API's clock from a response's Date header (a HEAD
// request when header is nil) or the local clock, less the safety lag, rounded down to what a
// request can say.
func (r *run) fixUpper(ctx context.Context, header http.Header) error {
	clock, why := time.Now(), "local clock"
	if r.cfg.Clock == ClockServer {
		if header == nil {
			base, err := r.cfg.startURL(r.params, r.w)
			if err != nil {
				return err
			}
			r.f.limiter = limiterFor(base.Host, r.cfg.RateLimit)
			h, err := r.f.head(ctx, base)
			if err != nil {
				return fmt.Errorf("http_json: read the API's clock: %w", err)
			}
			header = h
		}
		if d, err := http.ParseTime(header.Get("Date")); err == nil {
			clock, why = d, "the API's Date header"
		} else {
			why = "local clock: the API sent no Date header"
		}
	}
	u := r.cfg.floor(*r.w.SetUpper(clock, r.cfg.SafetyLagDuration(), why))
	r.w.Upper = &u
	return nil
}

// admit decides about one record: keep it (load), skip it, or halt (nothing after it in this
// order belongs to the window). Records outside the window that a range filter of the request
// should have excluded fail the item as DATA, unless allow_out_of_window.
func (r *run) admit(rec map[string]any) (keep, halt bool, err error) {
	v, ok := lookup(rec, r.cfg.ModifiedField)
	if r.cfg.ModifiedField == "" || !ok || v == nil {
		r.tally.AddUntimed()
		return true, false, nil
	}
	t, err := r.cfg.parseTime(v)
	if err != nil {
		return false, false, etl.Permanent(etl.DataError(fmt.Errorf("modified_field %s: %w", r.cfg.ModifiedField, err)))
	}
	key := r.keyOf(rec)
	if prev, ok := r.seen[key]; ok {
		if prev.Equal(t) {
			r.repeated++ // the page boundary, or a shift under descending order
			return false, false, nil
		}
		if r.positional() && r.p.Order == OrderAsc && t.After(prev) {
			// It moved from where it was read to the end, so everything after it moved one
			// place up: one record may have slipped past a page boundary unread.
			return false, false, etl.APIError(fmt.Errorf("pagination type %s: record %s came back modified (%s, read at %s) while paging ascending: a record may have shifted past a page boundary unread, so the item is retried; pagination.order desc or type keyset avoid this",
				r.p.Type, key, stamp(t), stamp(prev)))
		}
	}
	if r.since != nil && t.Before(*r.since) {
		if err := r.ignored([]string{r.p.SinceParam}, t, "before", *r.since); err != nil {
			return false, false, err
		}
		r.outside++
		return false, false, nil
	}
	if !r.w.Contains(t) {
		r.outside++
		if r.below(t) {
			if err := r.ignored(r.lowerSent, t, "before the window's start", *r.w.Start); err != nil {
				return false, false, err
			}
			if r.positional() && r.p.Order == OrderAsc {
				// Its moving would shift the window's records too: watch for it.
				r.seen[key] = t
			}
			return false, r.p.Order == OrderDesc, nil
		}
		sent := r.upperSent
		if r.p.Type == PaginationKeyset && r.p.UntilParam != "" && r.w.Upper != nil {
			sent = append(sent, r.p.UntilParam)
		}
		if err := r.ignored(sent, t, "at or past upper", *r.w.Upper); err != nil {
			return false, false, err
		}
		return false, r.p.Type == PaginationKeyset, nil
	}
	// Within the window the records must come in the declared order: the early stop and the
	// keyset's next page rely on it.
	if r.prev != nil {
		if r.p.Order == OrderAsc && t.Before(*r.prev) || r.p.Order == OrderDesc && t.After(*r.prev) {
			return false, false, etl.Permanent(etl.DataError(fmt.Errorf("pagination.order %s: the API returned %s %s after %s: it does not sort records that way",
				r.p.Order, r.cfg.ModifiedField, stamp(t), stamp(*r.prev))))
		}
	}
	r.prev = &t
	r.seen[key] = t
	r.tally.TrackKey(r.tally.Add(t), r.keyNames, func() map[string]any {
		m := make(map[string]any, len(r.keyFields))
		for i, f := range r.keyFields {
			m[r.keyNames[i]], _ = lookup(rec, f)
		}
		return m
	})
	return true, false, nil
}

// ignored is the error for a record a range filter of the request should have excluded, nil
// when no filter was sent or the job allows out-of-window records.
func (r *run) ignored(filters []string, t time.Time, where string, bound time.Time) error {
	if len(filters) == 0 || r.cfg.AllowOutOfWindow {
		return nil
	}
	return etl.Permanent(etl.DataError(fmt.Errorf("the API ignored its range filter %s: it returned a record with %s %s, %s %s; fix the parameter, or set allow_out_of_window if the API pads its answers",
		strings.Join(filters, ", "), r.cfg.ModifiedField, stamp(t), where, stamp(bound))))
}

func (r *run) below(t time.Time) bool {
	if r.w.Start == nil {
		return false
	}
	if r.w.Strategy == etl.StrategyLastRun {
		return !t.After(*r.w.Start)
	}
	return t.Before(*r.w.Start)
}

func (r *run) positional() bool {
	return r.p.Type != PaginationKeyset && r.p.Type != PaginationNone
}

// keyOf identifies a record by its key fields.
func (r *run) keyOf(rec map[string]any) string {
	parts := make([]string, len(r.keyFields))
	for i, f := range r.keyFields {
		v, _ := lookup(rec, f)
		parts[i] = fmt.Sprint(v)
	}
	return strings.Join(parts, "\x00")
}

// first returns the first page's URL.
func (r *run) first(base *url.URL) *url.URL {
	u := *base
	q := u.Query()
	if r.p.Limit > 0 {
		q.Set(r.p.LimitParam, strconv.Itoa(r.p.Limit))
	}
	switch r.p.Type {
	case PaginationPage:
		r.page = *r.p.FirstPage
		q.Set(r.p.PageParam, strconv.Itoa(r.page))
	case PaginationOffset:
		q.Set(r.p.OffsetParam, "0")
	case PaginationKeyset:
		if r.w.Start != nil {
			r.since = r.w.Start
			q.Set(r.p.SinceParam, r.cfg.format(r.since))
		}
		if r.p.UntilParam != "" && r.w.Upper != nil {
			q.Set(r.p.UntilParam, r.cfg.format(r.w.Upper))
		}
	}
	u.RawQuery = q.Encode()
	r.links[u.String()] = true
	return &u
}

// next returns the URL of the page after cur, or nil when cur was the last.
func (r *run) next(cur *url.URL, records []map[string]any, doc any, header http.Header) (*url.URL, error) {
	with := func(kv ...string) *url.URL {
		u := *cur
		q := u.Query()
		for i := 0; i < len(kv); i += 2 {
			q.Set(kv[i], kv[i+1])
		}
		u.RawQuery = q.Encode()
		return &u
	}
	n := len(records)
	switch r.p.Type {
	case PaginationKeyset:
		if n < r.p.Limit {
			return nil, nil
		}
		last := records[n-1]
		v, _ := lookup(last, r.cfg.ModifiedField)
		t, err := r.cfg.parseTime(v)
		if err != nil {
			return nil, etl.Permanent(etl.DataError(fmt.Errorf("keyset: the page's last record has no modified_field %s: %w", r.cfg.ModifiedField, err)))
		}
		since := r.cfg.floor(t)
		after := ""
		if r.p.AfterParam != "" {
			kv, _ := lookup(last, r.keyFields[0])
			after = fmt.Sprint(kv)
		}
		if r.since != nil && since.Equal(*r.since) && after == r.after {
			return nil, etl.Permanent(etl.DataError(fmt.Errorf("keyset: a whole page of %d records shares %s %s (as time_format %s says it), so the next page would be the same; raise pagination.limit, use time_format rfc3339nano or set pagination.after_param",
				r.p.Limit, r.cfg.ModifiedField, r.cfg.format(&since), r.cfg.TimeFormat)))
		}
		r.since, r.after = &since, after
		for k, seen := range r.seen {
			if seen.Before(since) {
				delete(r.seen, k) // nothing before the new lower bound can come back unchanged
			}
		}
		kv := []string{r.p.SinceParam, r.cfg.format(&since)}
		if r.p.AfterParam != "" {
			kv = append(kv, r.p.AfterParam, after)
		}
		return with(kv...), nil
	case PaginationPage:
		if n < r.p.Limit {
			return nil, nil
		}
		r.page++
		return with(r.p.PageParam, strconv.Itoa(r.page)), nil
	case PaginationOffset:
		if n < r.p.Limit {
			return nil, nil
		}
		r.offset += n
		return with(r.p.OffsetParam, strconv.Itoa(r.offset)), nil
	case PaginationCursor:
		v, _ := lookup(doc, r.p.CursorPath)
		var token string
		switch v := v.(type) {
		case nil:
		case string:
			token = v
		case json.Number:
			token = v.String()
		default:
			return nil, etl.Permanent(etl.DataError(fmt.Errorf("pagination.cursor_path %q: %s, want a string or number", r.p.CursorPath, jsonKind(v))))
		}
		if token == "" {
			return nil, nil
		}
		if r.links["cursor:"+token] {
			return nil, etl.Permanent(etl.DataError(fmt.Errorf("pagination: the API returned cursor %q twice", token)))
		}
		r.links["cursor:"+token] = true
		return with(r.p.CursorParam, token), nil
	case PaginationLink:
		ref := nextLink(header.Values("Link"))
		if ref == "" {
			return nil, nil
		}
		u, err := cur.Parse(ref)
		if err != nil {
			return nil, etl.Permanent(etl.APIError(fmt.Errorf("pagination: Link rel=next %q: %w", ref, err)))
		}
		if u.Host != cur.Host || u.Scheme != cur.Scheme {
			// The credential must not follow a link to another server.
			return nil, etl.Permanent(etl.APIError(fmt.Errorf("pagination: Link rel=next leads to %s://%s, not %s://%s", u.Scheme, u.Host, cur.Scheme, cur.Host)))
		}
		if r.links[u.String()] {
			return nil, etl.Permanent(etl.APIError(fmt.Errorf("pagination: Link rel=next returns to %s", u.Redacted())))
		}
		r.links[u.String()] = true
		return u, nil
	}
	return nil, nil
}

// how says how the records came, for the note.
func (r *run) how() string {
	var parts []string
	by := "by " + r.p.Type + " pagination"
	if r.p.Type == PaginationKeyset {
		by = "by keyset on (" + r.cfg.ModifiedField + ", " + strings.Join(r.keyFields, ", ") + ")"
	} else if r.p.Order != "" {
		by += ", " + r.p.Order
	}
	parts = append(parts, "in "+strconv.FormatInt(r.pages, 10)+" pages "+by)
	if r.repeated > 0 {
		parts = append(parts, strconv.FormatInt(r.repeated, 10)+" repeated at page boundaries skipped")
	}
	if r.outside > 0 {
		parts = append(parts, strconv.FormatInt(r.outside, 10)+" outside the window skipped")
	}
	return strings.Join(parts, "; ")
}

func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }
