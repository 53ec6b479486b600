package etl_test

import (
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"

	"github.com/etlexec/etlexec/etl"
)

func ptr[T any](v T) *T { return &v }

func TestNewItemAccessors(t *testing.T) {
	t.Parallel()
	start := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	end := start.Add(time.Hour)
	spec := etl.ItemSpec{
		JobID:       "orders",
		Kind:        "sql_incremental",
		RunID:       uuid.MustParse("01936f6e-0000-7000-8000-000000000001"),
		AttemptID:   uuid.MustParse("01936f6e-0000-7000-8000-000000000002"),
		AttemptNo:   7,
		ItemAttempt: 2,
		MaxAttempts: 5,
		ItemNo:      3,
		Params:      json.RawMessage(`{"region":"eu"}`),
		ParamHash:   "abc",
		DryRun:      true,
		Strategy:    etl.StrategyLastRun,
		Config:      json.RawMessage(`{"table":"t"}`),
		WindowStart: &start,
		WindowEnd:   &end,
	}
	it := etl.NewItem(spec)

	type view struct {
		JobID, Kind, ParamHash string
		RunID, AttemptID       uuid.UUID
		AttemptNo              int64
		ItemAttempt, MaxAtt    int
		ItemNo                 int
		DryRun                 bool
		Strategy               etl.Strategy
		Window                 etl.Window
		Params, Config         string
		TargetNil              bool
	}
	got := view{
		JobID: it.JobID(), Kind: it.Kind(), ParamHash: it.ParamHash(),
		RunID: it.RunID(), AttemptID: it.AttemptID(), AttemptNo: it.AttemptNo(),
		ItemAttempt: it.ItemAttempt(), MaxAtt: it.MaxAttempts(), ItemNo: it.ItemNo(),
		DryRun: it.DryRun(), Strategy: it.Strategy(), Window: it.Window(),
		Params: string(it.RawParams()), Config: string(it.RawConfig()), TargetNil: it.Target() == nil,
	}
	want := view{
		JobID: "orders", Kind: "sql_incremental", ParamHash: "abc",
		RunID: spec.RunID, AttemptID: spec.AttemptID, AttemptNo: 7,
		ItemAttempt: 2, MaxAtt: 5, ItemNo: 3,
		DryRun: true, Strategy: etl.StrategyLastRun, Window: etl.Window{Start: ptr(start), End: ptr(end)},
		Params: `{"region":"eu"}`, Config: `{"table":"t"}`, TargetNil: true,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("accessors mismatch (-want +got):\n%s", diff)
	}
	it.Log().Info().Msg("a zero logger discards, it does not panic")
}

// The executor's values must not change through the spec it passed or through what
// the accessors return.
func TestItemIsImmutable(t *testing.T) {
	t.Parallel()
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	params := json.RawMessage(`{"a":1}`)
	config := json.RawMessage(`{"b":2}`)
	it := etl.NewItem(etl.ItemSpec{Params: params, Config: config, WindowStart: &start})

	params[2] = 'X'
	config[2] = 'X'
	start = start.Add(time.Hour)
	it.RawParams()[2] = 'Y'
	it.RawConfig()[2] = 'Y'
	*it.Window().Start = time.Time{}

	if got := string(it.RawParams()); got != `{"a":1}` {
		t.Errorf("RawParams() = %s, want {\"a\":1}", got)
	}
	if got := string(it.RawConfig()); got != `{"b":2}` {
		t.Errorf("RawConfig() = %s, want {\"b\":2}", got)
	}
	if got, want := *it.Window().Start, time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC); !got.Equal(want) {
		t.Errorf("Window().Start = %v, want %v", got, want)
	}
}

