package etlexec_test

import (
	"bufio"
	"errors"
	"go/build"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

const (
	modulePath = "github.com/etlexec/etlexec"
	mapDoc     = "docs/development.md"
	mapHeading = "## The map"
)

// TestPackageMap keeps the package map of docs/development.md true to the code: every package of
// the module has one row, every row names a package, and a row's imports column is exactly the
// module's packages that the package's non-test code imports. A new import across the map's
// lines is then a change to the map, seen in review.
func TestPackageMap(t *testing.T) {
	t.Parallel()
	rows := readPackageMap(t)
	pkgs := modulePackages(t)
	for p, imports := range pkgs {
		row, ok := rows[p]
		if !ok {
			t.Errorf("%s: package %s has no row in the map; add one saying what it owns and that it imports %s",
				mapDoc, p, render(imports))
			continue
		}
		if !slices.Equal(row, imports) {
			t.Errorf("%s: the row of %s says it imports %s, but it imports %s", mapDoc, p, render(row), render(imports))
		}
	}
	for p := range rows {
		if _, ok := pkgs[p]; !ok {
			t.Errorf("%s: the map has a row for %s, which is no package of the module", mapDoc, p)
		}
	}
}

var backticked = regexp.MustCompile("`([^`]+)`")

// readPackageMap returns the map's rows: package (relative to the module, "." for the root) →
// the packages its third column names, sorted.
func readPackageMap(t *testing.T) map[string][]string {
	t.Helper()
	f, err := os.Open(mapDoc)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rows := map[string][]string{}
	in := false
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "## "):
			in = strings.HasPrefix(line, mapHeading)
			continue
		case !in || !strings.HasPrefix(line, "| `"):
			continue
		}
		cells := strings.Split(strings.Trim(line, "|"), " | ")
		if len(cells) != 3 {
			t.Fatalf("%s: map row with %d cells, want 3 (package | owns | imports): %s", mapDoc, len(cells), line)
		}
		imports := []string{}
		for _, m := range backticked.FindAllStringSubmatch(cells[2], -1) {
			imports = append(imports, m[1])
		}
		slices.Sort(imports)
		for _, m := range backticked.FindAllStringSubmatch(cells[0], -1) {
			if _, dup := rows[m[1]]; dup {
				t.Errorf("%s: %s has two rows", mapDoc, m[1])
			}
			rows[m[1]] = imports
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(rows) == 0 {
		t.Fatalf("%s: no map rows under %q", mapDoc, mapHeading)
	}
	return rows
}

// modulePackages returns every package of this module (test-only ones too) → the module's
// packages its non-test files import, sorted. deploy/k8s and tools are modules of their own.
func modulePackages(t *testing.T) map[string][]string {
	t.Helper()
	pkgs := map[string][]string{}
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return err
		}
		name := d.Name()
		if path != "." && (strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_") || name == "testdata" ||
			name == "node_modules" || path == "deploy" || path == "tools") {
			return filepath.SkipDir
		}
		p, err := build.ImportDir(path, 0)
		var noGo *build.NoGoError
		if errors.As(err, &noGo) && len(p.TestGoFiles)+len(p.XTestGoFiles) == 0 {
			return nil
		} else if err != nil && !errors.As(err, &noGo) {
			return err
		}
		imports := []string{}
		for _, imp := range p.Imports {
			if imp == modulePath {
				imports = append(imports, ".")
			} else if rel, ok := strings.CutPrefix(imp, modulePath+"/"); ok {
				imports = append(imports, rel)
			}
		}
		slices.Sort(imports)
		pkgs[filepath.ToSlash(path)] = imports
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return pkgs
}

func render(pkgs []string) string {
	if len(pkgs) == 0 {
		return "nothing of the module (write -)"
	}
	return "`" + strings.Join(pkgs, "` `") + "`"
}
