package etl_test

import (
	"context"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/etlexec/etlexec/etl"
)

func nopHandler(context.Context, *etl.Item) error { return nil }

func TestRegistry(t *testing.T) {
	t.Parallel()

	t.Run("LookupAndKinds", func(t *testing.T) {
		t.Parallel()
		r := etl.NewRegistry()
		called := ""
		for _, kind := range []string{"zeta", "alpha", "mid"} {
			r.Register(kind, func(context.Context, *etl.Item) error { called = kind; return nil })
		}

		if diff := cmp.Diff([]string{"alpha", "mid", "zeta"}, r.Kinds()); diff != "" {
			t.Errorf("Kinds() mismatch (-want +got):\n%s", diff)
		}
		h, ok := r.Lookup("mid")
		if !ok {
			t.Fatal(`Lookup("mid") found nothing`)
		}
		if err := h(t.Context(), nil); err != nil {
			t.Fatal(err)
		}
		if called != "mid" {
			t.Errorf(`Lookup("mid") returned the handler of %q`, called)
		}
		if _, ok := r.Lookup("missing"); ok {
			t.Error(`Lookup("missing") found a handler`)
		}
	})

	t.Run("EmptyRegistry", func(t *testing.T) {
		t.Parallel()
		if kinds := etl.NewRegistry().Kinds(); len(kinds) != 0 {
			t.Errorf("Kinds() = %q, want none", kinds)
		}
	})

	panics := []struct {
		name  string
		setup func(r *etl.Registry)
		kind  string
		h     etl.HandlerFunc
	}{
		{name: "EmptyKind", setup: func(*etl.Registry) {}, kind: "", h: nopHandler},
		{name: "NilHandler", setup: func(*etl.Registry) {}, kind: "k", h: nil},
		{name: "Duplicate", setup: func(r *etl.Registry) { r.Register("k", nopHandler) }, kind: "k", h: nopHandler},
	}
	for _, tc := range panics {
		t.Run("Panics"+tc.name, func(t *testing.T) {
			t.Parallel()
			r := etl.NewRegistry()
			tc.setup(r)
			defer func() {
				if recover() == nil {
					t.Errorf("Register(%q) did not panic", tc.kind)
				}
			}()
			r.Register(tc.kind, tc.h)
		})
	}
}
