package cli

import (
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/etlexec/etlexec/internal/backfill"
	"github.com/etlexec/etlexec/internal/ops"
	"github.com/etlexec/etlexec/internal/retention"
	"github.com/etlexec/etlexec/internal/store"
)

// jsonPrinted lists the types the commands print with --json (printJSONOr and historyList).
var jsonPrinted = []any{
	store.Page[store.Run]{}, store.RunDetail{}, store.Page[store.ItemRow]{}, store.Page[store.AttemptRow]{},
	store.Page[store.LogLine]{}, store.Page[store.Cursor]{}, []store.JobSummary{}, store.JobControl{},
	ops.DeleteResult{}, ops.CancelResult{}, ops.RerunResult{}, retention.Report{}, backfill.Report{},
}

var snakeCase = regexp.MustCompile(`^[a-z][a-z0-9]*(_[a-z0-9]+)*$`)

// TestJSONOutputsAreSnakeCase: every key the commands print with --json is snake_case and named
// by a json tag, the API's convention, so no Go field name (PascalCase) reaches a script.
func TestJSONOutputsAreSnakeCase(t *testing.T) {
	t.Parallel()
	seen := map[reflect.Type]bool{}
	for _, v := range jsonPrinted {
		checkJSONKeys(t, reflect.TypeOf(v), reflect.TypeOf(v).String(), seen)
	}
}

func checkJSONKeys(t *testing.T, typ reflect.Type, path string, seen map[reflect.Type]bool) {
	t.Helper()
	for typ.Kind() == reflect.Pointer || typ.Kind() == reflect.Slice || typ.Kind() == reflect.Array || typ.Kind() == reflect.Map {
		typ = typ.Elem()
	}
	// Types of other modules (time.Time, uuid.UUID, json.RawMessage) marshal themselves.
	if typ.Kind() != reflect.Struct || seen[typ] || !strings.HasPrefix(typ.PkgPath(), "github.com/etlexec/etlexec") {
		return
	}
	seen[typ] = true
	for i := range typ.NumField() {
		f := typ.Field(i)
		if !f.IsExported() {
			continue
		}
		tag, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		switch {
		case tag == "-":
			continue
		case tag == "" && f.Anonymous:
			checkJSONKeys(t, f.Type, path, seen) // embedded: its fields are this object's keys
			continue
		case !snakeCase.MatchString(tag):
			t.Errorf("%s.%s is printed as %q: give it a snake_case json tag", path, f.Name, keyOf(tag, f.Name))
		}
		checkJSONKeys(t, f.Type, path+"."+f.Name, seen)
	}
}

func keyOf(tag, field string) string {
	if tag == "" {
		return field
	}
	return tag
}
