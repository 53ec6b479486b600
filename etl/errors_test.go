package etl_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/etlexec/etlexec/etl"
)

// retryableConnErr stands in for pgconn's unexported connection-level errors, which
// announce themselves with SafeToRetry.
type retryableConnErr struct{ err error }

func (e *retryableConnErr) Error() string     { return "failed to receive message: " + e.err.Error() }
func (e *retryableConnErr) Unwrap() error     { return e.err }
func (e *retryableConnErr) SafeToRetry() bool { return false }

func TestClassify(t *testing.T) {
	t.Parallel()
	cause := errors.New("boom")
	pgErr := &pgconn.PgError{Code: "40001", Message: "could not serialize access"}
	tests := []struct {
		name string
		err  error
		want etl.Category
	}{
		{"Nil", nil, etl.CategoryNone},
		{"Plain", cause, etl.CategorySystem},
		{"Canceled", context.Canceled, etl.CategorySystem},

		{"MarkAPI", etl.APIError(cause), etl.CategoryAPI},
		{"MarkDB", etl.DBError(cause), etl.CategoryDB},
		{"MarkData", etl.DataError(cause), etl.CategoryData},
		{"MarkSystem", etl.SystemError(pgErr), etl.CategorySystem},
		{"MarkRetryAfter", etl.RetryAfter(cause, time.Second), etl.CategoryAPI},
		{"MarkWrapped", fmt.Errorf("load page 3: %w", etl.DataError(cause)), etl.CategoryData},
		{"OutermostMarkWins", etl.DataError(etl.APIError(cause)), etl.CategoryData},
		{"PermanentKeepsInnerMark", etl.Permanent(fmt.Errorf("x: %w", etl.DBError(cause))), etl.CategoryDB},
		{"PermanentAlone", etl.Permanent(cause), etl.CategorySystem},
		{"MarkBeatsType", etl.APIError(pgErr), etl.CategoryAPI},
		{"MarkInJoin", errors.Join(cause, etl.DBError(cause)), etl.CategoryDB},

		{"Panic", fmt.Errorf("handler: %w", &etl.PanicError{Value: "nil map"}), etl.CategorySystem},

		{"PgError", fmt.Errorf("insert: %w", pgErr), etl.CategoryDB},
		{"ConnectError", &pgconn.ConnectError{}, etl.CategoryDB},
		{"PgConnTimeout", &retryableConnErr{err: context.DeadlineExceeded}, etl.CategoryDB},
		{"PgConnReset", &retryableConnErr{err: &net.OpError{Op: "read", Err: syscall.ECONNRESET}}, etl.CategoryDB},

		{"HTTPError", etl.HTTPStatus(503, 0, ""), etl.CategoryAPI},
		{"HTTPError4xx", etl.HTTPStatus(404, 0, "not found"), etl.CategoryAPI},
		{"URLError", &url.Error{Op: "Get", URL: "http://x", Err: cause}, etl.CategoryAPI},
		{"URLErrorTimeout", &url.Error{Op: "Get", URL: "http://x", Err: context.DeadlineExceeded}, etl.CategoryAPI},
		{"OpError", &net.OpError{Op: "dial", Err: cause}, etl.CategoryAPI},
		{"ConnRefused", fmt.Errorf("dial: %w", syscall.ECONNREFUSED), etl.CategoryAPI},
		{"ConnReset", fmt.Errorf("read: %w", syscall.ECONNRESET), etl.CategoryAPI},
		{"UnexpectedEOF", fmt.Errorf("read body: %w", io.ErrUnexpectedEOF), etl.CategoryAPI},
		{"DNSError", &net.DNSError{Err: "no such host", Name: "x"}, etl.CategoryAPI},

		{"JSONSyntax", json.Unmarshal([]byte(`{`), new(any)), etl.CategoryData},
		{"JSONType", json.Unmarshal([]byte(`"x"`), new(int)), etl.CategoryData},
		{"NumError", func() error { _, err := strconv.Atoi("x1"); return err }(), etl.CategoryData},

		{"Deadline", fmt.Errorf("wait: %w", context.DeadlineExceeded), etl.CategorySystem},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := etl.Classify(tc.err); got != tc.want {
				t.Errorf("Classify(%v) = %s, want %s", tc.err, got, tc.want)
			}
		})
	}
}

func TestMarksKeepTheCause(t *testing.T) {
	t.Parallel()
	cause := &pgconn.PgError{Code: "23505"}
	marks := map[string]func(error) error{
		"APIError":    etl.APIError,
		"DBError":     etl.DBError,
		"DataError":   etl.DataError,
		"SystemError": etl.SystemError,
		"Permanent":   etl.Permanent,
		"RetryAfter":  func(err error) error { return etl.RetryAfter(err, time.Second) },
	}
	for name, mark := range marks {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			if got := mark(nil); got != nil {
				t.Errorf("%s(nil) = %v, want nil", name, got)
			}
			err := mark(cause)
			if !errors.Is(err, cause) {
				t.Errorf("errors.Is(%s(cause), cause) = false", name)
			}
			if pg, ok := errors.AsType[*pgconn.PgError](err); !ok || pg.Code != "23505" {
				t.Errorf("errors.As(%s(cause)) did not reach the *pgconn.PgError", name)
			}
			if err.Error() != cause.Error() {
				t.Errorf("%s changed the message: %q, want %q", name, err.Error(), cause.Error())
			}
		})
	}
}

