package httpjson

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/etlexec/etlexec/etl"
)

// maxRedirects bounds the redirects one request follows.
const maxRedirects = 10

// maxRetryAfter caps a server's Retry-After so the duration cannot overflow; the
// executor applies its own, lower cap.
const maxRetryAfter = 7 * 24 * time.Hour

var (
	errCrossHostRedirect = errors.New("redirect to another host refused")
	errTooManyRedirects  = errors.New("too many redirects")
)

// client is shared by all items so connections to a host are reused. It follows
// redirects only within the host and scheme of the request: net/http drops the
// Authorization header on a cross-host redirect, but not a custom auth_header.
var client = &http.Client{
	CheckRedirect: func(req *http.Request, via []*http.Request) error {
		if len(via) >= maxRedirects {
			return errTooManyRedirects
		}
		if req.URL.Host != via[0].URL.Host || req.URL.Scheme != via[0].URL.Scheme {
			return errCrossHostRedirect
		}
		return nil
	},
}

// limiters holds one rate limiter per source host, shared by every item of the
// process.
var limiters = struct {
	sync.Mutex
	byHost map[string]*rate.Limiter
}{byHost: make(map[string]*rate.Limiter)}

// limiterFor returns the host's limiter, lowered to rps if that is stricter; nil when
// rps is 0 (unlimited) and no limiter exists yet. The burst is 1, so requests are
// spaced evenly.
func limiterFor(host string, rps float64) *rate.Limiter {
	host = strings.ToLower(host)
	limiters.Lock()
	defer limiters.Unlock()
	l := limiters.byHost[host]
	if rps <= 0 {
		return l
	}
	if l == nil {
		l = rate.NewLimiter(rate.Limit(rps), 1)
		limiters.byHost[host] = l
	} else if rate.Limit(rps) < l.Limit() {
		l.SetLimit(rate.Limit(rps))
	}
	return l
}

// fetcher performs the item's requests.
type fetcher struct {
	cfg     *Config
	auth    string // the auth header's value; never logged nor put in an error
	limiter *rate.Limiter
	// source paces requests to the job's named source across the fleet (etl.Item.Limiter;
	// it never waits when the job names none); limiter, this process's per-host rate_limit,
	// applies as well.
	source etl.Limiter
}

// wait waits for this process's rate_limit and the fleet's source rate, in that order (a
// request the local limit holds back takes no token of the shared one).
func (f *fetcher) wait(ctx context.Context) error {
	if f.limiter != nil {
		if err := f.limiter.Wait(ctx); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			// x/time/rate refuses a wait that would pass the deadline.
			return fmt.Errorf("%w (%v)", context.DeadlineExceeded, err)
		}
	}
	if f.source != nil {
		return f.source.Wait(ctx)
	}
	return nil
}

// response is a successful response: its headers and whole body.
type response struct {
	header http.Header
	body   []byte
}

// head asks u for its headers only: the API's clock before the first page. The status does
// not matter (a 405 still carries a Date); transport failures are API errors.
func (f *fetcher) head(ctx context.Context, u *url.URL) (http.Header, error) {
	if err := f.wait(ctx); err != nil {
		return nil, fmt.Errorf("HEAD %s: wait for the rate limit: %w", u.Redacted(), err)
	}
	reqCtx, cancel := context.WithTimeout(ctx, f.cfg.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(reqCtx, http.MethodHead, u.String(), nil)
	if err != nil {
		return nil, etl.Permanent(etl.DataError(fmt.Errorf("HEAD %s: %w", u.Redacted(), err)))
	}
	req.Header.Set("User-Agent", "etlexec-"+Kind)
	if f.auth != "" {
		req.Header.Set(f.cfg.AuthHeader, f.auth)
	}
	resp, err := client.Do(req)
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return nil, fmt.Errorf("HEAD %s: %w (%v)", u.Redacted(), ctxErr, f.redact(err.Error()))
		}
		return nil, etl.APIError(fmt.Errorf("HEAD %s: %s", u.Redacted(), f.redact(err.Error())))
	}
	resp.Body.Close()
	return resp.Header, nil
}

// get fetches u. Failures are marked: a non-2xx status is an *etl.HTTPError carrying
// Retry-After (API; permanent for 4xx other than 408 and 429), transport failures are
// API errors, and when ctx is done the context's error is what the caller sees.
func (f *fetcher) get(ctx context.Context, u *url.URL) (*response, error) {
	where := "GET " + u.Redacted()
	fail := func(err error) error {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return fmt.Errorf("%s: %w (%v)", where, ctxErr, f.redact(err.Error()))
		}
		if errors.Is(err, errCrossHostRedirect) || errors.Is(err, errTooManyRedirects) {
			return etl.Permanent(etl.APIError(fmt.Errorf("%s: %w", where, err)))
		}
		return etl.APIError(fmt.Errorf("%s: %w", where, err))
	}
	if err := f.wait(ctx); err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return nil, fmt.Errorf("%s: wait for the rate limit: %w", where, ctxErr)
		}
		if errors.Is(err, context.DeadlineExceeded) {
			// The item's deadline comes before the next free slot.
			return nil, fmt.Errorf("%s: wait for the rate limit: %w", where, err)
		}
		// The shared limiter could not be asked (Redis): an infrastructure failure, retried.
		return nil, etl.SystemError(fmt.Errorf("%s: wait for the source's rate limit: %w", where, err))
	}
	reqCtx, cancel := context.WithTimeout(ctx, f.cfg.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(reqCtx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, etl.Permanent(etl.DataError(fmt.Errorf("%s: %w", where, err)))
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "etlexec-"+Kind)
	if f.auth != "" {
		req.Header.Set(f.cfg.AuthHeader, f.auth)
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fail(err)
	}
	defer resp.Body.Close()

	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
		wait := parseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
		return nil, fmt.Errorf("%s: %w", where, etl.HTTPStatus(resp.StatusCode, wait, f.redact(string(body))))
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, MaxResponseBytes+1))
	if err != nil {
		return nil, fail(fmt.Errorf("read body: %w", err))
	}
	if len(body) > MaxResponseBytes {
		return nil, etl.Permanent(etl.DataError(fmt.Errorf("%s: response larger than %d bytes", where, MaxResponseBytes)))
	}
	return &response{header: resp.Header, body: body}, nil
}

// redact removes the credential, and the part after its scheme ("Bearer xyz" → xyz),
// from text a server sent back.
func (f *fetcher) redact(s string) string {
	if f.auth == "" {
		return s
	}
	s = strings.ReplaceAll(s, f.auth, "[redacted]")
	if _, cred, ok := strings.Cut(f.auth, " "); ok && len(strings.TrimSpace(cred)) >= 8 {
		s = strings.ReplaceAll(s, strings.TrimSpace(cred), "[redacted]")
	}
	return s
}

// parseRetryAfter reads a Retry-After header: delay-seconds or an HTTP date. It
// returns 0 when the header is absent, malformed or not in the future.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs <= 0 {
			return 0
		}
		return min(time.Duration(min(secs, int64(maxRetryAfter/time.Second)))*time.Second, maxRetryAfter)
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := t.Sub(now); d > 0 {
			return min(d, maxRetryAfter)
		}
	}
	return 0
}
