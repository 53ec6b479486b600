package incremental_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/etlexec/etlexec/etl"
	"github.com/etlexec/etlexec/internal/kinds/incremental"
)

var t0 = time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)

func item(s etl.Strategy, start, end *time.Time, meta string) *etl.Item {
	spec := etl.ItemSpec{Strategy: s, WindowStart: start, WindowEnd: end}
	if meta != "" {
		spec.CursorMeta = json.RawMessage(meta)
	}
	return etl.NewItem(spec)
}

func TestWindow(t *testing.T) {
	t.Parallel()
	cursor, end := t0, t0.Add(time.Hour)
	tests := []struct {
		name    string
		w       *incremental.Window
		in, out []time.Time
	}{
		{
			name: "ModifiedDateIsInclusiveAtTheCursorExclusiveAtUpper",
			w: func() *incremental.Window {
				w := incremental.NewWindow(item(etl.StrategyModifiedDate, &cursor, nil, ""), 0)
				w.SetUpper(t0.Add(time.Minute), 0, "clock")
				return w
			}(),
			in:  []time.Time{t0, t0.Add(time.Second)},
			out: []time.Time{t0.Add(-time.Nanosecond), t0.Add(time.Minute)},
		},
		{
			name: "LookbackWidensTheStart",
			w: func() *incremental.Window {
				w := incremental.NewWindow(item(etl.StrategyModifiedDate, &cursor, nil, ""), time.Hour)
				w.SetUpper(t0.Add(time.Minute), 5*time.Second, "clock")
				return w
			}(),
			in:  []time.Time{t0.Add(-time.Hour), t0.Add(time.Minute - 6*time.Second)},
			out: []time.Time{t0.Add(-time.Hour - 1), t0.Add(time.Minute - 5*time.Second)},
		},
		{
			name: "LastRunKeepsTheExecutorsWindow",
			w:    incremental.NewWindow(item(etl.StrategyLastRun, &cursor, &end, ""), 0),
			in:   []time.Time{t0.Add(time.Second), end},
			out:  []time.Time{t0, end.Add(time.Nanosecond)},
		},
		{
			name: "FirstLoadHasNoStart",
			w:    incremental.NewWindow(item(etl.StrategyModifiedDate, nil, nil, ""), time.Hour),
			in:   []time.Time{time.Date(1900, 1, 1, 0, 0, 0, 0, time.UTC)},
		},
		{
			name: "NoneTakesEverything",
			w:    incremental.NewWindow(item(etl.StrategyNone, &cursor, nil, ""), 0),
			in:   []time.Time{t0.Add(-24 * time.Hour)},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			for _, x := range tc.in {
				if !tc.w.Contains(x) {
					t.Errorf("Contains(%s) = false, want true", x)
				}
			}
			for _, x := range tc.out {
				if tc.w.Contains(x) {
					t.Errorf("Contains(%s) = true, want false", x)
				}
			}
		})
	}
}

func TestWindowReadsMetaOnlyForItsCursor(t *testing.T) {
	t.Parallel()
	cursor := t0
	meta := `{"modified":"2026-03-01T10:00:00Z","key":{"id":7},"rows_at_modified":3,"upper":"2026-03-01T10:05:00Z"}`
	w := incremental.NewWindow(item(etl.StrategyModifiedDate, &cursor, nil, meta), 0)
	if w.Prev == nil || w.Prev.RowsAtModified != 3 {
		t.Fatalf("Prev = %+v, want the stored meta", w.Prev)
	}
	other := t0.Add(time.Second)
	if w := incremental.NewWindow(item(etl.StrategyModifiedDate, &other, nil, meta), 0); w.Prev != nil {
		t.Errorf("meta for another cursor value was used: %+v", w.Prev)
	}
	if w := incremental.NewWindow(item(etl.StrategyModifiedDate, &cursor, nil, `{"x":1}`), 0); w.Prev != nil {
		t.Errorf("foreign meta was used: %+v", w.Prev)
	}
}

