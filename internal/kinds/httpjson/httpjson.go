// Package httpjson owns the built-in "http_json" kind, which pages through a JSON REST
// API and upserts the records of each page into a table of the job's target database
// with the shared loader [pgtarget.PageLoader]. It uses only the etl SDK, the shared kind
// helpers (incremental, pgtarget) and the standard library, exactly as a team's own kind
// would.
//
// The request URL and query parameters are Go text/templates over
//
//	.params        the item's params (an object)
//	.cursor_start  the window's start (the cursor − lookback) in time_format, "" when open
//	.cursor_end    the window's end: upper for modified_date, the run's logical start for
//	               last_run, "" when open
//
// for example "https://api.example.com/v1/{{.params.region | pathescape}}/orders" with
// query {"updated_since": "{{.cursor_start}}"}. A query parameter that renders empty is
// left out, so the first load sends no updated_since at all.
//
// For modified_date the window is [cursor − lookback, upper), fixed when the item starts:
// upper is the API server's clock (the Date header) or the local one, less safety_lag, so
// records changed while the item runs are left to the next run and the cursor never passes
// upper. Every record is checked against the window: one outside it that the request's own
// range filter should have excluded fails the item as DATA naming that filter (an API that
// silently ignores its range operator would otherwise be re-read whole on every run).
//
// Pagination "keyset" pages by the watermark itself (since = the last record's time,
// inclusive, the boundary's records deduplicated by key; with after_param a compound
// (time, key) keyset), bounded above by upper: records that move while the item pages are
// read again later, never skipped. Page, offset, cursor-token and Link pagination count
// positions, which shift when records move; they are for APIs that cannot filter by range.
// With order desc a shift re-reads a record instead of skipping one; with order asc the kind
// watches for a record it already read coming back newer (the sign of a shift) and fails the
// item, to be retried, rather than lose the record it may have skipped. Deletions on the
// source are not seen by any incremental load; tombstones (soft deletes) are records.
//
// Each HTTP page counts as one page. For the modified_date strategy the greatest
// modified_field value loaded is the item's watermark.
package httpjson

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/url"
	"os"
	"strconv"
	"strings"
	"text/template"
	"time"

	"github.com/etlexec/etlexec/etl"
	"github.com/etlexec/etlexec/internal/kinds/incremental"
	"github.com/etlexec/etlexec/internal/kinds/pgtarget"
)

// Kind is the kind name the handler is registered under (dw_etl_jobs.kind).
const Kind = "http_json"

// Config defaults and limits.
const (
	TimeoutDefault     = 30 * time.Second
	AuthHeaderDefault  = "Authorization"
	PageParamDefault   = "page"
	LimitParamDefault  = "limit"
	OffsetParamDefault = "offset"
	CursorParamDefault = "cursor"
	FirstPageDefault   = 1
	// SafetyLagDefault leaves the API's most recent changes to the next run: writes that are
	// not yet visible (an index that lags its database, a transaction committing) usually are
	// within seconds.
	SafetyLagDefault = 5 * time.Second

	// MaxResponseBytes bounds one response body held in memory.
	MaxResponseBytes = 64 << 20
	// maxErrorBody is how much of an error response is read for the error message
	// (etl.HTTPError shortens it further).
	maxErrorBody = 4 << 10
)

// Pagination styles (Pagination.Type).
const (
	PaginationNone   = "none"
	PaginationPage   = "page"
	PaginationOffset = "offset"
	PaginationCursor = "cursor"
	PaginationLink   = "link"
	PaginationKeyset = "keyset"
)

// Orders the API returns records in (Pagination.Order), by modified_field.
const (
	OrderAsc  = "asc"
	OrderDesc = "desc"
)

// Clocks upper can come from (Config.Clock).
const (
	ClockServer = "server"
	ClockLocal  = "local"
)

// Time formats for window times in requests (Config.TimeFormat).
const (
	TimeRFC3339     = "rfc3339"     // to the second, rounded down
	TimeRFC3339Nano = "rfc3339nano" // as precise as the time
	TimeUnix        = "unix"        // seconds since 1970, rounded down
	TimeUnixMilli   = "unix_ms"     // milliseconds since 1970, rounded down
)

