package config_test

import (
	"strings"
	"testing"

	"github.com/etlexec/etlexec/internal/config"
)

// Not parallel: the environment is the process's.
func TestLoadNamesTheVariable(t *testing.T) {
	for _, tc := range []struct {
		env, value string
		want       []string
	}{
		{"ETL_LEASE", "5", []string{`ETL_LEASE: "5" is not a duration`, "missing unit"}},
		{"ETL_CONCURRENCY", "abc", []string{`ETL_CONCURRENCY: "abc" is not a whole number`}},
		{"ETL_ALLOW_REDIS_EVICTION", "maybe", []string{`ETL_ALLOW_REDIS_EVICTION: "maybe" is not a boolean`}},
	} {
		t.Run(tc.env, func(t *testing.T) {
			t.Setenv(tc.env, tc.value)
			var w config.Worker
			err := config.Load(&w)
			if err == nil {
				t.Fatalf("Load with %s=%q succeeded; it must not fall back to a default", tc.env, tc.value)
			}
			for _, want := range tc.want {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q lacks %q", err, want)
				}
			}
		})
	}
}

func TestDatabaseURLForms(t *testing.T) {
	t.Parallel()
	for _, u := range []string{
		"postgres://postgres@127.0.0.1:5432/test?sslmode=disable&pool_max_conns=4",
		"host=127.0.0.1 port=5432 user=postgres dbname=test pool_max_conns=4",
	} {
		c := config.Common{DatabaseURL: u}
		c.WithDefaults()
		if err := c.Validate(); err != nil {
			t.Errorf("DATABASE_URL %q refused: %v", u, err)
		}
	}
	c := config.Common{DatabaseURL: "mysql://x"}
	c.WithDefaults()
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "DATABASE_URL") {
		t.Errorf("a non-Postgres URL = %v, want an error naming DATABASE_URL", err)
	}
}