func TestTally(t *testing.T) {
	t.Parallel()
	cursor := t0
	meta := `{"modified":"2026-03-01T10:00:00Z","rows_at_modified":2,"upper":"2026-03-01T10:05:00Z"}`
	it := item(etl.StrategyModifiedDate, &cursor, nil, meta)
	w := incremental.NewWindow(it, time.Hour)
	w.SetUpper(t0.Add(10*time.Minute), time.Second, "source clock")
	tally := incremental.NewTally(w)
	order := []string{"id"}
	for _, r := range []struct {
		at time.Time
		id int64
	}{{t0.Add(-time.Minute), 1}, {t0, 2}, {t0, 3}, {t0.Add(time.Minute), 9}, {t0.Add(time.Minute), 4}, {t0.Add(30 * time.Second), 5}} {
		tally.TrackKey(tally.Add(r.at), order, func() map[string]any { return map[string]any{"id": r.id} })
	}
	tally.Finish(it, 2, "by test")
	m := it.Metrics()
	if m.Watermark == nil || !m.Watermark.Equal(t0.Add(time.Minute)) {
		t.Fatalf("watermark %v, want %s", m.Watermark, t0.Add(time.Minute))
	}
	got, ok := incremental.ParseMeta(m.CursorMeta)
	if !ok {
		t.Fatalf("meta %s does not parse", m.CursorMeta)
	}
	want := incremental.Meta{Modified: t0.Add(time.Minute), Key: map[string]any{"id": float64(9)}, RowsAtModified: 2,
		Upper: t0.Add(10*time.Minute - time.Second)}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("meta (-want +got):\n%s", diff)
	}
	for _, part := range []string{
		"read 6 rows, wrote 2 (4 unchanged) by test",
		"re-read 2 at the cursor's time (2 there last run) and 1 within the 1h0m0s lookback",
		"cursor → 2026-03-01T10:01:00Z",
		"upper 2026-03-01T10:09:59Z (source clock − 1s safety lag)",
	} {
		if !strings.Contains(m.Note, part) {
			t.Errorf("note %q lacks %q", m.Note, part)
		}
	}
}

func TestTallyNotes(t *testing.T) {
	t.Parallel()
	cursor := t0
	tests := []struct {
		name  string
		rows  []time.Time
		start *time.Time
		want  string
	}{
		{"NothingNew", nil, &cursor, "read 0 rows, wrote 0; cursor held at 2026-03-01T10:00:00Z: nothing modified in [2026-03-01T10:00:00Z, 2026-03-01T10:05:00Z)"},
		{"OnlyTheBoundary", []time.Time{t0}, &cursor, "cursor held at 2026-03-01T10:00:00Z: no row read was modified after it"},
		{"FirstLoadEmpty", nil, nil, "first load: read 0 rows, wrote 0; no cursor yet: nothing modified before 2026-03-01T10:05:00Z"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			it := item(etl.StrategyModifiedDate, tc.start, nil, "")
			w := incremental.NewWindow(it, 0)
			w.SetUpper(t0.Add(5*time.Minute), 0, "clock")
			tally := incremental.NewTally(w)
			for _, r := range tc.rows {
				tally.Add(r)
			}
			tally.Finish(it, 0, "")
			if note := it.Metrics().Note; !strings.Contains(note, tc.want) {
				t.Errorf("note %q lacks %q", note, tc.want)
			}
		})
	}
}

func TestCompareKeys(t *testing.T) {
	t.Parallel()
	order := []string{"a", "b"}
	for _, tc := range []struct {
		x, y map[string]any
		want int
	}{
		{map[string]any{"a": int64(9007199254740993)}, map[string]any{"a": int64(9007199254740992)}, 1},
		{map[string]any{"a": json.Number("10")}, map[string]any{"a": float64(9)}, 1},
		{map[string]any{"a": 1, "b": "x"}, map[string]any{"a": 1, "b": "y"}, -1},
		{map[string]any{"a": t0}, map[string]any{"a": t0}, 0},
	} {
		if got := incremental.CompareKeys(tc.x, tc.y, order); got != tc.want {
			t.Errorf("CompareKeys(%v, %v) = %d, want %d", tc.x, tc.y, got, tc.want)
		}
	}
}

func TestWindowConfig(t *testing.T) {
	t.Parallel()
	c := incremental.WindowConfig{}
	if err := c.Validate(5*time.Minute, time.Second); err != nil || c.LookbackDuration() != 5*time.Minute || c.SafetyLagDuration() != time.Second {
		t.Errorf("defaults: %v, %s, %s", err, c.LookbackDuration(), c.SafetyLagDuration())
	}
	for _, bad := range []incremental.WindowConfig{{Lookback: "soon"}, {SafetyLag: "-1s"}} {
		if err := bad.Validate(0, 0); err == nil {
			t.Errorf("Validate(%+v) = nil, want an error", bad)
		}
	}
}
