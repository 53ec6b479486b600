// Package incremental owns the window rules the built-in incremental kinds share: an item's
// window [cursor − lookback, upper) fixed when the item starts, the cursor meta they store with
// the cursor, and the one-line note that says what a load did. It uses only the etl SDK.
//
// Why the window is exact: upper is fixed before the source is read and every row read has a
// modification time below it, so the watermark (the greatest such time) never passes upper.
// A row that changes after upper was fixed gets a time at or after upper, hence after the
// watermark, and the next run (which starts at the watermark, inclusive) reads it. Rows at
// exactly the watermark are re-read by the next run, so a row written later at that same time
// is not skipped. What remains is a row that becomes visible late with a time before upper (a
// transaction that commits after the read): the kind's horizon (an exact one where the source
// can tell, else a safety lag) keeps upper below such rows, and the lookback re-reads them.
package incremental

import (
	"cmp"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/etlexec/etlexec/etl"
)

// WindowConfig is the part of a kind's config that shapes the window; kinds embed it, so its
// keys sit at the top level of the job's config.
type WindowConfig struct {
	// Lookback is a Go duration re-read before the cursor on every run, for rows that become
	// visible late with an older modification time than the cursor. Re-read rows are upserted
	// again, which is harmless. Each kind documents its default.
	Lookback string `json:"lookback"`
	// SafetyLag is a Go duration kept between the clock (the source's where it can be read)
	// and upper: rows modified in the last SafetyLag are left to the next run, for writers whose
	// commits lag their modification times or whose clocks run behind. Defaults to 0 unless a
	// kind says otherwise.
	SafetyLag string `json:"safety_lag"`

	lookback, safetyLag time.Duration
}

// Validate parses the durations, applying the kind's defaults for absent keys. Errors name the
// key.
func (c *WindowConfig) Validate(lookbackDefault, lagDefault time.Duration) error {
	var err error
	if c.lookback, err = duration("lookback", c.Lookback, lookbackDefault); err != nil {
		return err
	}
	c.safetyLag, err = duration("safety_lag", c.SafetyLag, lagDefault)
	return err
}

// LookbackDuration is the parsed lookback (after Validate).
func (c *WindowConfig) LookbackDuration() time.Duration { return c.lookback }

// SafetyLagDuration is the parsed safety lag (after Validate).
func (c *WindowConfig) SafetyLagDuration() time.Duration { return c.safetyLag }

func duration(key, s string, def time.Duration) (time.Duration, error) {
	if s == "" {
		return def, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("%s %q: want a non-negative Go duration such as \"15m\"", key, s)
	}
	return d, nil
}

// Window is one item's window. For modified_date it is [Start, Upper); for last_run the
// executor's convention (Start, Upper] with Upper the run's logical start; strategy none has
// no window.
type Window struct {
	Strategy etl.Strategy
	// Cursor is the stored cursor, nil on a first load.
	Cursor *time.Time
	// Lookback is how far before the cursor Start lies.
	Lookback time.Duration
	// Start is Cursor − Lookback, nil on a first load (no lower bound).
	Start *time.Time
	// Upper bounds the window above (see the type's comment); nil until SetUpper, and always for
	// strategy none.
	Upper *time.Time
	// UpperWhy says how Upper was fixed, for the note ("source clock − 5s safety lag").
	UpperWhy string
	// Prev is the meta stored with the cursor, nil when there is none or it does not describe
	// the cursor.
	Prev *Meta
}

// NewWindow starts the window of it: the cursor, Start, and for last_run its Upper (the run's
// logical start).
func NewWindow(it *etl.Item, lookback time.Duration) *Window {
	iw := it.Window()
	w := &Window{Strategy: it.Strategy(), Cursor: iw.Start, Lookback: lookback}
	if w.Strategy == etl.StrategyNone {
		w.Cursor = nil
		return w
	}
	if iw.Start != nil {
		s := iw.Start.Add(-lookback).UTC()
		w.Start = &s
	}
	if w.Strategy == etl.StrategyLastRun && iw.End != nil {
		e := iw.End.UTC()
		w.Upper, w.UpperWhy = &e, "the run's logical start"
	}
	if m, ok := ParseMeta(it.CursorMeta()); ok && w.Cursor != nil && m.Modified.Equal(*w.Cursor) {
		w.Prev = &m
	}
	return w
}