func TestIsPermanent(t *testing.T) {
	t.Parallel()
	cause := errors.New("boom")
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"Nil", nil, false},
		{"Plain", cause, false},
		{"Data", etl.DataError(cause), true},
		{"DataByType", json.Unmarshal([]byte(`[`), new(any)), true},
		{"PermanentAPI", etl.Permanent(etl.APIError(cause)), true},
		{"PermanentWrapped", fmt.Errorf("page 2: %w", etl.Permanent(cause)), true},
		{"API", etl.APIError(cause), false},
		{"DB", &pgconn.PgError{Code: "40001"}, false},
		{"HTTP400", etl.HTTPStatus(400, 0, ""), true},
		{"HTTP404Marked", etl.APIError(etl.HTTPStatus(404, 0, "")), true},
		{"HTTP408", etl.HTTPStatus(408, 0, ""), false},
		{"HTTP429", etl.HTTPStatus(429, time.Minute, ""), false},
		{"HTTP499", etl.HTTPStatus(499, 0, ""), true},
		{"HTTP500", etl.HTTPStatus(500, 0, ""), false},
		{"HTTP503", etl.HTTPStatus(503, 0, ""), false},
		{"HTTP399", etl.HTTPStatus(399, 0, ""), false},
		{"Panic", &etl.PanicError{Value: 1}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := etl.IsPermanent(tc.err); got != tc.want {
				t.Errorf("IsPermanent(%v) = %t, want %t", tc.err, got, tc.want)
			}
		})
	}
}

func TestRetryAfterOf(t *testing.T) {
	t.Parallel()
	cause := errors.New("slow down")
	tests := []struct {
		name   string
		err    error
		want   time.Duration
		wantOK bool
	}{
		{"Nil", nil, 0, false},
		{"Plain", cause, 0, false},
		{"Marked", etl.RetryAfter(cause, 30*time.Second), 30 * time.Second, true},
		{"MarkedWrapped", fmt.Errorf("page: %w", etl.RetryAfter(cause, time.Minute)), time.Minute, true},
		{"MarkedZero", etl.RetryAfter(cause, 0), 0, false},
		{"MarkedNegative", etl.RetryAfter(cause, -time.Second), 0, false},
		{"HTTP", etl.HTTPStatus(429, 5*time.Second, ""), 5 * time.Second, true},
		{"HTTPNone", etl.HTTPStatus(503, 0, ""), 0, false},
		{"MarkBeatsHTTP", etl.RetryAfter(etl.HTTPStatus(429, 5*time.Second, ""), 9*time.Second), 9 * time.Second, true},
		{"ZeroMarkFallsBackToHTTP", etl.RetryAfter(etl.HTTPStatus(429, 5*time.Second, ""), 0), 5 * time.Second, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, ok := etl.RetryAfterOf(tc.err)
			if got != tc.want || ok != tc.wantOK {
				t.Errorf("RetryAfterOf(%v) = %v, %t; want %v, %t", tc.err, got, ok, tc.want, tc.wantOK)
			}
		})
	}
}

func TestParseCategory(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      string
		want    etl.Category
		wantErr bool
	}{
		{in: "API", want: etl.CategoryAPI},
		{in: "DB", want: etl.CategoryDB},
		{in: "DATA", want: etl.CategoryData},
		{in: "SYSTEM", want: etl.CategorySystem},
		{in: "NONE", want: etl.CategoryNone},
		{in: " data ", want: etl.CategoryData},
		{in: "", wantErr: true},
		{in: "NETWORK", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			t.Parallel()
			got, err := etl.ParseCategory(tc.in)
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Errorf("ParseCategory(%q) = %q, %v; want %q, error %t", tc.in, got, err, tc.want, tc.wantErr)
			}
		})
	}
}

func TestHTTPErrorMessage(t *testing.T) {
	t.Parallel()
	// "é" is two bytes and the odd "x" puts byte 256 inside one: the cut must not split it.
	long := "x" + strings.Repeat("é", 300)
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"NoBody", etl.HTTPStatus(502, 0, " \n"), "http status 502"},
		{"Body", etl.HTTPStatus(404, 0, "no such order\n"), "http status 404: no such order"},
		{"LongBody", etl.HTTPStatus(500, 0, long), "http status 500: x" + strings.Repeat("é", 127) + "…"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := tc.err.Error(); got != tc.want {
				t.Errorf("Error() = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestRecover(t *testing.T) {
	t.Parallel()
	if p := etl.Recover(nil); p != nil {
		t.Fatalf("Recover(nil) = %v, want nil", p)
	}

	run := func() (err error) {
		defer func() {
			if p := etl.Recover(recover()); p != nil {
				err = p
			}
		}()
		var m map[string]int
		//lint:ignore SA5000 the point: a runtime error panic, recovered with its message and stack
		m["x"] = 1 // panics: assignment to entry in nil map
		return nil
	}
	err := run()
	p, ok := errors.AsType[*etl.PanicError](err)
	if !ok {
		t.Fatalf("recovered error %v is not a *PanicError", err)
	}
	if !strings.Contains(p.Error(), "panic: assignment to entry in nil map") {
		t.Errorf("Error() = %q, want the panic value", p.Error())
	}
	if !strings.Contains(string(p.Stack), "TestRecover") {
		t.Errorf("Stack does not show the panicking function:\n%s", p.Stack)
	}
	if etl.Classify(err) != etl.CategorySystem {
		t.Errorf("Classify(panic) = %s, want SYSTEM", etl.Classify(err))
	}
	if again := etl.Recover(p); again != p {
		t.Error("Recover of a *PanicError did not keep the original")
	}
}
