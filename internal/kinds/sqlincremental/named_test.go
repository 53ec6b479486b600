package sqlincremental

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseNamed(t *testing.T) {
	t.Parallel()
	type want struct {
		SQL   string
		Names []string
	}
	for _, tc := range []struct {
		dialect, query string
		want           want
	}{
		{DialectPostgres, "SELECT * FROM t WHERE region = :region",
			want{"SELECT * FROM t WHERE region = $1", []string{"region"}}},
		{DialectPostgres, "SELECT * FROM t WHERE m >= :cursor_start AND m < :cursor_end AND r = :region AND s = :region",
			want{"SELECT * FROM t WHERE m >= $1 AND m < $2 AND r = $3 AND s = $3", []string{"cursor_start", "cursor_end", "region"}}},
		{DialectPostgres, "SELECT :a::text, x::int, ':b', E'\\':c', $$ :d $$, $t$ :e $$ $t$, \":f\" FROM t -- :g\n/* :h /* :i */ */",
			want{"SELECT $1::text, x::int, ':b', E'\\':c', $$ :d $$, $t$ :e $$ $t$, \":f\" FROM t -- :g\n/* :h /* :i */ */", []string{"a"}}},
		{DialectPostgres, "SELECT 'it''s :x', \"a\"\"b\", :y", want{"SELECT 'it''s :x', \"a\"\"b\", $1", []string{"y"}}},
		{DialectPostgres, "SELECT a$b, :z1_ FROM t;  \n", want{"SELECT a$b, $1 FROM t", []string{"z1_"}}},
		{DialectPostgres, "SELECT 1; -- done", want{"SELECT 1 -- done", nil}},
		{DialectPostgres, "SELECT ARRAY[1,2][1:2], '{}'::jsonb->>'k'", want{"SELECT ARRAY[1,2][1:2], '{}'::jsonb->>'k'", nil}},
		{DialectPostgres, "SELECT né, :p", want{"SELECT né, $1", []string{"p"}}},
		// MySQL: ? per occurrence, backslash escapes in both quotes, backticks, # and "-- " comments.
		{DialectMySQL, "SELECT * FROM t WHERE r = :region AND s = :region AND m >= :cursor_start",
			want{"SELECT * FROM t WHERE r = ? AND s = ? AND m >= ?", []string{"region", "region", "cursor_start"}}},
		{DialectMySQL, "SELECT 'a\\':b', \"c\\\":d\", `:e`, :f # :g\n-- :h\n/* :i */ FROM t",
			want{"SELECT 'a\\':b', \"c\\\":d\", `:e`, ? # :g\n-- :h\n/* :i */ FROM t", []string{"f"}}},
		{DialectMySQL, "SELECT 5--:x\nFROM t", want{"SELECT 5--?\nFROM t", []string{"x"}}},
		{DialectMySQL, "SELECT @v := 1, :p", want{"SELECT @v := 1, ?", []string{"p"}}},
	} {
		got, err := parseNamed(tc.query, tc.dialect)
		if err != nil {
			t.Errorf("parseNamed(%q, %s): %v", tc.query, tc.dialect, err)
			continue
		}
		if diff := cmp.Diff(tc.want, want{got.SQL, got.Names}); diff != "" {
			t.Errorf("parseNamed(%q, %s) (-want +got):\n%s", tc.query, tc.dialect, diff)
		}
	}
}

func TestParseNamedUses(t *testing.T) {
	t.Parallel()
	got, err := parseNamed("SELECT * FROM t WHERE m > :cursor_start AND m<=:cursor_end AND m >=\n :cursor_start AND r = :r AND f(:x)", DialectPostgres)
	if err != nil {
		t.Fatal(err)
	}
	want := []paramUse{{"cursor_start", ">"}, {"cursor_end", "<="}, {"cursor_start", ">="}, {"r", "="}, {"x", ""}}
	if diff := cmp.Diff(want, got.Uses); diff != "" {
		t.Errorf("Uses (-want +got):\n%s", diff)
	}
}

func TestParseNamedErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ dialect, query string }{
		{DialectPostgres, ""},
		{DialectPostgres, "  ;  "},
		{DialectPostgres, "SELECT * FROM t WHERE id = $1"},
		{DialectPostgres, "SELECT 1; DROP TABLE t"},
		{DialectPostgres, "SELECT 'open"},
		{DialectPostgres, "SELECT \"open"},
		{DialectPostgres, "SELECT E'open\\'"},
		{DialectPostgres, "SELECT $x$ open"},
		{DialectPostgres, "SELECT /* open"},
		{DialectMySQL, "SELECT * FROM t WHERE id = ?"},
		{DialectMySQL, "SELECT 'open\\'"},
		{DialectMySQL, "SELECT `open"},
		{DialectMySQL, "SELECT 1; # fine\nDROP TABLE t"},
	} {
		if got, err := parseNamed(tc.query, tc.dialect); err == nil {
			t.Errorf("parseNamed(%q, %s) = %+v, want an error", tc.query, tc.dialect, got)
		}
	}
}
