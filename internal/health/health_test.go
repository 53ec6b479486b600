package health_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/etlexec/etlexec/internal/health"
)

// TestReadyNamesTheFailingDependency: /readyz is 200 when every check answers and 503 naming the
// first dependency that does not — here a Postgres pool pointed at a port nobody listens on.
func TestReadyNamesTheFailingDependency(t *testing.T) {
	t.Parallel()
	ln := httptest.NewServer(http.NotFoundHandler())
	addr := strings.TrimPrefix(ln.URL, "http://")
	ln.Close() // a loopback port that was just free: connections are refused
	pool, err := pgxpool.New(t.Context(), "postgres://postgres@"+addr+"/test?connect_timeout=2")
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	ok := health.Check{Name: "ok", Ping: func(context.Context) error { return nil }}

	for _, tc := range []struct {
		name   string
		checks []health.Check
		code   int
		prefix string
	}{
		{"AllAnswer", []health.Check{ok, ok}, http.StatusOK, "ready"},
		{"PostgresDown", []health.Check{ok, health.Postgres(pool)}, http.StatusServiceUnavailable, "postgres: "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			health.Ready(tc.checks...)(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
			if rec.Code != tc.code || !strings.HasPrefix(rec.Body.String(), tc.prefix) {
				t.Fatalf("/readyz = %d %q, want %d %q…", rec.Code, rec.Body.String(), tc.code, tc.prefix)
			}
		})
	}
}