func TestItemParams(t *testing.T) {
	t.Parallel()
	type params struct {
		Region string `json:"region"`
		Limit  int    `json:"limit"`
	}
	tests := []struct {
		name    string
		raw     string
		want    params
		wantErr string // substring; "" means success
	}{
		{name: "Decodes", raw: `{"region":"eu","limit":10}`, want: params{Region: "eu", Limit: 10}},
		{name: "EmptyIsEmptyObject", raw: ``, want: params{}},
		{name: "UnknownField", raw: `{"regoin":"eu"}`, wantErr: `unknown field "regoin"`},
		{name: "WrongTypeNamesField", raw: `{"limit":"ten"}`, wantErr: `field "limit"`},
		{name: "TrailingData", raw: `{"limit":1} {"limit":2}`, wantErr: "unexpected data after the value"},
		{name: "Syntax", raw: `{"limit":`, wantErr: "decode params"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			it := etl.NewItem(etl.ItemSpec{Params: json.RawMessage(tc.raw)})
			var got params
			err := it.Params(&got)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Params() error = %v, want one containing %q", err, tc.wantErr)
				}
				if c := etl.Classify(err); c != etl.CategoryData || !etl.IsPermanent(err) {
					t.Errorf("Params() error classifies as %s (permanent %t), want DATA (permanent)", c, etl.IsPermanent(err))
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("Params mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestItemConfigKeepsLargeIntegers(t *testing.T) {
	t.Parallel()
	it := etl.NewItem(etl.ItemSpec{Config: json.RawMessage(`{"id":9007199254740993}`)})
	var got map[string]any
	if err := it.Config(&got); err != nil {
		t.Fatal(err)
	}
	if got["id"] != json.Number("9007199254740993") {
		t.Errorf(`Config decoded "id" as %#v, want json.Number("9007199254740993")`, got["id"])
	}
}

func TestItemRecorders(t *testing.T) {
	t.Parallel()
	base := time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)
	it := etl.NewItem(etl.ItemSpec{})
	if diff := cmp.Diff(etl.Metrics{}, it.Metrics()); diff != "" {
		t.Errorf("fresh item reports metrics (-want +got):\n%s", diff)
	}

	const workers = 16
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range 100 {
				it.AddRead(2)
				it.AddWritten(1)
				it.AddPages(1)
				it.AddRead(-5) // ignored
				it.ObserveWatermark(base.Add(time.Duration(w*100+i) * time.Second))
				it.ObserveWatermark(time.Time{}) // ignored
			}
		})
	}
	wg.Wait()

	want := etl.Metrics{
		RecordsRead:    workers * 100 * 2,
		RecordsWritten: workers * 100,
		Pages:          workers * 100,
		Watermark:      ptr(base.Add(time.Duration((workers-1)*100+99) * time.Second)),
	}
	if diff := cmp.Diff(want, it.Metrics()); diff != "" {
		t.Errorf("Metrics mismatch (-want +got):\n%s", diff)
	}

	// An earlier watermark never replaces a later one.
	it.ObserveWatermark(base)
	if got := it.Metrics().Watermark; !got.Equal(*want.Watermark) {
		t.Errorf("earlier watermark replaced the later one: got %v, want %v", got, *want.Watermark)
	}
}

func TestParseStrategy(t *testing.T) {
	t.Parallel()
	for _, s := range []etl.Strategy{etl.StrategyNone, etl.StrategyModifiedDate, etl.StrategyLastRun} {
		if got, err := etl.ParseStrategy(string(s)); err != nil || got != s {
			t.Errorf("ParseStrategy(%q) = %q, %v; want %q, nil", s, got, err, s)
		}
	}
	if _, err := etl.ParseStrategy("modifiedDate"); err == nil || !strings.Contains(err.Error(), `unknown strategy "modifiedDate"`) {
		t.Errorf(`ParseStrategy("modifiedDate") error = %v, want unknown strategy`, err)
	}
}

func TestConfigLeavesOutExecutorKeys(t *testing.T) {
	t.Parallel()
	it := etl.NewItem(etl.ItemSpec{Config: json.RawMessage(`{"target_table":"t","target_url_env":"WAREHOUSE_URL"}`)})
	var cfg struct {
		TargetTable string `json:"target_table"`
	}
	if err := it.Config(&cfg); err != nil {
		t.Fatalf("Config with target_url_env: %v", err)
	}
	if cfg.TargetTable != "t" {
		t.Errorf("target_table = %q, want t", cfg.TargetTable)
	}
	bad := etl.NewItem(etl.ItemSpec{Config: json.RawMessage(`{"target_tabel":"t"}`)})
	if err := bad.Config(&cfg); err == nil || etl.Classify(err) != etl.CategoryData {
		t.Errorf("Config with a typo = %v, want a DATA error", err)
	}
}
