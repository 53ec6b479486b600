package config_test

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

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

func TestQueueWeights(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		queues      []string
		wantNames   []string
		wantWeights map[string]int
		wantErr     string
	}{
		{queues: []string{"etl=6", "backfill=1"}, wantNames: []string{"etl", "backfill"}, wantWeights: map[string]int{"etl": 6, "backfill": 1}},
		{queues: []string{"etl", " backfill = 2 "}, wantNames: []string{"etl", "backfill"}, wantWeights: map[string]int{"etl": 1, "backfill": 2}},
		{queues: []string{"etl=0"}, wantErr: `ETL_QUEUES: weight "0" of queue etl must be a whole number between 1 and`},
		{queues: []string{"etl=high"}, wantErr: `ETL_QUEUES: weight "high" of queue etl`},
		{queues: []string{"etl=-2"}, wantErr: `ETL_QUEUES: weight "-2"`},
		{queues: []string{"et{l}"}, wantErr: `ETL_QUEUES: queue name "et{l}" must be 1-64 of letters`},
		{queues: []string{""}, wantErr: `ETL_QUEUES: queue name ""`},
		{queues: []string{"etl", "etl=2"}, wantErr: `ETL_QUEUES: queue etl is listed twice`},
	} {
		t.Run(strings.Join(tc.queues, ","), func(t *testing.T) {
			t.Parallel()
			w := config.Worker{Queues: tc.queues}
			w.WithDefaults()
			names, weights, err := w.QueueWeights()
			verr := w.Validate()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("QueueWeights(%q) error = %v, want %q", tc.queues, err, tc.wantErr)
				}
				if verr == nil || !strings.Contains(verr.Error(), tc.wantErr) {
					t.Fatalf("Validate error = %v, want %q", verr, tc.wantErr)
				}
				return
			}
			if err != nil || verr != nil {
				t.Fatalf("QueueWeights(%q) = %v / Validate %v", tc.queues, err, verr)
			}
			if diff := cmp.Diff(tc.wantNames, names); diff != "" {
				t.Errorf("names (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.wantWeights, weights); diff != "" {
				t.Errorf("weights (-want +got):\n%s", diff)
			}
		})
	}
}

// Not parallel: the environment is the process's.
func TestQueuesFromEnv(t *testing.T) {
	t.Setenv("ETL_QUEUES", "etl=6,backfill=1")
	t.Setenv("ETL_STRICT_PRIORITY", "true")
	var w config.Worker
	if err := config.Load(&w); err != nil {
		t.Fatal(err)
	}
	w.WithDefaults()
	names, weights, err := w.QueueWeights()
	if err != nil || !w.StrictPriority || len(names) != 2 || weights["etl"] != 6 || weights["backfill"] != 1 {
		t.Fatalf("got %v %v %v strict=%v", names, weights, err, w.StrictPriority)
	}
}
