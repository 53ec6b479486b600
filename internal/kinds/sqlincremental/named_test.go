package sqlincremental

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseNamed(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		query string
		want  namedQuery
	}{
		{"SELECT * FROM t WHERE region = :region",
			namedQuery{"SELECT * FROM t WHERE region = $1", []string{"region"}}},
		{"SELECT * FROM t WHERE m > :cursor_start AND m <= :cursor_end AND r = :region AND s = :region",
			namedQuery{"SELECT * FROM t WHERE m > $1 AND m <= $2 AND r = $3 AND s = $3", []string{"cursor_start", "cursor_end", "region"}}},
		{"SELECT :a::text, x::int, ':b', E'\\':c', $$ :d $$, $t$ :e $$ $t$, \":f\" FROM t -- :g\n/* :h /* :i */ */",
			namedQuery{"SELECT $1::text, x::int, ':b', E'\\':c', $$ :d $$, $t$ :e $$ $t$, \":f\" FROM t -- :g\n/* :h /* :i */ */", []string{"a"}}},
		{"SELECT 'it''s :x', \"a\"\"b\", :y", namedQuery{"SELECT 'it''s :x', \"a\"\"b\", $1", []string{"y"}}},
		{"SELECT a$b, :z1_ FROM t;  \n", namedQuery{"SELECT a$b, $1 FROM t", []string{"z1_"}}},
		{"SELECT 1; -- done", namedQuery{"SELECT 1 -- done", nil}},
		{"SELECT ARRAY[1,2][1:2], '{}'::jsonb->>'k'", namedQuery{"SELECT ARRAY[1,2][1:2], '{}'::jsonb->>'k'", nil}},
		{"SELECT né, :p", namedQuery{"SELECT né, $1", []string{"p"}}},
	} {
		got, err := parseNamed(tc.query)
		if err != nil {
			t.Errorf("parseNamed(%q): %v", tc.query, err)
			continue
		}
		if diff := cmp.Diff(tc.want, got); diff != "" {
			t.Errorf("parseNamed(%q) (-want +got):\n%s", tc.query, diff)
		}
	}
}

func TestParseNamedErrors(t *testing.T) {
	t.Parallel()
	for _, query := range []string{
		"",
		"  ;  ",
		"SELECT * FROM t WHERE id = $1",
		"SELECT 1; DROP TABLE t",
		"SELECT 'open",
		"SELECT \"open",
		"SELECT E'open\\'",
		"SELECT $x$ open",
		"SELECT /* open",
	} {
		if got, err := parseNamed(query); err == nil {
			t.Errorf("parseNamed(%q) = %+v, want an error", query, got)
		}
	}
}
