package serve

// Charts are computed here as plain geometry and drawn by the templates as inline SVG: no
// script, no library, and a page that renders the same with JavaScript off.

import (
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"

	"github.com/etlexec/etlexec/internal/store"
)

// barChart is one series of bars, one per run, oldest on the left.
type barChart struct {
	Title  string
	W, H   int
	PlotX  float64 // left edge of the plot (after the axis labels)
	PlotY  float64 // baseline
	YMax   string  // label of the top of the axis
	Bars   []bar
	XFirst string
	XLast  string
	Empty  bool
}

type bar struct {
	X, Y, W, H float64
	Class      string
	Title      string
	Href       string
}

const (
	chartW      = 1100
	chartH      = 130
	chartGutter = 70
	chartTop    = 8
	chartBottom = 18
)

// runCharts draws the duration and the records written of runs (newest first, as listed).
func runCharts(runs []store.Run) (durations, written barChart) {
	chron := slices.Clone(runs)
	slices.Reverse(chron)
	dur := func(r store.Run) float64 {
		if r.DurationMs == nil {
			return 0
		}
		return float64(*r.DurationMs)
	}
	rec := func(r store.Run) float64 { return float64(r.RecordsWritten) }
	durations = bars("Duration per run", chron, dur, func(v float64) string { return fmtDuration(int64(v)) })
	written = bars("Records written per run", chron, rec, func(v float64) string { return fmtInt(int64(v)) })
	return durations, written
}

func bars(title string, runs []store.Run, value func(store.Run) float64, label func(float64) string) barChart {
	c := barChart{Title: title, W: chartW, H: chartH, PlotX: chartGutter, PlotY: chartH - chartBottom, Empty: len(runs) == 0}
	if c.Empty {
		return c
	}
	var maxV float64
	for _, r := range runs {
		maxV = max(maxV, value(r))
	}
	c.YMax = label(maxV)
	if maxV == 0 {
		maxV = 1
	}
	plotW := float64(chartW - chartGutter - 4)
	plotH := c.PlotY - chartTop
	slot := plotW / float64(len(runs))
	w := max(slot*0.8, 1)
	for i, r := range runs {
		v := value(r)
		h := v / maxV * plotH
		if v > 0 {
			h = max(h, 1)
		}
		status := r.Status
		detail := label(v)
		if r.DurationMs == nil && r.EndedAt == nil {
			detail = "still " + string(status)
		}
		c.Bars = append(c.Bars, bar{
			X: c.PlotX + float64(i)*slot + (slot-w)/2, Y: c.PlotY - h, W: w, H: h,
			Class: statusClass(status),
			Title: fmt.Sprintf("%s · %s · %s · %s", fmtTime(r.StartedAt), status, detail, r.RunID),
			Href:  "/runs/" + r.RunID.String(),
		})
	}
	c.XFirst = fmtTime(runs[0].StartedAt)
	c.XLast = fmtTime(runs[len(runs)-1].StartedAt)
	return c
}

// timeline draws attempts as bars from started_at to ended_at, one row per attempt in
// attempt_no order, on a shared time axis.
type timeline struct {
	W, H   int
	PlotX  float64
	AxisY  float64
	Rows   []timelineRow
	Ticks  []tick
	Start  string
	Span   string
	Labels bool
	Empty  bool
}

type timelineRow struct {
	X, Y, W, H float64
	LabelY     float64
	Label      string
	Class      string
	Open       bool // still running: the bar ends at now
	Title      string
	Href       string
}

type tick struct {
	X      float64
	Label  string
	Anchor string // SVG text-anchor
}

const (
	tlW      = 1100
	tlGutter = 150
	tlAxis   = 22
)

func attemptTimeline(runID uuid.UUID, attempts []store.AttemptRow, now time.Time) timeline {
	t := timeline{W: tlW, PlotX: tlGutter, Empty: len(attempts) == 0}
	if t.Empty {
		return t
	}
	t0 := attempts[0].StartedAt
	t1 := t0
	for _, a := range attempts {
		if a.StartedAt.Before(t0) {
			t0 = a.StartedAt
		}
		end := now
		if a.EndedAt != nil {
			end = *a.EndedAt
		}
		if end.After(t1) {
			t1 = end
		}
	}
	span := t1.Sub(t0)
	if span <= 0 {
		span = time.Millisecond
	}
	rowH := min(max(360/float64(len(attempts)), 3), 18)
	t.Labels = rowH >= 12
	plotW := float64(tlW - tlGutter - 8)
	x := func(ts time.Time) float64 { return t.PlotX + float64(ts.Sub(t0))/float64(span)*plotW }
	for i, a := range attempts {
		end, open := now, a.EndedAt == nil
		if !open {
			end = *a.EndedAt
		}
		x0 := x(a.StartedAt)
		row := timelineRow{
			X: x0, Y: float64(i) * rowH, W: max(x(end)-x0, 2), H: max(rowH-2, 2),
			LabelY: float64(i)*rowH + rowH/2 + 4,
			Label:  fmt.Sprintf("#%d item %d try %d", a.AttemptNo, a.ItemNo, a.ItemAttempt),
			Class:  statusClass(a.Status), Open: open,
			Href: "/runs/" + runID.String() + "?attempt=" + a.AttemptID.String() + "#logs",
		}
		row.Title = fmt.Sprintf("attempt #%d · item %d try %d · %s", a.AttemptNo, a.ItemNo, a.ItemAttempt, a.Status)
		if catShown(a.ErrorCategory) {
			row.Title += " · " + string(a.ErrorCategory)
		}
		row.Title += "\n" + fmtTime(a.StartedAt) + " → "
		if open {
			row.Title += "(running)"
		} else {
			row.Title += fmtTime(end) + " (" + fmtDuration(end.Sub(a.StartedAt).Milliseconds()) + ")"
		}
		if a.WorkerID != nil {
			row.Title += "\nworker " + *a.WorkerID
		}
		if a.ErrorMessage != nil {
			row.Title += "\n" + clip(*a.ErrorMessage, tooltipMax)
		}
		t.Rows = append(t.Rows, row)
	}
	t.AxisY = float64(len(attempts)) * rowH
	t.H = int(t.AxisY) + tlAxis
	for i := 0; i <= 4; i++ {
		off := span * time.Duration(i) / 4
		anchor := "middle"
		switch i {
		case 0:
			anchor = "start"
		case 4:
			anchor = "end"
		}
		t.Ticks = append(t.Ticks, tick{X: x(t0.Add(off)), Label: "+" + fmtDuration(off.Milliseconds()), Anchor: anchor})
	}
	t.Start = fmtTime(t0)
	t.Span = fmtDuration(span.Milliseconds())
	return t
}
