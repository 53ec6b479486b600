// Package params owns the identity of a parameter set: its canonical JSON form and
// the param_hash derived from it, which deduplicates a run's items and keys
// incremental cursors (UNIQUE(run_id, param_hash), UNIQUE(job_id, param_hash)). It also
// parses parameter sets from `--param k=v` flags and from params files.
//
// Because cursors outlive releases, the canonical form is defined here byte for byte
// and does not depend on encoding/json's output, which may change between Go
// versions. Hash only the output of Canonical (or use Canon); never hash JSON that
// Postgres or another encoder re-serialised.
package params

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// MaxDepth is how deeply objects and arrays may nest; the top-level object is depth 1.
const MaxDepth = 32

// maxNumberChars bounds a number's canonical (plain decimal) form. It admits every
// finite float64 written out in full (at most 309 integer digits) and stops inputs
// such as 1e-1000000 from expanding into a megabyte of zeros.
const maxNumberChars = 400

// ErrInvalid is wrapped by every error that rejects a parameter set's content, so
// callers can tell bad input from failed I/O.
var ErrInvalid = errors.New("invalid params")

// Canonical returns the canonical form of the JSON object in raw:
//
//   - the top level is an object; objects and arrays nest at most MaxDepth deep;
//   - no insignificant whitespace;
//   - object keys appear once (a duplicate is an error, not last-one-wins) and are
//     sorted by their UTF-8 bytes, which is Unicode code point order;
//   - strings, keys included, are valid UTF-8 without NUL (U+0000, which Postgres
//     jsonb cannot store) and without unpaired surrogate escapes; they are written
//     with only `\"`, `\\`, `\b`, `\f`, `\n`, `\r`, `\t` and `\u00xx` (lowercase hex,
//     other control characters) escaped, everything else as literal UTF-8;
//   - numbers are kept exactly, never through float64, in plain decimal notation:
//     optional "-", integer digits without leading zeros, and a fraction without
//     trailing zeros only when needed. So 1.0 → 1, 1e2 → 100, 1.50 → 1.5, 25e-3 →
//     0.025, -0 → 0, while 9007199254740993 and 9007199254740992 stay distinct.
//     Numbers beyond float64's range (which would decode as ±Inf) and numbers whose
//     plain form exceeds 400 characters are rejected;
//   - true, false and null as themselves.
//
// Errors wrap ErrInvalid and name the offending place as a path such as $.a[2].
// Canonical is idempotent: Canonical of its output is that output.
func Canonical(raw []byte) ([]byte, error) {
	if !utf8.Valid(raw) {
		return nil, fmt.Errorf("%w: not valid UTF-8", ErrInvalid)
	}
	p := &parser{raw: raw, dec: json.NewDecoder(bytes.NewReader(raw))}
	p.dec.UseNumber()

	tok, err := p.next()
	if err == io.EOF {
		return nil, fmt.Errorf("%w: empty input, want a JSON object", ErrInvalid)
	}
	if err != nil {
		return nil, err
	}
	if tok != json.Delim('{') {
		return nil, fmt.Errorf("%w: top level is %s, want a JSON object", ErrInvalid, describe(tok))
	}
	var out bytes.Buffer
	out.Grow(len(raw))
	if err := p.object(&out, 1, "$"); err != nil {
		return nil, err
	}
	if _, err := p.next(); err != io.EOF {
		return nil, fmt.Errorf("%w: unexpected data after the top-level object", ErrInvalid)
	}
	return out.Bytes(), nil
}

// Hash is the param_hash of a canonical parameter set: the lowercase hex SHA-256 of
// its bytes. It does not canonicalise; use Canon for raw input.
func Hash(canonical []byte) string {
	sum := sha256.Sum256(canonical)
	return hex.EncodeToString(sum[:])
}

// Canon returns the canonical form of raw and its param_hash.
func Canon(raw []byte) (canonical []byte, hash string, err error) {
	canonical, err = Canonical(raw)
	if err != nil {
		return nil, "", err
	}
	return canonical, Hash(canonical), nil
}

// parser walks encoding/json's token stream, which validates the syntax, and keeps
// the input to inspect string literals the decoder would silently repair.
type parser struct {
	raw   []byte
	dec   *json.Decoder
	start int64 // input offset before the last token, for its raw literal
}

