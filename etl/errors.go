package etl

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5/pgconn"
)

// Category says where an item failed. It is stored with items, attempts and runs
// (error_category) and drives the retry decision.
type Category string

const (
	// CategoryAPI is a failure of a remote API or the network to it; retried.
	CategoryAPI Category = "API"
	// CategoryDB is a failure of a database; retried.
	CategoryDB Category = "DB"
	// CategoryData is bad input: params, config or rows that cannot be processed.
	// Retrying cannot fix it, so it is never retried.
	CategoryData Category = "DATA"
	// CategorySystem is everything else: bugs, panics, timeouts; retried.
	CategorySystem Category = "SYSTEM"
	// CategoryNone is the category of success.
	CategoryNone Category = "NONE"
)

// ParseCategory returns the Category named by s, ignoring case and surrounding space.
func ParseCategory(s string) (Category, error) {
	switch c := Category(strings.ToUpper(strings.TrimSpace(s))); c {
	case CategoryAPI, CategoryDB, CategoryData, CategorySystem, CategoryNone:
		return c, nil
	}
	return "", fmt.Errorf("unknown error category %q: want API, DB, DATA, SYSTEM or NONE", s)
}

// markedError carries the decisions a handler made about an error. It wraps the cause,
// so errors.Is and errors.As still reach it.
type markedError struct {
	err        error
	category   Category      // "" when the mark only makes the error permanent
	permanent  bool          // never retry, whatever the category
	retryAfter time.Duration // > 0: the server asked us to wait this long
}

func (e *markedError) Error() string { return e.err.Error() }
func (e *markedError) Unwrap() error { return e.err }

func mark(err error, c Category) error {
	if err == nil {
		return nil
	}
	return &markedError{err: err, category: c}
}

// APIError marks err as a failure of a remote API. It returns nil for nil.
func APIError(err error) error { return mark(err, CategoryAPI) }

// DBError marks err as a database failure. It returns nil for nil.
func DBError(err error) error { return mark(err, CategoryDB) }

// DataError marks err as bad data, which is never retried. It returns nil for nil.
func DataError(err error) error { return mark(err, CategoryData) }

// SystemError marks err as a system failure. It returns nil for nil.
func SystemError(err error) error { return mark(err, CategorySystem) }

// RetryAfter marks err as an API failure after which the server asked us to wait d
// (a Retry-After header). The retry is delayed by d instead of the usual backoff,
// capped by the executor's maximum. It returns nil for nil.
func RetryAfter(err error, d time.Duration) error {
	if err == nil {
		return nil
	}
	return &markedError{err: err, category: CategoryAPI, retryAfter: d}
}

// Permanent marks err as not retryable, whatever its category: the item fails on
// this attempt. It returns nil for nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &markedError{err: err, permanent: true}
}

// HTTPError is an unexpected HTTP response from an API. It classifies as API; it is
// permanent for 4xx statuses other than 408 and 429.
type HTTPError struct {
	StatusCode int
	// RetryAfter is the server's Retry-After, 0 when it sent none.
	RetryAfter time.Duration
	// Body is the response body, or the start of it, for the error message.
	Body string
}

// maxBodyInError bounds how much of a response body goes into an error message, which
// ends up in a column and a log line.
const maxBodyInError = 256

func (e *HTTPError) Error() string {
	msg := "http status " + strconv.Itoa(e.StatusCode)
	if body := strings.TrimSpace(e.Body); body != "" {
		if len(body) > maxBodyInError {
			cut := maxBodyInError
			for cut > 0 && !utf8.RuneStart(body[cut]) {
				cut--
			}
			body = body[:cut] + "…"
		}
		msg += ": " + body
	}
	return msg
}

// HTTPStatus returns an [*HTTPError] for an unexpected response. Pass the parsed
// Retry-After (0 when absent) and the body or its start.
func HTTPStatus(code int, retryAfter time.Duration, body string) error {
	return &HTTPError{StatusCode: code, RetryAfter: retryAfter, Body: body}
}

// PanicError is a panic recovered from a handler. It classifies as SYSTEM.
type PanicError struct {
	Value any
	Stack []byte
}

func (e *PanicError) Error() string { return fmt.Sprintf("panic: %v", e.Value) }

// Recover turns the value of recover() into a *PanicError with the current stack; it
// returns nil when v is nil (no panic). Call it directly in the deferred function:
//
//	defer func() {
//		if p := etl.Recover(recover()); p != nil {
//			err = p
//		}
//	}()
func Recover(v any) *PanicError {
	if v == nil {
		return nil
	}
	if p, ok := v.(*PanicError); ok { // re-panicked: keep the original stack
		return p
	}
	return &PanicError{Value: v, Stack: debug.Stack()}
}

