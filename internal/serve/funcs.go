package serve

import (
	"bytes"
	"encoding/json"
	"fmt"
	"html/template"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/etlexec/etlexec/etl"
	"github.com/etlexec/etlexec/internal/runstate"
	"github.com/etlexec/etlexec/internal/store"
)

// funcs are the console templates' helpers. Times are shown in UTC, the database's clock.
var funcs = template.FuncMap{
	"statusClass": statusClass,
	"levelClass":  func(l string) string { return "lv-" + strings.ToLower(l) },
	"ts":          fmtAnyTime,
	"iso":         isoTime,
	"dur":         fmtAnyDuration,
	"num":         fmtInt64,
	"short":       shortID,
	"str":         deref,
	"json":        compactJSON,
	"prettyJSON":  prettyJSON,
	"itemTitle":   itemTitle,
	"f":           func(v float64) string { return strconv.FormatFloat(v, 'f', 1, 64) },
	"catShown":    catShown,
	"since":       since,
}

// since is how long ago t was (on this server's clock), as fmtDuration prints it.
func since(v any) string {
	switch t := v.(type) {
	case time.Time:
		return fmtDuration(max(time.Since(t), 0).Milliseconds())
	case *time.Time:
		if t != nil {
			return fmtDuration(max(time.Since(*t), 0).Milliseconds())
		}
	}
	return "—"
}

// statusClass is the CSS class of a status badge or mark: SUCCESS → st-success.
func statusClass(s runstate.Status) string {
	return "st-" + strings.ReplaceAll(strings.ToLower(string(s)), "_", "-")
}

// catShown reports whether an error category is worth showing (not NONE).
func catShown(c etl.Category) bool { return c != "" && c != etl.CategoryNone }

const timeLayout = "2006-01-02 15:04:05Z"

func fmtTime(t time.Time) string { return t.UTC().Format(timeLayout) }

func fmtAnyTime(v any) string {
	switch t := v.(type) {
	case time.Time:
		return fmtTime(t)
	case *time.Time:
		if t != nil {
			return fmtTime(*t)
		}
	}
	return "—"
}

func isoTime(v any) string {
	switch t := v.(type) {
	case time.Time:
		return t.UTC().Format(time.RFC3339Nano)
	case *time.Time:
		if t != nil {
			return t.UTC().Format(time.RFC3339Nano)
		}
	}
	return ""
}

// fmtDuration prints milliseconds compactly: 850ms, 12.4s, 3m04s, 2h05m.
func fmtDuration(ms int64) string {
	d := time.Duration(ms) * time.Millisecond
	switch {
	case d < time.Second:
		return fmt.Sprintf("%dms", ms)
	case d < time.Minute:
		return strconv.FormatFloat(d.Seconds(), 'f', 1, 64) + "s"
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	}
	return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
}

func fmtAnyDuration(v any) string {
	switch d := v.(type) {
	case int64:
		return fmtDuration(d)
	case *int64:
		if d != nil {
			return fmtDuration(*d)
		}
	}
	return "—"
}

// fmtInt groups thousands: 1234567 → 1,234,567.
func fmtInt(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, r := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(r)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

func fmtInt64(v any) string {
	switch n := v.(type) {
	case int:
		return fmtInt(int64(n))
	case int32:
		return fmtInt(int64(n))
	case int64:
		return fmtInt(n)
	}
	return fmt.Sprint(v)
}

func shortID(v any) string {
	var s string
	switch id := v.(type) {
	case uuid.UUID:
		s = id.String()
	case *uuid.UUID:
		if id == nil {
			return "—"
		}
		s = id.String()
	default:
		s = fmt.Sprint(v)
	}
	// UUIDv7 ids share their leading (time) digits within a minute; the tail is random.
	if len(s) > 8 {
		return s[len(s)-8:]
	}
	return s
}

func deref(v any) string {
	switch s := v.(type) {
	case *string:
		if s != nil {
			return *s
		}
		return ""
	case string:
		return s
	}
	return fmt.Sprint(v)
}

func compactJSON(raw json.RawMessage) string {
	if len(raw) == 0 {
		return ""
	}
	var b bytes.Buffer
	if err := json.Compact(&b, raw); err != nil {
		return string(raw)
	}
	return b.String()
}

func prettyJSON(raw json.RawMessage) string {
	if len(raw) == 0 {
		return ""
	}
	var b bytes.Buffer
	if err := json.Indent(&b, raw, "", "  "); err != nil {
		return string(raw)
	}
	return b.String()
}

// itemTitle is the tooltip of an item's square in the status grid.
func itemTitle(it store.ItemRow) string {
	var b strings.Builder
	fmt.Fprintf(&b, "item %d · %s", it.ItemNo, it.Status)
	if catShown(it.ErrorCategory) {
		fmt.Fprintf(&b, " · %s", it.ErrorCategory)
	}
	fmt.Fprintf(&b, "\nparams %s\nattempts %d", clip(compactJSON(it.Params), tooltipMax), it.Attempts)
	if it.DurationMs != nil {
		fmt.Fprintf(&b, " · %s", fmtDuration(*it.DurationMs))
	}
	if it.RecordsWritten > 0 || it.RecordsRead > 0 {
		fmt.Fprintf(&b, "\nrecords read %s, written %s", fmtInt(it.RecordsRead), fmtInt(it.RecordsWritten))
	}
	if it.CursorNote != nil {
		fmt.Fprintf(&b, "\ncursor: %s", *it.CursorNote)
	}
	if it.ErrorMessage != nil {
		fmt.Fprintf(&b, "\n%s", clip(*it.ErrorMessage, tooltipMax))
	}
	return b.String()
}

// tooltipMax bounds a value shown in a tooltip: a grid of thousands of items must not carry
// thousands of large param objects.
const tooltipMax = 240

// clip shortens s to at most n bytes (on a rune boundary), marking the cut with "…".
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}
