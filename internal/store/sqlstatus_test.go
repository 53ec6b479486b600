package store_test

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/etlexec/etlexec/etl"
	"github.com/etlexec/etlexec/internal/runstate"
	"github.com/etlexec/etlexec/internal/store"
)

// upperLiteral is a quoted SQL literal in upper case: a status or an error category.
var upperLiteral = regexp.MustCompile(`'([A-Z][A-Z_]*)'`)

// TestQueryLiteralsAreKnownWords checks every upper-case literal the sqlc queries spell: each is
// a runstate status or an etl error category, or, in a query of the alert deliveries, a
// delivery status. A typo ('FAILD') or a status runstate does not know fails here instead of
// matching no row.
func TestQueryLiteralsAreKnownWords(t *testing.T) {
	t.Parallel()
	files, err := filepath.Glob("queries/*.sql")
	if err != nil || len(files) == 0 {
		t.Fatalf("no queries found: %v", err)
	}
	deliveries := []string{store.DeliveryPending, store.DeliveryDelivered, store.DeliveryFailed}
	seen := 0
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		// One block per query, from its "-- name:" line (or the file's start) to the next.
		for _, block := range strings.Split(string(raw), "-- name: ") {
			name, _, _ := strings.Cut(block, "\n")
			isDelivery := strings.Contains(block, "dw_etl_alert_deliveries")
			for _, line := range strings.Split(block, "\n") {
				if strings.HasPrefix(strings.TrimSpace(line), "--") {
					continue // comments speak English
				}
				for _, m := range upperLiteral.FindAllStringSubmatch(line, -1) {
					seen++
					word := m[1]
					_, catErr := etl.ParseCategory(word)
					switch {
					case slices.Contains(runstate.Statuses, runstate.Status(word)):
					case catErr == nil:
					case isDelivery && slices.Contains(deliveries, word):
					default:
						t.Errorf("%s, query %s: '%s' is neither a runstate status nor an error category", f, name, word)
					}
				}
			}
		}
	}
	if seen == 0 {
		t.Fatal("found no literal at all: the pattern is broken")
	}
}
