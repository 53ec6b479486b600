package params_test

import (
	"bytes"
	"encoding/json"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/etlexec/etlexec/internal/params"
)

// FuzzCanonical checks, for every input Canonical accepts, that
//   - the input was valid JSON and the output is too;
//   - the output is a fixed point: canonicalising it again changes nothing;
//   - the output means what the input meant (same decoded value);
//   - a semantically equal rewrite (keys reversed, extra space, other escapes and
//     number spellings) has the same canonical form and hash.
func FuzzCanonical(f *testing.F) {
	for _, seed := range []string{
		`{}`,
		`{"b":1,"a":[true,false,null,"x"]}`,
		`{"n":1.0,"m":1e2,"k":-0.0,"big":9007199254740993,"f":25e-3}`,
		`{"s":"\u00e9\n\"<&>\u2028\ud83d\ude00","\u0061":{"z":[{"y":1}]}}`,
		`{"a":{"a":{"a":{"a":[[[[]]]]}}}}`,
		"{\"ctl\":\"\\u0001\\b\\f\\t\",\"\u00ff\":0}",
		`{"a":"\ud800"}`,
		`{"a":1,"a":2}`,
		`[1]`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		c, err := params.Canonical(raw)
		if err != nil {
			return
		}
		if !json.Valid(raw) {
			t.Fatalf("accepted invalid JSON %q", raw)
		}
		if !json.Valid(c) {
			t.Fatalf("canonical form %q of %q is not valid JSON", c, raw)
		}
		again, err := params.Canonical(c)
		if err != nil {
			t.Fatalf("canonical form %q rejected: %v", c, err)
		}
		if !bytes.Equal(again, c) {
			t.Fatalf("not a fixed point:\n  once  %q\n  twice %q", c, again)
		}

		want, got := decode(t, raw), decode(t, c)
		if diff := cmp.Diff(want, got, cmp.Comparer(sameNumber)); diff != "" {
			t.Fatalf("canonical form changed the value of %q (-input +canonical):\n%s", raw, diff)
		}

		var rewritten bytes.Buffer
		rewrite(&rewritten, got)
		c2, err := params.Canonical(rewritten.Bytes())
		if err != nil {
			t.Fatalf("rewrite %q of %q rejected: %v", rewritten.Bytes(), c, err)
		}
		if params.Hash(c2) != params.Hash(c) {
			t.Fatalf("equal values hash differently:\n  %q → %q\n  %q → %q", c, c, rewritten.Bytes(), c2)
		}
	})
}

func decode(t *testing.T, b []byte) any {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("decode %q: %v", b, err)
	}
	return v
}

// sameNumber compares two spellings of a number through float64, which is exact
// enough to catch a mangled number without trusting the code under test.
func sameNumber(a, b json.Number) bool {
	fa, errA := strconv.ParseFloat(string(a), 64)
	fb, errB := strconv.ParseFloat(string(b), 64)
	return errA == nil && errB == nil && fa == fb
}

// rewrite encodes v, a decoded canonical value, differently but equally: keys in
// reverse order, spaces everywhere, encoding/json's string escapes (HTML-safe, so
// <>& become \u003c...), and numbers with a redundant exponent and trailing zero.
func rewrite(w *bytes.Buffer, v any) {
	switch v := v.(type) {
	case map[string]any:
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		slices.Reverse(keys)
		w.WriteString("{ ")
		for i, k := range keys {
			if i > 0 {
				w.WriteString(" ,\n ")
			}
			kb, _ := json.Marshal(k)
			w.Write(kb)
			w.WriteString(" : ")
			rewrite(w, v[k])
		}
		w.WriteString(" }")
	case []any:
		w.WriteString("[ ")
		for i, e := range v {
			if i > 0 {
				w.WriteString(" , ")
			}
			rewrite(w, e)
		}
		w.WriteString(" ]")
	case json.Number:
		n := string(v)
		if !strings.Contains(n, ".") {
			n += ".0"
		} else {
			n += "0"
		}
		w.WriteString(n + "e0")
	default:
		b, _ := json.Marshal(v)
		w.Write(b)
	}
}
