package kinds_test

import (
	"encoding/json"
	"errors"
	"go/build"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
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

// TestKindsImportNoOtherKind holds the layout rule that a built-in kind uses the SDK, the shared
// kind helpers and its own packages, never another kind: what two kinds share (the Postgres
// loader, the window rules) is a helper with one owner. Tests count too. Every directory below
// internal/kinds is a kind unless it is listed in helpers.
func TestKindsImportNoOtherKind(t *testing.T) {
	t.Parallel()
	const prefix = "github.com/etlexec/etlexec/internal/kinds/"
	helpers := []string{"incremental", "kindtest", "pgtarget"}
	for _, h := range helpers {
		if _, err := os.Stat(h); err != nil {
			t.Errorf("helper %s: %v", h, err)
		}
	}
	// top is the directory directly below internal/kinds that holds path ("" for none).
	top := func(path string) string {
		first, _, _ := strings.Cut(path, "/")
		return first
	}
	var kindPkgs []string
	err := filepath.WalkDir(".", func(dir string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() || dir == "." {
			return err
		}
		pkg, err := build.ImportDir(dir, 0)
		if _, ok := errors.AsType[*build.NoGoError](err); ok {
			return nil
		} else if err != nil {
			return err
		}
		self := top(filepath.ToSlash(dir))
		if !slices.Contains(helpers, self) && !slices.Contains(kindPkgs, self) {
			kindPkgs = append(kindPkgs, self)
		}
		for _, imp := range slices.Concat(pkg.Imports, pkg.TestImports, pkg.XTestImports) {
			rest, ok := strings.CutPrefix(imp, prefix)
			if other := top(rest); ok && other != self && !slices.Contains(helpers, other) {
				t.Errorf("%s imports the kind %s; a kind imports no other kind (move what they share into a helper: %s)",
					filepath.ToSlash(dir), imp, strings.Join(helpers, ", "))
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// Each built-in kind is one package, so a helper missing from helpers shows here.
	if n := len(kinds.Builtin().Kinds()); len(kindPkgs) != n {
		t.Errorf("kind packages %v, but Builtin registers %d kinds; is a shared helper missing from helpers?", kindPkgs, n)
	}
}