// walk calls f on err and everything it wraps, depth first, outermost first, until f
// returns true.
func walk(err error, f func(error) bool) bool {
	if err == nil {
		return false
	}
	if f(err) {
		return true
	}
	switch u := err.(type) {
	case interface{ Unwrap() error }:
		return walk(u.Unwrap(), f)
	case interface{ Unwrap() []error }:
		for _, e := range u.Unwrap() {
			if walk(e, f) {
				return true
			}
		}
	}
	return false
}

// Classify returns the category of err, checking in this order:
//
//  1. an explicit mark ([APIError], [DBError], [DataError], [SystemError],
//     [RetryAfter]); the outermost mark wins;
//  2. a [*PanicError]: SYSTEM;
//  3. *pgconn.PgError, *pgconn.ConnectError and pgconn's connection-level errors
//     (those with a SafeToRetry method): DB, even when they wrap a timeout;
//  4. [*HTTPError], *url.Error, *net.OpError, ECONNREFUSED, ECONNRESET and
//     io.ErrUnexpectedEOF (a body cut short by the connection): API, even when they
//     wrap a timeout;
//  5. *json.SyntaxError, *json.UnmarshalTypeError, *strconv.NumError: DATA;
//  6. context.DeadlineExceeded not explained above (the item's own timeout): SYSTEM;
//  7. any other net.Error: API;
//  8. nil: NONE; anything else: SYSTEM.
//
// A handler reading a truncated local file gets API from rule 4; mark such errors
// with [DataError] if that matters.
func Classify(err error) Category {
	if err == nil {
		return CategoryNone
	}
	var marked Category
	walk(err, func(e error) bool {
		if m, ok := e.(*markedError); ok && m.category != "" {
			marked = m.category
			return true
		}
		return false
	})
	if marked != "" {
		return marked
	}
	if _, ok := errors.AsType[*PanicError](err); ok {
		return CategorySystem
	}
	if isDB(err) {
		return CategoryDB
	}
	if isAPI(err) {
		return CategoryAPI
	}
	if isData(err) {
		return CategoryData
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return CategorySystem
	}
	if _, ok := errors.AsType[net.Error](err); ok {
		return CategoryAPI
	}
	return CategorySystem
}

func isDB(err error) bool {
	if _, ok := errors.AsType[*pgconn.PgError](err); ok {
		return true
	}
	if _, ok := errors.AsType[*pgconn.ConnectError](err); ok {
		return true
	}
	// pgconn marks its own connection-level errors (lost connection mid-query, query
	// timeout) with SafeToRetry; their types are unexported.
	_, ok := errors.AsType[interface {
		error
		SafeToRetry() bool
	}](err)
	return ok
}

func isAPI(err error) bool {
	if _, ok := errors.AsType[*HTTPError](err); ok {
		return true
	}
	if _, ok := errors.AsType[*url.Error](err); ok {
		return true
	}
	if _, ok := errors.AsType[*net.OpError](err); ok {
		return true
	}
	return errors.Is(err, syscall.ECONNREFUSED) ||
		errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, io.ErrUnexpectedEOF)
}

func isData(err error) bool {
	if _, ok := errors.AsType[*json.SyntaxError](err); ok {
		return true
	}
	if _, ok := errors.AsType[*json.UnmarshalTypeError](err); ok {
		return true
	}
	_, ok := errors.AsType[*strconv.NumError](err)
	return ok
}

// RetryAfterOf returns the wait the server asked for: from the outermost
// [RetryAfter] mark, else from an [*HTTPError]. It reports false when there is none
// or it is not positive.
func RetryAfterOf(err error) (time.Duration, bool) {
	var d time.Duration
	walk(err, func(e error) bool {
		if m, ok := e.(*markedError); ok && m.retryAfter > 0 {
			d = m.retryAfter
			return true
		}
		return false
	})
	if d > 0 {
		return d, true
	}
	if he, ok := errors.AsType[*HTTPError](err); ok && he.RetryAfter > 0 {
		return he.RetryAfter, true
	}
	return 0, false
}

// IsPermanent reports whether err must not be retried: it classifies as DATA, it was
// marked with [Permanent], or it is an [*HTTPError] with a 4xx status other than 408
// (request timeout) and 429 (too many requests). nil is not permanent.
func IsPermanent(err error) bool {
	if err == nil {
		return false
	}
	if Classify(err) == CategoryData {
		return true
	}
	if walk(err, func(e error) bool {
		m, ok := e.(*markedError)
		return ok && m.permanent
	}) {
		return true
	}
	if he, ok := errors.AsType[*HTTPError](err); ok {
		c := he.StatusCode
		return c >= 400 && c < 500 && c != 408 && c != 429
	}
	return false
}