// Register adds the http_json kind to r and declares its config.
func Register(r *etl.Registry) {
	r.Register(Kind, Handler)
	etl.DeclareConfig[Config](r, Kind)
}

// Config is the job's configuration (dw_etl_jobs.config).
type Config struct {
	// BaseURL is a template (see the package documentation) rendering an http or
	// https URL; it may carry a query string of its own.
	BaseURL string `json:"base_url"`
	// Query maps query parameter names to templates. A parameter that renders empty
	// is omitted.
	Query map[string]string `json:"query"`
	// RecordsPath is the dot path (object keys, or array indexes) to the records
	// array in the response; empty means the response is the array. A JSON null
	// there is an empty page.
	RecordsPath string `json:"records_path"`
	// Pagination says how to reach the next page; absent means one request.
	Pagination Pagination `json:"pagination"`
	// AuthHeader is the header carrying the credential. Defaults to
	// AuthHeaderDefault.
	AuthHeader string `json:"auth_header"`
	// AuthEnv names the environment variable holding the header's whole value (such
	// as "Bearer xyz"). Empty means no credential is sent.
	AuthEnv string `json:"auth_env"`
	// RateLimit is the requests per second allowed to the source host, shared by all
	// items of this process; 0 means unlimited. Jobs naming different limits for one
	// host get the lowest.
	RateLimit float64 `json:"rate_limit"`
	// Timeout is a Go duration bounding one request, body included. Defaults to
	// TimeoutDefault.
	Timeout string `json:"timeout"`
	// ModifiedField is the dot path of each record's modification time (RFC 3339, or a
	// number with time_format unix or unix_ms). Required for modified_date and keyset
	// pagination; a record without one is loaded but not observed.
	ModifiedField string `json:"modified_field"`
	// TimeFormat renders window times in requests (templates and keyset parameters):
	// rfc3339 (the default), rfc3339nano, unix or unix_ms. Times are rounded down, so a
	// request asks for a little more, never less.
	TimeFormat string `json:"time_format"`
	// Clock is where upper's clock comes from: ClockServer (the default: the Date header of
	// the API's first response) or ClockLocal.
	Clock string `json:"clock"`
	// AllowOutOfWindow skips records outside the window instead of failing the item, for
	// APIs that pad their answers with records the range filter should exclude.
	AllowOutOfWindow bool `json:"allow_out_of_window"`
	// Lookback (default 0) and SafetyLag (default SafetyLagDefault) shape the window; see
	// incremental.WindowConfig.
	incremental.WindowConfig
	// TargetTable, KeyColumns and Columns (target column → record field dot path,
	// required) say where records go; see pgtarget.Target.
	TargetTable string            `json:"target_table"`
	KeyColumns  []string          `json:"key_columns"`
	Columns     map[string]string `json:"columns"`

	timeout  time.Duration
	baseTmpl *template.Template
	queryTmp map[string]*template.Template
	// lowerParams and upperParams name the request parts whose templates carry the window's
	// bounds: the API's range filters, which the records must respect.
	lowerParams, upperParams []string
}

// Pagination configures how pages are requested and when to stop.
type Pagination struct {
	// Type is none, page, offset, cursor, link or keyset.
	//   - keyset: since_param = the window's start, then the last record's modification time
	//     (inclusive; the records seen again at it are skipped), with until_param = upper
	//     when set and after_param = the last record's key when set; the API must return
	//     records ascending by modified_field; stops at a page with fewer than limit records
	//     or at a record at or past upper;
	//   - page: page_param = first_page, first_page+1, …; stops at a page with fewer
	//     than limit records;
	//   - offset: offset_param = 0, then the records so far; stops likewise;
	//   - cursor: cursor_param = the token found at cursor_path in the previous
	//     response; stops when it is absent, null or empty;
	//   - link: the URL in the response's Link header with rel="next" (same host and
	//     scheme only); stops when there is none.
	Type string `json:"type"`
	// PageParam defaults to PageParamDefault; FirstPage to FirstPageDefault.
	PageParam string `json:"page_param"`
	FirstPage *int   `json:"first_page"`
	// LimitParam (default LimitParamDefault) carries Limit, the page size. Limit is
	// required for page, offset and keyset, and sent with cursor and link when set.
	LimitParam string `json:"limit_param"`
	Limit      int    `json:"limit"`
	// OffsetParam defaults to OffsetParamDefault.
	OffsetParam string `json:"offset_param"`
	// CursorParam defaults to CursorParamDefault; CursorPath is required for cursor.
	CursorParam string `json:"cursor_param"`
	CursorPath  string `json:"cursor_path"`
	// SinceParam (required for keyset) carries the lower bound (>=), UntilParam (optional)
	// the upper bound (<), AfterParam (optional, one key column only) the key of the last
	// record, for APIs whose keyset is (time, key).
	SinceParam string `json:"since_param"`
	UntilParam string `json:"until_param"`
	AfterParam string `json:"after_param"`
	// Order is how page, offset, cursor and link pagination return records by
	// modified_field: OrderDesc (newest first: a record moving while the item pages makes
	// the next page repeat one, never skip one) or OrderAsc (a move can skip a record; the
	// item then fails and is retried). Required for page, offset and link with strategy
	// modified_date; keyset is ascending by definition.
	Order string `json:"order"`
}

