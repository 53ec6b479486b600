// Package httpjson owns the built-in "http_json" kind, which pages through a JSON REST
// API and upserts the records of each page into a table of the job's target database
// with [sqlincremental.LoadPage]. It uses only the etl SDK, pgx (through LoadPage) and
// the standard library, exactly as a team's own kind would.
//
// The request URL and query parameters are Go text/templates over
//
//	.params        the item's params (an object)
//	.cursor_start  the window's start, RFC 3339 in UTC to the second, "" when open
//	.cursor_end    the window's end, likewise
//
// for example "https://api.example.com/v1/{{.params.region | pathescape}}/orders" with
// query {"updated_since": "{{.cursor_start}}"}. A query parameter that renders empty is
// left out, so the first load sends no updated_since at all.
//
// Each HTTP page counts as one page; pagination follows the configured style (page
// number, offset, cursor token from the body, or the Link header's rel="next"). For
// the modified_date strategy the greatest modified_field value loaded is the item's
// watermark.
package httpjson

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"text/template"
	"time"

	"github.com/etlexec/etlexec/etl"
	"github.com/etlexec/etlexec/internal/kinds/sqlincremental"
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
)

// Register adds the http_json kind to r.
func Register(r *etl.Registry) { r.Register(Kind, Handler) }

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
	// ModifiedField is the dot path of each record's modification time (RFC 3339).
	// Required for the modified_date strategy; a record without one is loaded but
	// not observed.
	ModifiedField string `json:"modified_field"`
	// TargetTable, KeyColumns and Columns (target column → record field dot path,
	// required) say where records go; see sqlincremental.Target.
	TargetTable string            `json:"target_table"`
	KeyColumns  []string          `json:"key_columns"`
	Columns     map[string]string `json:"columns"`

	timeout  time.Duration
	baseTmpl *template.Template
	queryTmp map[string]*template.Template
}

// Pagination configures how pages are requested and when to stop.
type Pagination struct {
	// Type is none, page, offset, cursor or link.
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
	// required for page and offset, and sent with cursor and link when set.
	LimitParam string `json:"limit_param"`
	Limit      int    `json:"limit"`
	// OffsetParam defaults to OffsetParamDefault.
	OffsetParam string `json:"offset_param"`
	// CursorParam defaults to CursorParamDefault; CursorPath is required for cursor.
	CursorParam string `json:"cursor_param"`
	CursorPath  string `json:"cursor_path"`
}

// funcs are the functions templates may call besides text/template's built-ins
// (urlquery among them).
var funcs = template.FuncMap{"pathescape": url.PathEscape, "queryescape": url.QueryEscape}