// SetUpper fixes Upper for modified_date at clock − lag, or keeps last_run's (the run's
// logical start); why says where clock came from. It returns the upper in force.
func (w *Window) SetUpper(clock time.Time, lag time.Duration, why string) *time.Time {
	if w.Strategy != etl.StrategyModifiedDate {
		return w.Upper
	}
	u := clock.Add(-lag).UTC()
	if lag > 0 {
		why += " − " + lag.String() + " safety lag"
	}
	w.Upper, w.UpperWhy = &u, why
	return w.Upper
}

// Incremental reports whether the window bounds what is read.
func (w *Window) Incremental() bool { return w.Strategy != etl.StrategyNone }

// Contains reports whether a row modified at t belongs to the window.
func (w *Window) Contains(t time.Time) bool {
	switch w.Strategy {
	case etl.StrategyModifiedDate:
		return (w.Start == nil || !t.Before(*w.Start)) && (w.Upper == nil || t.Before(*w.Upper))
	case etl.StrategyLastRun:
		return (w.Start == nil || t.After(*w.Start)) && (w.Upper == nil || !t.After(*w.Upper))
	}
	return true
}

// Meta is the cursor meta the built-in kinds store with the cursor (cursor_meta). The cursor is
// what moves the window; the meta says what the cursor's value covered, for the next run's note.
type Meta struct {
	// Modified is the watermark the meta describes: the greatest modification time loaded.
	Modified time.Time `json:"modified"`
	// Key holds the key columns of the greatest (modified, key) row loaded: with Modified, the
	// composite cursor.
	Key map[string]any `json:"key,omitempty"`
	// RowsAtModified counts the rows loaded with exactly Modified; the next run re-reads them.
	RowsAtModified int64 `json:"rows_at_modified"`
	// Upper is the upper bound of the run that loaded them.
	Upper time.Time `json:"upper"`
}

// ParseMeta decodes stored meta; false when raw is empty or not this kind of meta.
func ParseMeta(raw json.RawMessage) (Meta, bool) {
	var m Meta
	if len(raw) == 0 || json.Unmarshal(raw, &m) != nil || m.Modified.IsZero() {
		return Meta{}, false
	}
	return m, true
}

// Tally counts what a load read against its window: the watermark, the rows at it and the rows
// re-read at or before the cursor.
type Tally struct {
	w *Window
	// Read counts the rows read.
	Read int64
	// AtCursor counts rows modified exactly at the cursor (the boundary, re-read on purpose).
	AtCursor int64
	// BeforeCursor counts rows modified before the cursor (re-read by the lookback, or late).
	BeforeCursor int64
	max          time.Time
	atMax        int64
	key          map[string]any
}

// NewTally starts counting for w.
func NewTally(w *Window) *Tally { return &Tally{w: w} }

// Rank says where a row's modification time stands against the greatest counted before it.
type Rank int

// Ranks Add returns.
const (
	Below Rank = iota // before the greatest so far
	Tie               // equal to it: compare keys for the composite cursor
	Above             // the new greatest: its key is the composite cursor's, for now
)

// Add counts one row modified at mod and ranks it, so the caller knows when to consider the
// row's key for the composite cursor (see SetKey).
func (t *Tally) Add(mod time.Time) Rank {
	t.Read++
	if c := t.w.Cursor; c != nil {
		switch {
		case mod.Equal(*c):
			t.AtCursor++
		case mod.Before(*c):
			t.BeforeCursor++
		}
	}
	switch {
	case t.atMax == 0 || mod.After(t.max):
		t.max, t.atMax, t.key = mod, 1, nil
		return Above
	case mod.Equal(t.max):
		t.atMax++
		return Tie
	}
	return Below
}

// AddUntimed counts a row without a modification time (a record lacking modified_field).
func (t *Tally) AddUntimed() { t.Read++ }

// SetKey records the key of the row with the greatest (modified, key) so far.
func (t *Tally) SetKey(key map[string]any) { t.key = key }

// Key is the key recorded with SetKey, nil if none.
func (t *Tally) Key() map[string]any { return t.key }

// TrackKey keeps the composite cursor's key as rows are counted: call it with each row's rank
// (from Add) and a function returning its key by column (called only for Above and Tie).
func (t *Tally) TrackKey(r Rank, order []string, key func() map[string]any) {
	switch r {
	case Above:
		t.key = key()
	case Tie:
		if k := key(); t.key == nil || CompareKeys(k, t.key, order) > 0 {
			t.key = k
		}
	}
}

// CompareKeys orders two keys column by column (in order): numbers by value, strings and
// everything else by their text. It returns -1, 0 or 1.
func CompareKeys(a, b map[string]any, order []string) int {
	for _, col := range order {
		if c := compareValues(a[col], b[col]); c != 0 {
			return c
		}
	}
	return 0
}