// funcs are the functions templates may call besides text/template's built-ins
// (urlquery among them).
var funcs = template.FuncMap{"pathescape": url.PathEscape, "queryescape": url.QueryEscape}

// Validate checks the config for strategy s, fills defaults and parses the templates; it runs
// at jobs apply and at the start of every item.
func (c *Config) Validate(s etl.Strategy) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("http_json config: "+format, args...)
	}
	if strings.TrimSpace(c.BaseURL) == "" {
		return bad("base_url: required")
	}
	var err error
	if c.baseTmpl, err = parseTemplate("base_url", c.BaseURL); err != nil {
		return bad("%v", err)
	}
	c.lowerParams, c.upperParams = nil, nil
	c.noteBounds("base_url", c.BaseURL)
	c.queryTmp = make(map[string]*template.Template, len(c.Query))
	for name, text := range c.Query {
		if name == "" {
			return bad("query: empty parameter name")
		}
		if c.queryTmp[name], err = parseTemplate("query."+name, text); err != nil {
			return bad("%v", err)
		}
		c.noteBounds(name, text)
	}
	c.timeout = TimeoutDefault
	if c.Timeout != "" {
		d, err := time.ParseDuration(c.Timeout)
		if err != nil || d <= 0 {
			return bad("timeout %q: want a positive Go duration such as \"30s\"", c.Timeout)
		}
		c.timeout = d
	}
	if math.IsNaN(c.RateLimit) || math.IsInf(c.RateLimit, 0) || c.RateLimit < 0 {
		return bad("rate_limit %v: want requests per second >= 0", c.RateLimit)
	}
	if c.AuthHeader == "" {
		c.AuthHeader = AuthHeaderDefault
	}
	if !validHeaderName(c.AuthHeader) {
		return bad("auth_header %q: not a valid header name", c.AuthHeader)
	}
	switch c.TimeFormat {
	case "":
		c.TimeFormat = TimeRFC3339
	case TimeRFC3339, TimeRFC3339Nano, TimeUnix, TimeUnixMilli:
	default:
		return bad("time_format %q: want %s, %s, %s or %s", c.TimeFormat, TimeRFC3339, TimeRFC3339Nano, TimeUnix, TimeUnixMilli)
	}
	switch c.Clock {
	case "":
		c.Clock = ClockServer
	case ClockServer, ClockLocal:
	default:
		return bad("clock %q: want %s or %s", c.Clock, ClockServer, ClockLocal)
	}
	if err := c.WindowConfig.Validate(0, SafetyLagDefault); err != nil {
		return bad("%v", err)
	}
	if c.ModifiedField == "" && (s == etl.StrategyModifiedDate || c.Pagination.Type == PaginationKeyset) {
		return bad("modified_field: required for strategy %s and keyset pagination", etl.StrategyModifiedDate)
	}
	if len(c.Columns) == 0 {
		return bad("columns: required (target column → record field)")
	}
	if err := c.target().Validate(); err != nil {
		return fmt.Errorf("http_json config: %w", err)
	}
	return c.Pagination.validate(s, len(c.KeyColumns), bad)
}