// validate checks the config for strategy s, fills defaults and parses the templates.
// Its errors are marked.
func (c *Config) validate(s etl.Strategy) error {
	bad := func(format string, args ...any) error {
		return etl.Permanent(etl.DataError(fmt.Errorf("http_json config: "+format, args...)))
	}
	if strings.TrimSpace(c.BaseURL) == "" {
		return bad("base_url: required")
	}
	var err error
	if c.baseTmpl, err = parseTemplate("base_url", c.BaseURL); err != nil {
		return bad("%v", err)
	}
	c.queryTmp = make(map[string]*template.Template, len(c.Query))
	for name, text := range c.Query {
		if name == "" {
			return bad("query: empty parameter name")
		}
		if c.queryTmp[name], err = parseTemplate("query."+name, text); err != nil {
			return bad("%v", err)
		}
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
	if c.ModifiedField == "" && s == etl.StrategyModifiedDate {
		return bad("modified_field: required for strategy %s", s)
	}
	if len(c.Columns) == 0 {
		return bad("columns: required (target column → record field)")
	}
	if err := c.target().Validate(); err != nil {
		return fmt.Errorf("http_json config: %w", err)
	}
	return c.Pagination.validate(bad)
}

func (p *Pagination) validate(bad func(string, ...any) error) error {
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
	switch p.Type {
	case PaginationNone, PaginationLink:
	case PaginationPage, PaginationOffset:
		if p.Limit == 0 {
			return bad("pagination.limit: required for pagination type %s (a shorter page is the last)", p.Type)
		}
	case PaginationCursor:
		if p.CursorPath == "" {
			return bad("pagination.cursor_path: required for pagination type cursor")
		}
	default:
		return bad("pagination.type %q: want none, page, offset, cursor or link", p.Type)
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

func (c *Config) target() sqlincremental.Target {
	return sqlincremental.Target{Table: c.TargetTable, KeyColumns: c.KeyColumns, Columns: c.Columns}
}

// Handler runs one attempt of one http_json item; see the package documentation.
func Handler(ctx context.Context, it *etl.Item) error {
	var cfg Config
	if err := it.Config(&cfg); err != nil {
		return etl.Permanent(err)
	}
	if err := cfg.validate(it.Strategy()); err != nil {
		return err
	}
	var params map[string]any
	if err := it.Params(&params); err != nil {
		return etl.Permanent(err)
	}
	if params == nil {
		params = map[string]any{}
	}
	start, err := cfg.startURL(params, it.Window())
	if err != nil {
		return err
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
	// An empty page checks the target table and its columns before the first request.
	if _, err := sqlincremental.LoadPage(ctx, it.Target(), cfg.target(), sqlincremental.Page{Fields: fields}); err != nil {
		return fmt.Errorf("http_json: %w", err)
	}

	f := fetcher{cfg: &cfg, auth: auth, limiter: limiterFor(start.Host, cfg.RateLimit)}
	pg := pager{p: &cfg.Pagination, seen: map[string]bool{}}
	for n, u := 1, pg.first(start); u != nil; n++ {
		resp, err := f.get(ctx, u)
		if err != nil {
			return fmt.Errorf("http_json: page %d: %w", n, err)
		}
		doc, err := decode(resp.body)
		if err != nil {
			return fmt.Errorf("http_json: page %d: %w", n, err)
		}
		records, err := recordsAt(doc, cfg.RecordsPath)
		if err != nil {
			return fmt.Errorf("http_json: page %d: %w", n, err)
		}
		it.AddPages(1)
		it.AddRead(int64(len(records)))
		it.Log().Debug().Int("page", n).Str("host", u.Host).Str("path", u.Path).
			Int("records", len(records)).Msg("http_json page fetched")

		page := sqlincremental.Page{Fields: fields, Rows: make([][]any, len(records))}
		for i, rec := range records {
			row := make([]any, len(fields))
			for j, field := range fields {
				row[j], _ = lookup(rec, field)
			}
			page.Rows[i] = row
			if cfg.ModifiedField != "" {
				if err := observe(it, rec, cfg.ModifiedField); err != nil {
					return fmt.Errorf("http_json: page %d record %d: %w", n, i+1, err)
				}
			}
		}
		if len(records) > 0 {
			written, err := sqlincremental.LoadPage(ctx, it.Target(), cfg.target(), page)
			if err != nil {
				return fmt.Errorf("http_json: page %d: %w", n, err)
			}
			it.AddWritten(written)
		}
		if u, err = pg.next(u, len(records), doc, resp.header); err != nil {
			return fmt.Errorf("http_json: after page %d: %w", n, err)
		}
	}
	m := it.Metrics()
	it.Log().Debug().Int64("records_read", m.RecordsRead).Int64("records_written", m.RecordsWritten).
		Int64("pages", m.Pages).Msg("http_json item loaded")
	return nil
}

// startURL renders the base URL and query for the item.
func (c *Config) startURL(params map[string]any, w etl.Window) (*url.URL, error) {
	data := map[string]any{
		"params":       params,
		"cursor_start": formatCursor(w.Start),
		"cursor_end":   formatCursor(w.End),
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

func formatCursor(t *time.Time) string {
	if t == nil {
		return ""
	}
	return t.UTC().Format(time.RFC3339) // to the second, rounded down: re-reads, never skips
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

// observe reports the record's modification time, if it has one.
func observe(it *etl.Item, rec map[string]any, field string) error {
	v, ok := lookup(rec, field)
	if !ok || v == nil {
		return nil
	}
	s, ok := v.(string)
	if !ok {
		return etl.Permanent(etl.DataError(fmt.Errorf("modified_field %s: %T, want an RFC 3339 string", field, v)))
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return etl.Permanent(etl.DataError(fmt.Errorf("modified_field %s: %w", field, err)))
	}
	if it.Strategy() == etl.StrategyModifiedDate {
		it.ObserveWatermark(t.UTC())
	}
	return nil
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

// pager computes each page's URL.
type pager struct {
	p      *Pagination
	page   int
	offset int
	seen   map[string]bool // cursor tokens and next links already followed
}

// first returns the first page's URL.
func (pg *pager) first(base *url.URL) *url.URL {
	u := *base
	q := u.Query()
	if pg.p.Limit > 0 {
		q.Set(pg.p.LimitParam, strconv.Itoa(pg.p.Limit))
	}
	switch pg.p.Type {
	case PaginationPage:
		pg.page = *pg.p.FirstPage
		q.Set(pg.p.PageParam, strconv.Itoa(pg.page))
	case PaginationOffset:
		q.Set(pg.p.OffsetParam, "0")
	}
	u.RawQuery = q.Encode()
	pg.seen[u.String()] = true
	return &u
}

// next returns the URL of the page after cur, which held n records, or nil when cur
// was the last.
func (pg *pager) next(cur *url.URL, n int, doc any, header http.Header) (*url.URL, error) {
	with := func(param, value string) *url.URL {
		u := *cur
		q := u.Query()
		q.Set(param, value)
		u.RawQuery = q.Encode()
		return &u
	}
	switch pg.p.Type {
	case PaginationPage:
		if n < pg.p.Limit {
			return nil, nil
		}
		pg.page++
		return with(pg.p.PageParam, strconv.Itoa(pg.page)), nil
	case PaginationOffset:
		if n < pg.p.Limit {
			return nil, nil
		}
		pg.offset += n
		return with(pg.p.OffsetParam, strconv.Itoa(pg.offset)), nil
	case PaginationCursor:
		v, _ := lookup(doc, pg.p.CursorPath)
		var token string
		switch v := v.(type) {
		case nil:
		case string:
			token = v
		case json.Number:
			token = v.String()
		default:
			return nil, etl.Permanent(etl.DataError(fmt.Errorf("pagination.cursor_path %q: %s, want a string or number", pg.p.CursorPath, jsonKind(v))))
		}
		if token == "" {
			return nil, nil
		}
		if pg.seen["cursor:"+token] {
			return nil, etl.Permanent(etl.DataError(fmt.Errorf("pagination: the API returned cursor %q twice", token)))
		}
		pg.seen["cursor:"+token] = true
		return with(pg.p.CursorParam, token), nil
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
		if pg.seen[u.String()] {
			return nil, etl.Permanent(etl.APIError(fmt.Errorf("pagination: Link rel=next returns to %s", u.Redacted())))
		}
		pg.seen[u.String()] = true
		return u, nil
	}
	return nil, nil
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
