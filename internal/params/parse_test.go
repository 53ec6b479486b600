package params_test

import (
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/google/go-cmp/cmp"

	"github.com/etlexec/etlexec/internal/params"
)

func TestParseKV(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		pairs   []string
		want    string
		wantErr string
	}{
		{name: "None", pairs: nil, want: `{}`},
		{name: "String", pairs: []string{"region=eu"}, want: `{"region":"eu"}`},
		{name: "Number", pairs: []string{"n=42"}, want: `{"n":42}`},
		{name: "NumberNormalised", pairs: []string{"n=1.50e1"}, want: `{"n":15}`},
		{name: "LeadingZeroStaysString", pairs: []string{"zip=007"}, want: `{"zip":"007"}`},
		{name: "QuotedDigits", pairs: []string{`n="42"`}, want: `{"n":"42"}`},
		{name: "Bool", pairs: []string{"full=true"}, want: `{"full":true}`},
		{name: "Null", pairs: []string{"x=null"}, want: `{"x":null}`},
		{name: "Array", pairs: []string{"ids=[3, 1]"}, want: `{"ids":[3,1]}`},
		{name: "Object", pairs: []string{`f={"b":1,"a":2}`}, want: `{"f":{"a":2,"b":1}}`},
		{name: "EmptyValue", pairs: []string{"x="}, want: `{"x":""}`},
		{name: "ValueWithEquals", pairs: []string{"q=a=b"}, want: `{"q":"a=b"}`},
		{name: "DottedKeyLiteral", pairs: []string{"a.b=1"}, want: `{"a.b":1}`},
		{name: "NotJSONWord", pairs: []string{"x=True"}, want: `{"x":"True"}`},
		{name: "Sorted", pairs: []string{"b=1", "a=2"}, want: `{"a":2,"b":1}`},
		{name: "HTMLKept", pairs: []string{"q=<a&b>"}, want: `{"q":"<a&b>"}`},

		{name: "MissingEquals", pairs: []string{"a=1", "region"}, wantErr: `param "region"`},
		{name: "EmptyKey", pairs: []string{"=1"}, wantErr: `param "=1": invalid params: empty key`},
		{name: "Duplicate", pairs: []string{"a=1", "a=2"}, wantErr: `param "a=2": invalid params: key "a" given twice`},
		{name: "BadUTF8", pairs: []string{"a=\xff"}, wantErr: "not valid UTF-8"},
		{name: "NulInJSONValue", pairs: []string{`a="\u0000"`}, wantErr: `param "a=\"\\u0000\"": invalid params: NUL`},
		{name: "TooDeepValue", pairs: []string{"a=" + strings.Repeat("[", 32) + strings.Repeat("]", 32)}, wantErr: "nesting deeper"},
		{name: "OverflowNumber", pairs: []string{"a=1e400"}, wantErr: `param "a=1e400"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := params.ParseKV(tc.pairs)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("ParseKV(%q) error = %v, want one containing %q", tc.pairs, err, tc.wantErr)
				}
				if !errors.Is(err, params.ErrInvalid) {
					t.Errorf("error %v does not wrap ErrInvalid", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseKV(%q) error: %v", tc.pairs, err)
			}
			if string(got) != tc.want {
				t.Errorf("ParseKV(%q) = %s, want %s", tc.pairs, got, tc.want)
			}
		})
	}
}

func TestParseFile(t *testing.T) {
	t.Parallel()
	big := `{"s":"` + strings.Repeat("x", params.MaxSetBytes) + `"}`
	tests := []struct {
		name     string
		in       string
		maxBytes int64
		want     []string
		wantErr  string
	}{
		{name: "Array", in: `[{"b":1,"a":2}, {"a":1}]`, want: []string{`{"a":2,"b":1}`, `{"a":1}`}},
		{name: "ArrayPretty", in: "[\n  {\n    \"a\": 1\n  },\n  {\"a\": 2}\n]\n", want: []string{`{"a":1}`, `{"a":2}`}},
		{name: "ArrayEmpty", in: ` [ ] `, want: nil},
		{name: "ArrayKeepsDuplicates", in: `[{"a":1},{"a":1.0}]`, want: []string{`{"a":1}`, `{"a":1}`}},
		{name: "Lines", in: "{\"a\":1}\n\n  \n{\"a\":2}\r\n{\"a\":3}", want: []string{`{"a":1}`, `{"a":2}`, `{"a":3}`}},
		{name: "Empty", in: "", want: nil},
		{name: "BOM", in: "\xef\xbb\xbf[{\"a\":1}]", want: []string{`{"a":1}`}},
		{name: "BOMLines", in: "\xef\xbb\xbf{\"a\":1}\n", want: []string{`{"a":1}`}},
		{name: "ExactlyAtLimit", in: `{"a":1}`, maxBytes: 7, want: []string{`{"a":1}`}},

		{name: "ArrayElementNotObject", in: `[{"a":1}, 2]`, wantErr: "element 1: invalid params: top level is a number"},
		{name: "ArrayElementDuplicateKey", in: `[{"a":1}, {"a":1}, {"k":1,"k":2}]`, wantErr: `element 2: invalid params: duplicate key "k"`},
		{name: "ArraySyntax", in: `[{"a":1} {"a":2}]`, wantErr: "element 1: invalid params"},
		{name: "ArrayUnclosed", in: `[{"a":1}`, wantErr: "after element 0"},
		{name: "ArrayTrailing", in: `[{"a":1}] {"a":2}`, wantErr: "unexpected data after the array"},
		{name: "LineNotObject", in: "{\"a\":1}\n\n[1]\n", wantErr: "line 3: invalid params: top level is an array"},
		{name: "LineSyntax", in: "{\"a\":1}\n{\"a\":\n", wantErr: "line 2: invalid params"},
		{name: "LineTwoObjects", in: `{"a":1} {"a":2}`, wantErr: "line 1: invalid params: unexpected data"},
		{name: "OverLimit", in: `{"a":1}`, maxBytes: 6, wantErr: "exceeds the limit of 6 bytes"},
		{name: "DefaultLimit", in: strings.Repeat("\n", params.DefaultMaxFileBytes+1), wantErr: "exceeds the limit of 16777216 bytes"},
		{name: "SetTooBigInLines", in: big, wantErr: "line 1: invalid params: parameter set is 65544 bytes in canonical form, over the limit of 65536"},
		{name: "SetTooBigInArray", in: `[{},` + big + `]`, wantErr: "element 1: invalid params: parameter set is"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := params.ParseFile(strings.NewReader(tc.in), tc.maxBytes)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("ParseFile error = %v, want one containing %q", err, tc.wantErr)
				}
				if !errors.Is(err, params.ErrInvalid) {
					t.Errorf("error %v does not wrap ErrInvalid", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseFile error: %v", err)
			}
			var gotStr []string
			for _, s := range got {
				gotStr = append(gotStr, string(s))
			}
			if diff := cmp.Diff(tc.want, gotStr); diff != "" {
				t.Errorf("ParseFile mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseFileReadError(t *testing.T) {
	t.Parallel()
	boom := errors.New("disk gone")
	_, err := params.ParseFile(io.MultiReader(strings.NewReader(`{"a":1}`), iotest.ErrReader(boom)), 0)
	if !errors.Is(err, boom) || errors.Is(err, params.ErrInvalid) {
		t.Errorf("ParseFile error = %v, want the read error and not ErrInvalid", err)
	}
}

func TestDedupe(t *testing.T) {
	t.Parallel()
	raw := func(ss ...string) []json.RawMessage {
		out := make([]json.RawMessage, len(ss))
		for i, s := range ss {
			out[i] = json.RawMessage(s)
		}
		return out
	}
	hashOf := func(s string) string { return params.Hash([]byte(s)) }

	t.Run("KeepsFirstOccurrenceOrder", func(t *testing.T) {
		t.Parallel()
		got, dropped, err := params.Dedupe(raw(`{"r":"us","n":1}`, `{"r":"eu"}`, `{"n":1.0,"r":"us"}`, `{"r":"eu"}`, `{"r":"ap"}`))
		if err != nil {
			t.Fatal(err)
		}
		want := []params.Set{
			{Params: json.RawMessage(`{"n":1,"r":"us"}`), Hash: hashOf(`{"n":1,"r":"us"}`)},
			{Params: json.RawMessage(`{"r":"eu"}`), Hash: hashOf(`{"r":"eu"}`)},
			{Params: json.RawMessage(`{"r":"ap"}`), Hash: hashOf(`{"r":"ap"}`)},
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("Dedupe mismatch (-want +got):\n%s", diff)
		}
		if dropped != 2 {
			t.Errorf("dropped = %d, want 2", dropped)
		}
	})

	t.Run("Empty", func(t *testing.T) {
		t.Parallel()
		got, dropped, err := params.Dedupe(nil)
		if err != nil || len(got) != 0 || dropped != 0 {
			t.Errorf("Dedupe(nil) = %v, %d, %v", got, dropped, err)
		}
	})

	t.Run("InvalidNamesIndex", func(t *testing.T) {
		t.Parallel()
		_, _, err := params.Dedupe(raw(`{}`, `{"a":1}`, `{"a":1,"a":2}`))
		if err == nil || !strings.Contains(err.Error(), `parameter set 2: invalid params: duplicate key "a"`) {
			t.Errorf("Dedupe error = %v, want it to name set 2", err)
		}
	})
}