func (p *parser) next() (json.Token, error) {
	p.start = p.dec.InputOffset()
	tok, err := p.dec.Token()
	if err != nil && err != io.EOF {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return tok, err
}

func (p *parser) object(out *bytes.Buffer, depth int, path string) error {
	type member struct {
		key string
		val []byte
	}
	var members []member
	seen := make(map[string]bool)
	for {
		tok, err := p.next()
		if err != nil {
			return p.eof(err, path)
		}
		if tok == json.Delim('}') {
			break
		}
		key := tok.(string) // the decoder allows only a string here
		if err := p.checkString(key, path); err != nil {
			return fmt.Errorf("%w (in a key)", err)
		}
		at := path + keyPath(key)
		if seen[key] {
			return fmt.Errorf("%w: duplicate key %q at %s", ErrInvalid, key, path)
		}
		seen[key] = true

		tok, err = p.next()
		if err != nil {
			return p.eof(err, at)
		}
		var val bytes.Buffer
		if err := p.value(&val, tok, depth, at); err != nil {
			return err
		}
		members = append(members, member{key: key, val: val.Bytes()})
	}
	slices.SortFunc(members, func(a, b member) int { return strings.Compare(a.key, b.key) })

	out.WriteByte('{')
	for i, m := range members {
		if i > 0 {
			out.WriteByte(',')
		}
		writeString(out, m.key)
		out.WriteByte(':')
		out.Write(m.val)
	}
	out.WriteByte('}')
	return nil
}

func (p *parser) array(out *bytes.Buffer, depth int, path string) error {
	out.WriteByte('[')
	for i := 0; ; i++ {
		tok, err := p.next()
		if err != nil {
			return p.eof(err, path)
		}
		if tok == json.Delim(']') {
			break
		}
		if i > 0 {
			out.WriteByte(',')
		}
		if err := p.value(out, tok, depth, path+"["+strconv.Itoa(i)+"]"); err != nil {
			return err
		}
	}
	out.WriteByte(']')
	return nil
}

// value writes the canonical form of the value starting with tok, found inside a
// container at depth.
func (p *parser) value(out *bytes.Buffer, tok json.Token, depth int, path string) error {
	switch v := tok.(type) {
	case json.Delim: // '{' or '['; the decoder never hands a closing one here
		if depth+1 > MaxDepth {
			return fmt.Errorf("%w: nesting deeper than %d levels at %s", ErrInvalid, MaxDepth, path)
		}
		if v == '{' {
			return p.object(out, depth+1, path)
		}
		return p.array(out, depth+1, path)
	case string:
		if err := p.checkString(v, path); err != nil {
			return err
		}
		writeString(out, v)
	case json.Number:
		n, err := canonicalNumber(string(v))
		if err != nil {
			return fmt.Errorf("%w: %v at %s", ErrInvalid, err, path)
		}
		out.WriteString(n)
	case bool:
		out.WriteString(strconv.FormatBool(v))
	case nil:
		out.WriteString("null")
	default:
		return fmt.Errorf("%w: unexpected token %v at %s", ErrInvalid, tok, path)
	}
	return nil
}

// eof turns the end of input inside a container into a syntax error.
func (p *parser) eof(err error, path string) error {
	if err == io.EOF {
		return fmt.Errorf("%w: unexpected end of input at %s", ErrInvalid, path)
	}
	return err
}

// checkString rejects what Postgres cannot store and what the decoder repaired: it
// replaces an unpaired surrogate escape such as \ud800 with U+FFFD, which would make
// different inputs hash alike.
func (p *parser) checkString(s, path string) error {
	if strings.IndexByte(s, 0) >= 0 {
		return fmt.Errorf("%w: NUL character (\\u0000) in string at %s", ErrInvalid, path)
	}
	if !strings.ContainsRune(s, utf8.RuneError) {
		return nil
	}
	lit := p.raw[p.start:p.dec.InputOffset()]
	lit = lit[bytes.IndexByte(lit, '"'):] // skip the separator and space before it
	if loneSurrogate(lit) {
		return fmt.Errorf("%w: unpaired UTF-16 surrogate escape in string at %s", ErrInvalid, path)
	}
	return nil
}

// loneSurrogate reports whether the JSON string literal lit (quotes included, already
// validated by the decoder) has a \uXXXX surrogate escape that is not part of a
// high-low pair.
func loneSurrogate(lit []byte) bool {
	hex4 := func(b []byte) rune {
		v, _ := strconv.ParseUint(string(b), 16, 32)
		return rune(v)
	}
	isHigh := func(r rune) bool { return r >= 0xD800 && r < 0xDC00 }
	isLow := func(r rune) bool { return r >= 0xDC00 && r < 0xE000 }
	for i := 1; i < len(lit)-1; i++ {
		if lit[i] != '\\' {
			continue
		}
		i++ // the escaped character
		if lit[i] != 'u' {
			continue
		}
		r := hex4(lit[i+1 : i+5])
		i += 4
		switch {
		case isLow(r):
			return true
		case isHigh(r):
			if i+6 < len(lit) && lit[i+1] == '\\' && lit[i+2] == 'u' && isLow(hex4(lit[i+3:i+7])) {
				i += 6
				continue
			}
			return true
		}
	}
	return false
}

// writeString writes s, valid UTF-8, as a JSON string with the minimal escaping
// Canonical documents.
func writeString(out *bytes.Buffer, s string) {
	const hexDigits = "0123456789abcdef"
	out.WriteByte('"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"':
			out.WriteString(`\"`)
		case c == '\\':
			out.WriteString(`\\`)
		case c == '\b':
			out.WriteString(`\b`)
		case c == '\f':
			out.WriteString(`\f`)
		case c == '\n':
			out.WriteString(`\n`)
		case c == '\r':
			out.WriteString(`\r`)
		case c == '\t':
			out.WriteString(`\t`)
		case c < 0x20:
			out.WriteString(`\u00`)
			out.WriteByte(hexDigits[c>>4])
			out.WriteByte(hexDigits[c&0xf])
		default:
			out.WriteByte(c)
		}
	}
	out.WriteByte('"')
}

