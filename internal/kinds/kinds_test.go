package kinds_test

import (
	"encoding/json"
	"errors"
	"slices"
	"testing"

	"github.com/etlexec/etlexec/etl"
	"github.com/etlexec/etlexec/internal/kinds"
	"github.com/etlexec/etlexec/internal/kinds/httpjson"
	"github.com/etlexec/etlexec/internal/kinds/sqlincremental"
	"github.com/etlexec/etlexec/internal/kinds/synthetic"
)

func TestBuiltin(t *testing.T) {
	t.Parallel()
	r := kinds.Builtin()
	want := []string{httpjson.Kind, sqlincremental.Kind, synthetic.Kind}
	if got := r.Kinds(); !slices.Equal(got, want) {
		t.Fatalf("Builtin().Kinds() = %v, want %v", got, want)
	}
	for _, k := range r.Kinds() {
		if h, ok := r.Lookup(k); !ok || h == nil {
			t.Errorf("kind %q has no handler", k)
		}
		// Every built-in kind declares its config, so jobs apply refuses a typo.
		err := r.ValidateConfig(k, json.RawMessage(`{"no_such_key": 1}`), etl.StrategyNone)
		if !errors.Is(err, etl.ErrUnknownConfigKey) {
			t.Errorf("kind %q accepts an unknown config key: %v", k, err)
		}
	}
}
