package store

import (
	"encoding/json"
	"strings"
	"unicode/utf8"
)

// Size limits of the texts the ledger stores.
const (
	// MessageMax bounds an error message or a log message.
	MessageMax = 4000
	// FieldMax bounds one string inside an error detail or log fields.
	FieldMax = 16000
	// ProgressMax bounds a progress message.
	ProgressMax = 200
)

const ellipsis = "…"

// Text makes s storable in a Postgres text column, the one way every text bound for the
// database is cleaned (error messages and details, log messages and fields, progress): invalid
// UTF-8 becomes U+FFFD, NUL bytes (which Postgres refuses) are dropped, and a text longer than
// max bytes is cut on a rune boundary and marked with "…". max <= 0 means no limit.
func Text(s string, max int) string {
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	if strings.IndexByte(s, 0) >= 0 {
		s = strings.ReplaceAll(s, "\x00", "")
	}
	if max <= 0 || len(s) <= max {
		return s
	}
	cut := max - len(ellipsis)
	if cut < 0 {
		cut = 0
	}
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + ellipsis
}

// TextPtr is Text for an optional text.
func TextPtr(s *string, max int) *string {
	if s == nil {
		return nil
	}
	c := Text(*s, max)
	return &c
}

// JSON makes a JSON value storable as jsonb: every string in it, keys included, goes through
// Text (jsonb refuses the \u0000 escape), strings capped at maxString bytes. A value that is
// not JSON at all is stored as a JSON string of its cleaned text. nil stays nil.
func JSON(raw json.RawMessage, maxString int) json.RawMessage {
	if raw == nil {
		return nil
	}
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		b, _ := json.Marshal(Text(string(raw), maxString))
		return b
	}
	if !needsCleaning(raw) {
		return raw
	}
	b, err := json.Marshal(cleanValue(v, maxString))
	if err != nil {
		b, _ = json.Marshal(Text(string(raw), maxString))
	}
	return b
}

// needsCleaning is a fast path: valid JSON without \u0000 and without long strings is stored
// as it is.
func needsCleaning(raw json.RawMessage) bool {
	return strings.Contains(string(raw), `\u0000`) || len(raw) > FieldMax || !utf8.Valid(raw)
}

func cleanValue(v any, max int) any {
	switch t := v.(type) {
	case string:
		return Text(t, max)
	case []any:
		for i := range t {
			t[i] = cleanValue(t[i], max)
		}
		return t
	case map[string]any:
		out := make(map[string]any, len(t))
		for k, x := range t {
			out[Text(k, max)] = cleanValue(x, max)
		}
		return out
	}
	return v
}