// noteBounds records a request part whose template uses a window bound.
func (c *Config) noteBounds(name, text string) {
	if strings.Contains(text, ".cursor_start") {
		c.lowerParams = append(c.lowerParams, name)
	}
	if strings.Contains(text, ".cursor_end") {
		c.upperParams = append(c.upperParams, name)
	}
}

func (p *Pagination) validate(s etl.Strategy, keys int, bad func(string, ...any) error) error {
	if p.Type == "" {
		p.Type = PaginationNone
	}
	p.PageParam = cmpOr(p.PageParam, PageParamDefault)
	p.LimitParam = cmpOr(p.LimitParam, LimitParamDefault)
	p.OffsetParam = cmpOr(p.OffsetParam, OffsetParamDefault)
	p.CursorParam = cmpOr(p.CursorParam, CursorParamDefault)
	if p.FirstPage == nil {
		p.FirstPage = new(FirstPageDefault)
	}
	if p.Limit < 0 {
		return bad("pagination.limit %d: want >= 0", p.Limit)
	}
	switch p.Order {
	case "", OrderAsc, OrderDesc:
	default:
		return bad("pagination.order %q: want %s or %s", p.Order, OrderAsc, OrderDesc)
	}
	if p.Type != PaginationKeyset && (p.SinceParam != "" || p.UntilParam != "" || p.AfterParam != "") {
		return bad("pagination.since_param, until_param and after_param: for pagination type keyset only")
	}
	switch p.Type {
	case PaginationNone, PaginationLink, PaginationCursor:
	case PaginationPage, PaginationOffset:
		if p.Limit == 0 {
			return bad("pagination.limit: required for pagination type %s (a shorter page is the last)", p.Type)
		}
	case PaginationKeyset:
		switch {
		case p.Limit == 0:
			return bad("pagination.limit: required for pagination type keyset (a shorter page is the last)")
		case p.SinceParam == "":
			return bad("pagination.since_param: required for pagination type keyset (the parameter taking the lower bound)")
		case p.Order == OrderDesc:
			return bad("pagination.order desc: keyset pages ascending by modified_field")
		case p.AfterParam != "" && keys != 1:
			return bad("pagination.after_param: needs exactly one key column, not %d", keys)
		}
		p.Order = OrderAsc
	default:
		return bad("pagination.type %q: want none, page, offset, cursor, link or keyset", p.Type)
	}
	if p.Type == PaginationCursor && p.CursorPath == "" {
		return bad("pagination.cursor_path: required for pagination type cursor")
	}
	if s == etl.StrategyModifiedDate && p.Order == "" && (p.Type == PaginationPage || p.Type == PaginationOffset || p.Type == PaginationLink) {
		return bad("pagination.order: required for pagination type %s with strategy %s: %s (safe when records move while paging) or %s (fails the item when it sees one move); keyset is exact where the API filters by range",
			p.Type, s, OrderDesc, OrderAsc)
	}
	return nil
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func parseTemplate(name, text string) (*template.Template, error) {
	t, err := template.New(name).Funcs(funcs).Option("missingkey=error").Parse(text)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return t, nil
}

// validHeaderName reports whether s is an RFC 9110 token.
func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range []byte(s) {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

func (c *Config) target() pgtarget.Target {
	return pgtarget.Target{Table: c.TargetTable, KeyColumns: c.KeyColumns, Columns: c.Columns}
}

// Handler runs one attempt of one http_json item; see the package documentation.
func Handler(ctx context.Context, it *etl.Item) error {
	cfg, err := etl.LoadConfig[Config](it)
	if err != nil {
		return err
	}
	var params map[string]any
	if err := it.Params(&params); err != nil {
		return etl.Permanent(err)
	}
	if params == nil {
		params = map[string]any{}
	}
	w := incremental.NewWindow(it, cfg.LookbackDuration())
	if w.Start != nil {
		s := cfg.floor(*w.Start) // what the request can say: asking for a little more is harmless
		w.Start = &s
	}
	if _, err := cfg.startURL(params, w); err != nil {
		return err // a template that cannot render fails before anything else
	}
	if it.Target() == nil {
		return etl.Permanent(etl.DataError(errors.New("http_json: the job has no target database")))
	}
	var auth string
	if cfg.AuthEnv != "" {
		v, ok := os.LookupEnv(cfg.AuthEnv)
		if !ok || v == "" {
			return etl.Permanent(etl.SystemError(fmt.Errorf("http_json: environment variable %s (auth_env) is not set", cfg.AuthEnv)))
		}
		auth = v
	}
	fields := sourceFields(cfg.Columns)
	// The target table and its columns are checked before the first request.
	loader, err := pgtarget.NewPageLoader(ctx, it.Target(), cfg.target())
	if err == nil {
		_, err = loader.Load(ctx, pgtarget.Page{Fields: fields})
	}
	if err != nil {
		return fmt.Errorf("http_json: %w", err)
	}
	r := newRun(it, cfg, w, params, fields, auth)
	r.loader = loader
	if err := r.load(ctx); err != nil {
		return err
	}
	m := it.Metrics()
	it.Log().Debug().Int64("records_read", m.RecordsRead).Int64("records_written", m.RecordsWritten).
		Int64("pages", m.Pages).Msg("http_json item loaded")
	return nil
}

// startURL renders the base URL and query for the item's window.
func (c *Config) startURL(params map[string]any, w *incremental.Window) (*url.URL, error) {
	data := map[string]any{
		"params":       params,
		"cursor_start": c.format(w.Start),
		"cursor_end":   c.format(w.Upper),
	}
	bad := func(err error) error { return etl.Permanent(etl.DataError(fmt.Errorf("http_json: %w", err))) }
	render := func(t *template.Template) (string, error) {
		var b strings.Builder
		if err := t.Execute(&b, data); err != nil {
			return "", err
		}
		return b.String(), nil
	}
	raw, err := render(c.baseTmpl)
	if err != nil {
		return nil, bad(err)
	}
	u, err := url.Parse(strings.TrimSpace(raw))
	if err != nil {
		return nil, bad(fmt.Errorf("base_url renders an invalid URL: %w", err))
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return nil, bad(fmt.Errorf("base_url renders %q: want an http or https URL with a host", u.Redacted()))
	}
	q := u.Query()
	for name, t := range c.queryTmp {
		v, err := render(t)
		if err != nil {
			return nil, bad(err)
		}
		if v != "" {
			q.Set(name, v)
		}
	}
	u.RawQuery = q.Encode()
	return u, nil
}

// format renders a window time for a request in TimeFormat, rounded down; "" when open.
func (c *Config) format(t *time.Time) string {
	if t == nil {
		return ""
	}
	u := t.UTC()
	switch c.TimeFormat {
	case TimeRFC3339Nano:
		return u.Format(time.RFC3339Nano)
	case TimeUnix:
		return strconv.FormatInt(u.Unix(), 10)
	case TimeUnixMilli:
		return strconv.FormatInt(u.UnixMilli(), 10)
	}
	return u.Format(time.RFC3339) // truncates to the second
}

// floor rounds t down to what TimeFormat can say.
func (c *Config) floor(t time.Time) time.Time {
	switch c.TimeFormat {
	case TimeRFC3339Nano:
		return t.UTC()
	case TimeUnixMilli:
		return time.UnixMilli(t.UnixMilli()).UTC()
	}
	return time.Unix(t.Unix(), 0).UTC()
}

// ceil rounds t up to what TimeFormat can say.
func (c *Config) ceil(t time.Time) time.Time {
	if f := c.floor(t); f.Before(t) {
		switch c.TimeFormat {
		case TimeUnixMilli:
			return f.Add(time.Millisecond)
		case TimeRFC3339, TimeUnix:
			return f.Add(time.Second)
		}
	}
	return t.UTC()
}

// parseTime reads a record's modification time: an RFC 3339 string, or a number of seconds
// or milliseconds with time_format unix or unix_ms.
func (c *Config) parseTime(v any) (time.Time, error) {
	switch v := v.(type) {
	case string:
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			return time.Time{}, err
		}
		return t.UTC(), nil
	case json.Number:
		switch c.TimeFormat {
		case TimeUnix, TimeUnixMilli:
			f, err := v.Float64()
			if err != nil {
				return time.Time{}, err
			}
			if c.TimeFormat == TimeUnixMilli {
				f /= 1000
			}
			sec, frac := math.Modf(f)
			return time.Unix(int64(sec), int64(frac*1e9)).UTC(), nil
		}
	}
	return time.Time{}, fmt.Errorf("%s, want an RFC 3339 string (or a number with time_format unix or unix_ms)", jsonKind(v))
}

// sourceFields lists the record fields the columns read, once each.
func sourceFields(columns map[string]string) []string {
	var fields []string
	seen := map[string]bool{}
	for _, f := range columns {
		if !seen[f] {
			seen[f] = true
			fields = append(fields, f)
		}
	}
	return fields
}

// decode parses a whole response body as one JSON value, numbers as json.Number.
func decode(body []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var doc any
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			// The body was read whole, so this is a malformed document, not a cut
			// connection.
			err = fmt.Errorf("truncated JSON (%d bytes): %w", len(body), err)
		}
		return nil, etl.Permanent(etl.DataError(fmt.Errorf("decode response: %w", err)))
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, etl.Permanent(etl.DataError(errors.New("decode response: unexpected data after the JSON value")))
	}
	return doc, nil
}