// canonicalNumber rewrites a JSON number literal (syntax already checked by the
// decoder) in plain decimal notation, exactly. It works on the digit string rather
// than math/big: big.Rat would have to materialise 10^1000000000 for an input such as
// 1e1000000000, an easy way for one parameter to stall a worker.
func canonicalNumber(lit string) (string, error) {
	if f, _ := strconv.ParseFloat(lit, 64); math.IsInf(f, 0) {
		return "", fmt.Errorf("number %s is out of range (beyond ±1.8e308)", abbrev(lit))
	}
	s := lit
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	mant, expPart, _ := strings.Cut(strings.ToLower(s), "e")
	intPart, fracPart, _ := strings.Cut(mant, ".")

	// The value is digits × 10^exp.
	digits := strings.TrimLeft(intPart+fracPart, "0")
	if digits == "" {
		return "0", nil // includes -0 and 0e999999999
	}
	exp := -int64(len(fracPart))
	trimmed := strings.TrimRight(digits, "0")
	exp += int64(len(digits) - len(trimmed))
	digits = trimmed

	expNeg := strings.HasPrefix(expPart, "-")
	expDigits := strings.TrimLeft(strings.TrimLeft(expPart, "+-"), "0")
	if len(expDigits) > 9 {
		// |exponent| ≥ 10^9: too large was caught above, so it is too small.
		return "", fmt.Errorf("number %s is too long in plain notation (over %d characters)", abbrev(lit), maxNumberChars)
	}
	if expDigits != "" {
		e, _ := strconv.ParseInt(expDigits, 10, 64)
		if expNeg {
			e = -e
		}
		exp += e
	}

	// Length of the plain form, before building it.
	n := int64(len(digits))
	var size int64
	switch {
	case exp >= 0:
		size = n + exp
	case -exp < n:
		size = n + 1
	default:
		size = 2 + (-exp - n) + n
	}
	if neg {
		size++
	}
	if size > maxNumberChars {
		return "", fmt.Errorf("number %s is too long in plain notation (over %d characters)", abbrev(lit), maxNumberChars)
	}

	var b strings.Builder
	b.Grow(int(size))
	if neg {
		b.WriteByte('-')
	}
	switch {
	case exp >= 0:
		b.WriteString(digits)
		b.WriteString(strings.Repeat("0", int(exp)))
	case -exp < n:
		point := n + exp
		b.WriteString(digits[:point])
		b.WriteByte('.')
		b.WriteString(digits[point:])
	default:
		b.WriteString("0.")
		b.WriteString(strings.Repeat("0", int(-exp-n)))
		b.WriteString(digits)
	}
	return b.String(), nil
}

func abbrev(s string) string {
	if len(s) > 40 {
		return s[:37] + "..."
	}
	return s
}

func describe(tok json.Token) string {
	switch tok.(type) {
	case json.Delim:
		return "an array"
	case string:
		return "a string"
	case json.Number:
		return "a number"
	case bool:
		return "a boolean"
	case nil:
		return "null"
	}
	return fmt.Sprintf("%v", tok)
}

// keyPath is the path step for key: .key for identifiers, ["key"] otherwise.
func keyPath(key string) string {
	ident := key != ""
	for i, r := range key {
		if !(r == '_' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || i > 0 && r >= '0' && r <= '9') {
			ident = false
			break
		}
	}
	if ident {
		return "." + key
	}
	return "[" + strconv.Quote(key) + "]"
}

// Fingerprint hashes a trigger request as it streams by: the dry-run flag, then every param
// set in canonical form, in order (duplicates included). Two requests with the same
// fingerprint ask for the same run, which is what an idempotency key's retry must be.
type Fingerprint struct{ h hash.Hash }

// NewFingerprint starts the fingerprint of a request.
func NewFingerprint(dryRun bool) *Fingerprint {
	f := &Fingerprint{h: sha256.New()}
	fmt.Fprintf(f.h, "dry_run=%t\n", dryRun)
	return f
}

// Add adds one param set in canonical form.
func (f *Fingerprint) Add(canonical []byte) {
	f.h.Write(canonical)
	f.h.Write([]byte{'\n'})
}

// Sum is the fingerprint so far, in hex.
func (f *Fingerprint) Sum() string { return hex.EncodeToString(f.h.Sum(nil)) }
