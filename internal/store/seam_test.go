package store_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// sqlcdb is store's generated code; its row types never leave store. Callers get the store's own
// types (snake_case JSON, typed statuses), so the CLI, the API and the console render one shape.
const generated = "sqlcdb"

// TestNoGeneratedTypesInExportedAPI fails when an exported declaration of store (a function or
// method signature, a struct field, a type, a variable) names a sqlcdb type, directly or through
// a type of store that is itself one (an alias such as `type Job = sqlcdb.DwEtlJob`).
func TestNoGeneratedTypesInExportedAPI(t *testing.T) {
	names, err := filepath.Glob("*.go")
	require.NoError(t, err)
	var files []*ast.File
	fset := token.NewFileSet()
	for _, name := range names {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		src, err := os.ReadFile(name)
		require.NoError(t, err)
		f, err := parser.ParseFile(fset, name, src, parser.SkipObjectResolution)
		require.NoError(t, err)
		files = append(files, f)
	}
	require.NotEmpty(t, files)
	require.Empty(t, leaks(fset, files), "store's exported API names sqlcdb types: convert them to store's own types")
}

// TestLeaksFindsEveryKind checks the checker itself: each declaration below leaks a sqlcdb type
// and must be reported; the unexported and converted ones must not.
func TestLeaksFindsEveryKind(t *testing.T) {
	src := `package store

import "example.com/sqlcdb"

type Job = sqlcdb.DwEtlJob                      // exported alias
type row = sqlcdb.DwEtlRun                      // unexported alias: fine by itself...
func GetRun() (row, error)                      // ...but not in an exported signature
func (s *Store) ListJobs(p sqlcdb.Params) error // exported method parameter
type Page struct {
	Items []*sqlcdb.DwEtlRun                    // exported field
	rows  []sqlcdb.DwEtlRun                     // unexported field: fine
	sqlcdb.Embedded                             // embedded, so exported
}
var Default sqlcdb.Options                      // exported variable
type Lister interface{ List() []sqlcdb.Row }   // exported interface method

type Store struct{ q *sqlcdb.Queries }          // unexported field: fine
func (s *Store) get() sqlcdb.DwEtlRun           // unexported method: fine
func runOf(r sqlcdb.DwEtlRun) Run               // unexported function: fine
func (p *pass) Job() sqlcdb.DwEtlJob            // method of an unexported type: fine
type Run struct{ RunID string }
`
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "leaky.go", src, parser.SkipObjectResolution)
	require.NoError(t, err)
	var got []string
	for _, l := range leaks(fset, []*ast.File{f}) {
		got = append(got, l[strings.Index(l, " ")+1:])
	}
	require.Equal(t, []string{"type Job", "func GetRun", "method Store.ListJobs", "field Page.Items",
		"field Page.Embedded", "var Default", "method Lister.List"}, got)
}

// leaks lists the exported declarations of files that name a sqlcdb type, as "file:line what".
func leaks(fset *token.FileSet, files []*ast.File) []string {
	// Types of the package that stand for a sqlcdb type (aliases and plain redefinitions).
	standIns := map[string]bool{}
	for changed := true; changed; {
		changed = false
		for _, f := range files {
			for _, spec := range typeSpecs(f) {
				switch spec.Type.(type) {
				case *ast.StructType, *ast.InterfaceType:
					continue
				}
				if !standIns[spec.Name.Name] && names(spec.Type, standIns) {
					standIns[spec.Name.Name], changed = true, true
				}
			}
		}
	}
	var out []string
	report := func(n ast.Node, what string) {
		out = append(out, fset.Position(n.Pos()).String()+" "+what)
	}
	for _, f := range files {
		for _, decl := range f.Decls {
			switch d := decl.(type) {
			case *ast.FuncDecl:
				if !d.Name.IsExported() {
					continue
				}
				what := "func " + d.Name.Name
				if d.Recv != nil {
					recv := receiverName(d.Recv.List[0].Type)
					if !ast.IsExported(recv) {
						continue
					}
					what = "method " + recv + "." + d.Name.Name
				}
				if names(d.Type, standIns) {
					report(d, what)
				}
			case *ast.GenDecl:
				for _, spec := range d.Specs {
					switch s := spec.(type) {
					case *ast.TypeSpec:
						if s.Name.IsExported() {
							checkType(s, standIns, report)
						}
					case *ast.ValueSpec:
						for _, n := range s.Names {
							if n.IsExported() && s.Type != nil && names(s.Type, standIns) {
								report(n, "var "+n.Name)
							}
						}
					}
				}
			}
		}
	}
	return out
}

// checkType reports an exported type that is a sqlcdb type, or its exported fields and methods
// that name one.
func checkType(s *ast.TypeSpec, standIns map[string]bool, report func(ast.Node, string)) {
	switch t := s.Type.(type) {
	case *ast.StructType:
		for _, field := range t.Fields.List {
			fieldNames := field.Names
			if len(fieldNames) == 0 { // embedded: named after its type
				fieldNames = []*ast.Ident{{Name: receiverName(field.Type), NamePos: field.Pos()}}
			}
			for _, n := range fieldNames {
				if n.IsExported() && names(field.Type, standIns) {
					report(n, "field "+s.Name.Name+"."+n.Name)
				}
			}
		}
	case *ast.InterfaceType:
		for _, m := range t.Methods.List {
			for _, n := range m.Names {
				if names(m.Type, standIns) {
					report(n, "method "+s.Name.Name+"."+n.Name)
				}
			}
		}
	default:
		if names(s.Type, standIns) {
			report(s, "type "+s.Name.Name)
		}
	}
}

// names reports whether the expression mentions a sqlcdb identifier or a stand-in of one.
func names(e ast.Node, standIns map[string]bool) bool {
	found := false
	ast.Inspect(e, func(n ast.Node) bool {
		switch x := n.(type) {
		case *ast.SelectorExpr:
			if id, ok := x.X.(*ast.Ident); ok && id.Name == generated {
				found = true
			}
			return false // pkg.Name: the Name is not a type of this package
		case *ast.Ident:
			found = found || standIns[x.Name]
		}
		return !found
	})
	return found
}

func typeSpecs(f *ast.File) []*ast.TypeSpec {
	var out []*ast.TypeSpec
	for _, decl := range f.Decls {
		if g, ok := decl.(*ast.GenDecl); ok && g.Tok == token.TYPE {
			for _, s := range g.Specs {
				out = append(out, s.(*ast.TypeSpec))
			}
		}
	}
	return out
}

// receiverName is the type name of a receiver or embedded field: *T, T[P], pkg.T → T.
func receiverName(e ast.Expr) string {
	for {
		switch x := e.(type) {
		case *ast.StarExpr:
			e = x.X
		case *ast.IndexExpr:
			e = x.X
		case *ast.IndexListExpr:
			e = x.X
		case *ast.SelectorExpr:
			return x.Sel.Name
		case *ast.Ident:
			return x.Name
		default:
			return ""
		}
	}
}
