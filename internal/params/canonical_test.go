package params_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/etlexec/etlexec/internal/params"
)

func TestCanonical(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		in   string
		want string
	}{
		{"Empty", `{}`, `{}`},
		{"Whitespace", " \t\n{ \"a\" : 1 ,\r\n \"b\":[ 1 , 2 ] }\n", `{"a":1,"b":[1,2]}`},
		{"SortedKeys", `{"b":1,"a":2,"A":3,"aa":4,"":5}`, `{"":5,"A":3,"a":2,"aa":4,"b":1}`},
		{"NestedSorted", `{"z":{"y":1,"x":[{"b":1,"a":2}]}}`, `{"z":{"x":[{"a":2,"b":1}],"y":1}}`},
		{"CodePointOrder", `{"é":1,"z":2,"😀":3,"\uffff":4}`, `{"z":2,"é":1,"` + "\uffff" + `":4,"😀":3}`},
		{"Literals", `{"t":true,"f":false,"n":null}`, `{"f":false,"n":null,"t":true}`},
		{"ArrayOrderKept", `{"a":[3,1,2]}`, `{"a":[3,1,2]}`},

		{"IntegerKept", `{"n":42}`, `{"n":42}`},
		{"TrailingZeroFraction", `{"n":1.0}`, `{"n":1}`},
		{"Exponent", `{"n":1e2}`, `{"n":100}`},
		{"ExponentUpper", `{"n":2.5E+3}`, `{"n":2500}`},
		{"NegativeExponent", `{"n":25e-3}`, `{"n":0.025}`},
		{"FractionTrailingZeros", `{"n":1.500}`, `{"n":1.5}`},
		{"NegativeZero", `{"n":-0.0}`, `{"n":0}`},
		{"ZeroHugeExponent", `{"n":0e999999999999}`, `{"n":0}`},
		{"Negative", `{"n":-12.50e1}`, `{"n":-125}`},
		{"SmallFraction", `{"n":1e-7}`, `{"n":0.0000001}`},
		{"Above2p53Exact", `{"n":9007199254740993}`, `{"n":9007199254740993}`},
		{"BigExact", `{"n":123456789012345678901234567890.000}`, `{"n":123456789012345678901234567890}`},
		{"ExponentLeadingZeros", `{"n":1e0002}`, `{"n":100}`},
		{"MaxFloat", `{"n":1.7976931348623157e308}`, `{"n":17976931348623157` + strings.Repeat("0", 292) + `}`},

		{"StringEscapesNormalised", `{"s":"\u0041\/\"\\\n\u00e9"}`, `{"s":"A/\"\\\né"}`},
		{"ControlEscapes", `{"s":"\b\f\r\t\u0001\u001f"}`, `{"s":"\b\f\r\t\u0001\u001f"}`},
		{"HTMLNotEscaped", `{"s":"<a&b>"}`, `{"s":"<a&b>"}`},
		{"LineSeparatorLiteral", `{"s":"\u2028"}`, "{\"s\":\"\u2028\"}"},
		{"SurrogatePair", `{"s":"\ud83d\ude00"}`, `{"s":"😀"}`},
		{"LiteralReplacementChar", `{"s":"\ufffd` + "\uFFFD" + `"}`, "{\"s\":\"\uFFFD\uFFFD\"}"},
		{"EscapedKeySorted", `{"\u0062":1,"a":2}`, `{"a":2,"b":1}`},
		{"Depth32", `{"a":` + strings.Repeat("[", 31) + strings.Repeat("]", 31) + `}`,
			`{"a":` + strings.Repeat("[", 31) + strings.Repeat("]", 31) + `}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := params.Canonical([]byte(tc.in))
			if err != nil {
				t.Fatalf("Canonical(%s) error: %v", tc.in, err)
			}
			if string(got) != tc.want {
				t.Errorf("Canonical(%s)\n got %s\nwant %s", tc.in, got, tc.want)
			}
		})
	}
}

func TestCanonicalRejects(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		in      string
		wantErr string
	}{
		{"Empty", ``, "empty input"},
		{"OnlySpace", "  \n", "empty input"},
		{"Array", `[{"a":1}]`, "top level is an array"},
		{"String", `"a"`, "top level is a string"},
		{"Number", `1`, "top level is a number"},
		{"Null", `null`, "top level is null"},
		{"Trailing", `{"a":1} {"b":2}`, "unexpected data after the top-level object"},
		{"TrailingGarbage", `{"a":1}x`, "unexpected data"},
		{"Truncated", `{"a":[1,`, "unexpected end of input at $.a"},
		{"TrailingComma", `{"a":1,}`, "invalid character"},
		{"MissingColon", `{"a" 1}`, "invalid"},
		{"MissingComma", `{"a":[1 2]}`, "invalid"},
		{"Duplicate", `{"a":1,"b":2,"a":3}`, `duplicate key "a" at $`},
		{"DuplicateNested", `{"x":{"k":1,"k":1}}`, `duplicate key "k" at $.x`},
		{"DuplicateByEscape", `{"a":1,"\u0061":2}`, `duplicate key "a"`},
		{"NulInString", `{"a":"x\u0000y"}`, `NUL character (\u0000) in string at $.a`},
		{"NulInKey", `{"a\u0000":1}`, "NUL character"},
		{"InvalidUTF8", "{\"a\":\"\xff\"}", "not valid UTF-8"},
		{"InvalidUTF8Key", "{\"\xc3\x28\":1}", "not valid UTF-8"},
		{"LoneHighSurrogate", `{"a":"x\ud800y"}`, "unpaired UTF-16 surrogate escape in string at $.a"},
		{"LoneLowSurrogate", `{"a":"\udc00"}`, "unpaired"},
		{"HighThenHigh", `{"a":"\ud800\ud800"}`, "unpaired"},
		{"SurrogateInKey", `{"\ud800":1}`, "unpaired"},
		{"SurrogateInArray", `{"a":["ok","\udfff"]}`, "unpaired UTF-16 surrogate escape in string at $.a[1]"},
		{"TooDeep", `{"a":` + strings.Repeat("[", 32) + strings.Repeat("]", 32) + `}`, "nesting deeper than 32 levels"},
		{"TooDeepObjects", strings.Repeat(`{"a":`, 33) + `1` + strings.Repeat(`}`, 33), "nesting deeper than 32 levels"},
		{"Infinity", `{"a":1e309}`, "out of range"},
		{"NegInfinity", `{"a":-1.8e308}`, "out of range"},
		{"HugeExponent", `{"a":1e99999999999}`, "out of range"},
		{"TinyTooLong", `{"a":1e-1000}`, "too long in plain notation"},
		{"TinyHugeExponent", `{"a":1e-99999999999}`, "too long in plain notation"},
		{"NaNLiteral", `{"a":NaN}`, "invalid character"},
		{"LeadingZero", `{"a":01}`, "invalid"},
		{"SingleQuotes", `{'a':1}`, "invalid character"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := params.Canonical([]byte(tc.in))
			if err == nil {
				t.Fatalf("Canonical(%q) = %s, want an error containing %q", tc.in, got, tc.wantErr)
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("Canonical(%q) error = %q, want it to contain %q", tc.in, err, tc.wantErr)
			}
			if !errors.Is(err, params.ErrInvalid) {
				t.Errorf("Canonical(%q) error %v does not wrap ErrInvalid", tc.in, err)
			}
		})
	}
}

func TestHash(t *testing.T) {
	t.Parallel()
	// sha256("{}"), computed independently: printf '{}' | sha256sum
	const emptyObject = "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
	if got := params.Hash([]byte(`{}`)); got != emptyObject {
		t.Errorf("Hash({}) = %s, want %s", got, emptyObject)
	}

	tests := []struct {
		name      string
		a, b      string
		wantEqual bool
	}{
		{"Reordered", `{"a":1,"b":[true,null]}`, `{ "b" : [true, null], "a" : 1 }`, true},
		{"NumberSpelling", `{"n":100}`, `{"n":1.00e2}`, true},
		{"EscapeSpelling", `{"s":"é/"}`, `{"s":"\u00e9\/"}`, true},
		{"Beyond2p53", `{"n":9007199254740993}`, `{"n":9007199254740992}`, false},
		{"TypeMatters", `{"n":1}`, `{"n":"1"}`, false},
		{"ArrayOrderMatters", `{"a":[1,2]}`, `{"a":[2,1]}`, false},
		{"NullIsNotAbsent", `{"a":null}`, `{}`, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, ha, err := params.Canon([]byte(tc.a))
			if err != nil {
				t.Fatal(err)
			}
			_, hb, err := params.Canon([]byte(tc.b))
			if err != nil {
				t.Fatal(err)
			}
			if (ha == hb) != tc.wantEqual {
				t.Errorf("hash(%s) == hash(%s) is %t, want %t", tc.a, tc.b, ha == hb, tc.wantEqual)
			}
			if len(ha) != 64 || strings.ToLower(ha) != ha {
				t.Errorf("hash %q is not 64 lowercase hex digits", ha)
			}
		})
	}
}

func TestCanonError(t *testing.T) {
	t.Parallel()
	c, h, err := params.Canon([]byte(`[]`))
	if err == nil || c != nil || h != "" {
		t.Errorf("Canon([]) = %s, %q, %v; want nil, \"\", error", c, h, err)
	}
}