func compareValues(a, b any) int {
	if ia, ok := a.(int64); ok {
		if ib, ok := b.(int64); ok {
			return cmp.Compare(ia, ib)
		}
	}
	if fa, ok := number(a); ok {
		if fb, ok := number(b); ok {
			return cmp.Compare(fa, fb)
		}
	}
	if ta, ok := a.(time.Time); ok {
		if tb, ok := b.(time.Time); ok {
			return ta.Compare(tb)
		}
	}
	return strings.Compare(fmt.Sprint(a), fmt.Sprint(b))
}

func number(v any) (float64, bool) {
	switch v := v.(type) {
	case int64:
		return float64(v), true
	case int32:
		return float64(v), true
	case int16:
		return float64(v), true
	case int:
		return float64(v), true
	case uint64:
		return float64(v), true
	case float64:
		return v, true
	case float32:
		return float64(v), true
	case json.Number:
		f, err := v.Float64()
		return f, err == nil
	}
	return 0, false
}

// Watermark is the greatest modification time counted, false when none was.
func (t *Tally) Watermark() (time.Time, bool) { return t.max, t.atMax > 0 }

// Finish reports the watermark and meta to it (modified_date only) and sets its note; written
// is the rows the load inserted or changed, how a word on how they were written (may be "").
func (t *Tally) Finish(it *etl.Item, written int64, how string) {
	if t.w.Strategy == etl.StrategyModifiedDate && t.atMax > 0 {
		it.ObserveWatermark(t.max)
		m := Meta{Modified: t.max, Key: t.key, RowsAtModified: t.atMax}
		if t.w.Upper != nil {
			m.Upper = *t.w.Upper
		}
		if b, err := json.Marshal(m); err == nil {
			it.SetCursorMeta(b)
		}
	}
	it.SetNote(t.note(written, how))
}

// note says what happened in one line: rows read and written, what was re-read and why, where
// the cursor goes or why it holds, and how upper was fixed.
func (t *Tally) note(written int64, how string) string {
	w := t.w
	var b strings.Builder
	if w.Incremental() && w.Cursor == nil {
		b.WriteString("first load: ")
	}
	fmt.Fprintf(&b, "read %s, wrote %s", count(t.Read, "row"), strconv.FormatInt(written, 10))
	if unchanged := t.Read - written; unchanged > 0 && t.Read > 0 {
		fmt.Fprintf(&b, " (%d unchanged)", unchanged)
	}
	if how != "" {
		b.WriteString(" " + how)
	}
	if !w.Incremental() {
		return b.String()
	}
	if w.Cursor != nil && t.AtCursor+t.BeforeCursor > 0 {
		fmt.Fprintf(&b, "; re-read %d at the cursor's time", t.AtCursor)
		if w.Prev != nil {
			fmt.Fprintf(&b, " (%d there last run)", w.Prev.RowsAtModified)
		}
		if t.BeforeCursor > 0 {
			fmt.Fprintf(&b, " and %d within the %s lookback", t.BeforeCursor, w.Lookback)
		}
	}
	if w.Strategy == etl.StrategyModifiedDate {
		switch {
		case t.atMax > 0 && (w.Cursor == nil || t.max.After(*w.Cursor)):
			fmt.Fprintf(&b, "; cursor → %s", stamp(t.max))
		case w.Cursor != nil && t.Read == 0:
			fmt.Fprintf(&b, "; cursor held at %s: nothing modified in %s", stamp(*w.Cursor), w.describe())
		case w.Cursor != nil:
			fmt.Fprintf(&b, "; cursor held at %s: no row read was modified after it", stamp(*w.Cursor))
		default:
			fmt.Fprintf(&b, "; no cursor yet: nothing modified before %s", stamp(*w.Upper))
		}
	}
	if w.Upper != nil {
		fmt.Fprintf(&b, "; upper %s (%s)", stamp(*w.Upper), w.UpperWhy)
	}
	return b.String()
}

// describe renders the window as an interval.
func (w *Window) describe() string {
	lo, hi := "−∞", "∞"
	if w.Start != nil {
		lo = stamp(*w.Start)
	}
	if w.Upper != nil {
		hi = stamp(*w.Upper)
	}
	if w.Strategy == etl.StrategyLastRun {
		return "(" + lo + ", " + hi + "]"
	}
	return "[" + lo + ", " + hi + ")"
}

func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

func count(n int64, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return strconv.FormatInt(n, 10) + " " + what + "s"
}
