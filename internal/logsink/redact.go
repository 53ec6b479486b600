package logsink

import (
	"bytes"
	"encoding/json"
	"io"
	"slices"
	"strings"
	"sync/atomic"
	"unicode/utf8"
)

// Redacted replaces every occurrence of a secret value.
const Redacted = "[REDACTED]"

// SecretMinLen is the shortest secret (in characters) that is redacted; shorter values would
// mangle ordinary text and are ignored.
const SecretMinLen = 4

// secretSet is an immutable, normalised list of secrets: at least SecretMinLen characters,
// deduplicated, longest first (so a secret containing another is replaced whole).
type secretSet struct {
	vals []string
	raw  [][]byte
	// escapable is true when some secret holds a character JSON escapes (", \, control), so
	// its encoded form in a line differs from its raw bytes.
	escapable bool
}

func newSecretSet(vals []string) *secretSet {
	seen := make(map[string]bool, len(vals))
	out := make([]string, 0, len(vals))
	for _, v := range vals {
		if utf8.RuneCountInString(v) < SecretMinLen || seen[v] {
			continue
		}
		seen[v] = true
		out = append(out, v)
	}
	slices.SortStableFunc(out, func(a, b string) int { return len(b) - len(a) })
	set := &secretSet{vals: out, raw: make([][]byte, len(out))}
	for i, v := range out {
		set.raw[i] = []byte(v)
		if strings.ContainsFunc(v, func(r rune) bool { return r < 0x20 || r == '"' || r == '\\' }) {
			set.escapable = true
		}
	}
	return set
}

func (set *secretSet) empty() bool { return set == nil || len(set.vals) == 0 }

// mayContain is a cheap, conservative test: false means no secret can be in p, decoded or not.
func (set *secretSet) mayContain(p []byte) bool {
	if set.empty() {
		return false
	}
	if set.escapable && bytes.IndexByte(p, '\\') >= 0 {
		return true
	}
	for _, s := range set.raw {
		if bytes.Contains(p, s) {
			return true
		}
	}
	return false
}

func (set *secretSet) replaceString(s string) string {
	for _, v := range set.vals {
		if strings.Contains(s, v) {
			s = strings.ReplaceAll(s, v, Redacted)
		}
	}
	return s
}

func (set *secretSet) replaceBytes(p []byte) []byte {
	for _, s := range set.raw {
		if bytes.Contains(p, s) {
			p = bytes.ReplaceAll(p, s, []byte(Redacted))
		}
	}
	return p
}

// redact returns p with every secret replaced, and whether anything changed; p itself is never
// modified. A JSON object line is rewritten inside its string literals only (keys and values,
// at any depth, decoding escapes first), so a secret that happens to spell JSON syntax (true,
// null, ":") never breaks the line; any other text is replaced byte for byte.
func (set *secretSet) redact(p []byte) ([]byte, bool) {
	if !set.mayContain(p) {
		return p, false
	}
	trimmed := bytes.TrimLeft(p, " \t\r\n")
	if len(trimmed) == 0 || trimmed[0] != '{' {
		out := set.replaceBytes(p)
		return out, !bytes.Equal(out, p)
	}
	out := make([]byte, 0, len(p)+16)
	changed := false
	i := 0
	for i < len(p) {
		c := p[i]
		if c != '"' {
			out = append(out, c)
			i++
			continue
		}
		// A string literal: find its closing quote.
		j, escaped := i+1, false
		for j < len(p) && p[j] != '"' {
			if p[j] == '\\' {
				escaped = true
				j++
			}
			j++
		}
		if j >= len(p) { // unterminated: not JSON after all
			rest := set.replaceBytes(p[i:])
			changed = changed || !bytes.Equal(rest, p[i:])
			return append(out, rest...), changed
		}
		lit := p[i : j+1]
		i = j + 1
		if !escaped {
			// Raw bytes are the decoded text, and a secret that matched holds nothing to escape.
			if r := set.replaceBytes(lit[1 : len(lit)-1]); !bytes.Equal(r, lit[1:len(lit)-1]) {
				out = append(append(append(out, '"'), r...), '"')
				changed = true
				continue
			}
			out = append(out, lit...)
			continue
		}
		var s string
		if err := json.Unmarshal(lit, &s); err != nil {
			r := set.replaceBytes(lit)
			changed = changed || !bytes.Equal(r, lit)
			out = append(out, r...)
			continue
		}
		if r := set.replaceString(s); r != s {
			out = appendJSONString(out, r)
			changed = true
			continue
		}
		out = append(out, lit...)
	}
	return out, changed
}

// appendJSONString encodes s as zerolog does: only ", \ and control characters are escaped.
func appendJSONString(dst []byte, s string) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			dst = append(dst, '\\', c)
		case c == '\n':
			dst = append(dst, '\\', 'n')
		case c == '\r':
			dst = append(dst, '\\', 'r')
		case c == '\t':
			dst = append(dst, '\\', 't')
		case c == '\b':
			dst = append(dst, '\\', 'b')
		case c == '\f':
			dst = append(dst, '\\', 'f')
		case c < 0x20:
			dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xF])
		default:
			dst = append(dst, c)
		}
	}
	return append(dst, '"')
}

// RedactWriter returns a writer that replaces every secret value with [REDACTED] before
// writing to w, exactly as the sink does for the rows it stores; use it on the stdout path:
//
//	out := logsink.RedactWriter(os.Stdout, sink.Secrets)
//	base := zerolog.New(zerolog.MultiLevelWriter(out, sink)).With().Timestamp().Logger()
//
// secrets is called on every Write, so the set may grow at runtime; values shorter than
// SecretMinLen are ignored. A line without secrets is passed through untouched. Write reports
// len(p) on success, as a writer that changed nothing would.
func RedactWriter(w io.Writer, secrets func() []string) io.Writer {
	return &redactWriter{w: w, secrets: secrets}
}

type redactWriter struct {
	w       io.Writer
	secrets func() []string
	cache   atomic.Pointer[secretCache]
}

// secretCache remembers the set built from the last slice secrets returned; Sink.Secrets
// returns the same slice until the set changes, so the set is normally built once.
type secretCache struct {
	src []string
	set *secretSet
}

func sameSlice(a, b []string) bool {
	return len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0])
}

func (rw *redactWriter) set() *secretSet {
	var vals []string
	if rw.secrets != nil {
		vals = rw.secrets()
	}
	if c := rw.cache.Load(); c != nil && sameSlice(c.src, vals) {
		return c.set
	}
	c := &secretCache{src: vals, set: newSecretSet(vals)}
	rw.cache.Store(c)
	return c.set
}

func (rw *redactWriter) Write(p []byte) (int, error) {
	out, _ := rw.set().redact(p)
	if _, err := rw.w.Write(out); err != nil {
		return 0, err
	}
	return len(p), nil
}
