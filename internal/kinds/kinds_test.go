package kinds_test

import (
	"slices"
	"testing"

	"github.com/etlexec/etlexec/internal/kinds"
	"github.com/etlexec/etlexec/internal/kinds/synthetic"
)

func TestBuiltin(t *testing.T) {
	t.Parallel()
	r := kinds.Builtin()
	if got := r.Kinds(); !slices.Contains(got, synthetic.Kind) {
		t.Fatalf("Builtin().Kinds() = %v, want it to contain %q", got, synthetic.Kind)
	}
	for _, k := range r.Kinds() {
		if h, ok := r.Lookup(k); !ok || h == nil {
			t.Errorf("kind %q has no handler", k)
		}
	}
}
