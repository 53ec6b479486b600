package etlexec

import (
	"reflect"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/etlexec/etlexec/internal/config"
)

// fillLeaves sets every field of the struct v points to (embedded structs included) to a
// value that is not its zero value, failing on a kind it does not know so that a new field
// type is noticed here.
func fillLeaves(t *testing.T, v reflect.Value) {
	t.Helper()
	for i := range v.NumField() {
		f, sf := v.Field(i), v.Type().Field(i)
		switch {
		case sf.Anonymous && f.Kind() == reflect.Struct:
			fillLeaves(t, f)
		case f.Type() == reflect.TypeFor[time.Duration]():
			f.SetInt(int64(time.Duration(i+1) * time.Second))
		case f.Kind() == reflect.String:
			f.SetString(sf.Name + "-value")
		case f.Kind() == reflect.Int:
			f.SetInt(int64(i + 1))
		case f.Kind() == reflect.Bool:
			f.SetBool(true)
		case f.Kind() == reflect.Slice && f.Type().Elem().Kind() == reflect.String:
			f.Set(reflect.ValueOf([]string{sf.Name + "-a", sf.Name + "-b"}).Convert(f.Type()))
		default:
			t.Fatalf("config.Worker.%s: fillLeaves does not know %s; extend it and Config", sf.Name, f.Type())
		}
	}
}

// Config mirrors every field of internal/config.Worker, so the SDK and cmd/worker take the
// same settings under the same rules.
func TestConfigMirrorsEveryWorkerField(t *testing.T) {
	t.Parallel()
	var want config.Worker
	fillLeaves(t, reflect.ValueOf(&want).Elem())
	var c Config
	c.setWorker(want)
	if diff := cmp.Diff(want, c.worker()); diff != "" {
		t.Fatalf("config.Worker -> Config -> config.Worker lost fields (-want +got):\n%s", diff)
	}
}

// Not parallel: the environment is the process's.
func TestConfigFromEnv(t *testing.T) {
	t.Setenv("ETL_CONCURRENCY", "7")
	t.Setenv("ETL_QUEUES", "etl,backfill")
	t.Setenv("ETL_WORKER_ID", "w-7")
	c, err := ConfigFromEnv()
	if err != nil {
		t.Fatal(err)
	}
	if c.Concurrency != 7 || !reflect.DeepEqual(c.Queues, []string{"etl", "backfill"}) || c.WorkerName != "w-7" {
		t.Fatalf("ConfigFromEnv = %+v", c)
	}
	if c.Lease != LeaseDefault || c.LogLevel != LogLevelDefault || c.DatabaseURL == "" {
		t.Fatalf("ConfigFromEnv did not fill defaults: %+v", c)
	}
	t.Setenv("ETL_LEASE", "5")
	if _, err := ConfigFromEnv(); err == nil {
		t.Fatal("ConfigFromEnv with ETL_LEASE=5 succeeded; it must not fall back to a default")
	}
}