// recordsAt returns the records array at path.
func recordsAt(doc any, path string) ([]map[string]any, error) {
	v := doc
	if path != "" {
		var ok bool
		if v, ok = lookup(doc, path); !ok {
			return nil, etl.Permanent(etl.DataError(fmt.Errorf("records_path %q: not found in the response", path)))
		}
	}
	if v == nil {
		return nil, nil
	}
	arr, ok := v.([]any)
	if !ok {
		return nil, etl.Permanent(etl.DataError(fmt.Errorf("records_path %q: %s, want an array", path, jsonKind(v))))
	}
	records := make([]map[string]any, len(arr))
	for i, e := range arr {
		if records[i], ok = e.(map[string]any); !ok {
			return nil, etl.Permanent(etl.DataError(fmt.Errorf("records_path %q: record %d is %s, want an object", path, i+1, jsonKind(e))))
		}
	}
	return records, nil
}

// lookup follows a dot path through objects (by key) and arrays (by index). A key
// that itself contains dots is found when it matches the whole path.
func lookup(v any, path string) (any, bool) {
	if m, ok := v.(map[string]any); ok {
		if x, ok := m[path]; ok {
			return x, true
		}
	}
	for part := range strings.SplitSeq(path, ".") {
		switch c := v.(type) {
		case map[string]any:
			x, ok := c[part]
			if !ok {
				return nil, false
			}
			v = x
		case []any:
			i, err := strconv.Atoi(part)
			if err != nil || i < 0 || i >= len(c) {
				return nil, false
			}
			v = c[i]
		default:
			return nil, false
		}
	}
	return v, true
}

