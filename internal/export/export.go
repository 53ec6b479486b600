// Package export writes history listings as CSV, for `enqueuer items --csv`, the API's
// ?format=csv and the console's export link: the same columns from the same store query.
package export

import (
	"context"
	"encoding/csv"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/etlexec/etlexec/internal/store"
)

// ItemColumns is the header of ItemsCSV.
var ItemColumns = []string{"item_no", "status", "error_category", "attempts", "param_hash", "params", "started_at", "ended_at",
	"duration_ms", "records_read", "records_written", "page_count", "cursor_start", "cursor_end", "cursor_note", "error_message"}

// ItemsCSV writes every item f selects (all pages, f.After onwards) as CSV with a header row,
// and returns how many items it wrote. Times are RFC 3339 in UTC; absent values are empty.
func ItemsCSV(ctx context.Context, st *store.Store, f store.ItemFilter, w io.Writer) (int, error) {
	cw := csv.NewWriter(w)
	if err := cw.Write(ItemColumns); err != nil {
		return 0, err
	}
	f.Limit = store.PageLimitMax
	n := 0
	for {
		page, err := st.HistoryItems(ctx, f)
		if err != nil {
			return n, err
		}
		for _, it := range page.Items {
			if err := cw.Write(itemRecord(it)); err != nil {
				return n, fmt.Errorf("write item %d: %w", it.ItemNo, err)
			}
			n++
		}
		cw.Flush()
		if err := cw.Error(); err != nil {
			return n, err
		}
		if page.Next == "" {
			return n, nil
		}
		f.After = page.Next
	}
}

func itemRecord(it store.ItemRow) []string {
	return []string{strconv.Itoa(int(it.ItemNo)), string(it.Status), string(it.ErrorCategory), strconv.Itoa(int(it.Attempts)), it.ParamHash,
		string(it.Params), ts(it.StartedAt), ts(it.EndedAt), i64(it.DurationMs), strconv.FormatInt(it.RecordsRead, 10),
		strconv.FormatInt(it.RecordsWritten, 10), strconv.FormatInt(it.PageCount, 10), ts(it.CursorStart), ts(it.CursorEnd),
		str(it.CursorNote), str(it.ErrorMessage)}
}

func ts(t *time.Time) string {
	if t == nil {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}

func i64(v *int64) string {
	if v == nil {
		return ""
	}
	return strconv.FormatInt(*v, 10)
}

func str(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