func jsonKind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case map[string]any:
		return "an object"
	case []any:
		return "an array"
	case string:
		return "a string"
	case json.Number:
		return "a number"
	case bool:
		return "a boolean"
	}
	return fmt.Sprintf("%T", v)
}

// nextLink returns the target of the rel="next" link in Link header values (RFC
// 8288), or "".
func nextLink(values []string) string {
	for _, v := range values {
		for len(v) > 0 {
			lt := strings.IndexByte(v, '<')
			if lt < 0 {
				break
			}
			gt := strings.IndexByte(v[lt:], '>')
			if gt < 0 {
				break
			}
			target := v[lt+1 : lt+gt]
			rest := v[lt+gt+1:]
			// The link's parameters run to the next link (a comma outside quotes).
			end, quoted := len(rest), false
			for i := 0; i < len(rest); i++ {
				if rest[i] == '"' {
					quoted = !quoted
				} else if rest[i] == ',' && !quoted {
					end = i
					break
				}
			}
			for param := range strings.SplitSeq(rest[:end], ";") {
				name, value, ok := strings.Cut(strings.TrimSpace(param), "=")
				if !ok || !strings.EqualFold(strings.TrimSpace(name), "rel") {
					continue
				}
				for rel := range strings.FieldsSeq(strings.Trim(strings.TrimSpace(value), `"`)) {
					if strings.EqualFold(rel, "next") {
						return target
					}
				}
			}
			v = rest[end:]
		}
	}
	return ""
}
