package params

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"
)

const (
	// MaxSetBytes bounds one parameter set's canonical form: it is stored with every
	// item and cursor and travels in every task payload.
	MaxSetBytes = 64 << 10
	// DefaultMaxFileBytes is ParseFile's limit when the caller passes none.
	DefaultMaxFileBytes = 16 << 20
)

// ParseKV builds one parameter set from `--param key=value` arguments and returns its
// canonical form ({} for no arguments). The key is everything before the first "=",
// taken literally (dots do not nest). The value is parsed as JSON when it is valid
// JSON (42, 1.5, true, null, "quoted", [1,2], {"a":1}) and is otherwise the string
// itself: region=eu and zip=007 (not valid JSON) give strings, n=42 a number, and
// n='"42"' (quoted for the shell) the string "42". Errors name the argument.
func ParseKV(pairs []string) (json.RawMessage, error) {
	members := make(map[string]json.RawMessage, len(pairs))
	for _, arg := range pairs {
		key, val, ok := strings.Cut(arg, "=")
		_, dup := members[key]
		switch {
		case !ok:
			return nil, fmt.Errorf("param %q: %w: want key=value", arg, ErrInvalid)
		case key == "":
			return nil, fmt.Errorf("param %q: %w: empty key", arg, ErrInvalid)
		case !utf8.ValidString(arg):
			return nil, fmt.Errorf("param %q: %w: not valid UTF-8", arg, ErrInvalid)
		case dup:
			return nil, fmt.Errorf("param %q: %w: key %q given twice", arg, ErrInvalid, key)
		}
		var raw json.RawMessage
		if json.Valid([]byte(val)) {
			raw = json.RawMessage(val)
		} else {
			raw, _ = json.Marshal(val) // a valid UTF-8 string always marshals
		}
		// Canonicalise the value under its own key, so errors name the path the operator wrote.
		k, _ := json.Marshal(key)
		obj := make([]byte, 0, len(k)+len(raw)+3)
		obj = append(append(append(append(append(obj, '{'), k...), ':'), raw...), '}')
		wrapped, err := Canonical(obj)
		if err != nil {
			return nil, fmt.Errorf("param %q: %w", arg, err)
		}
		var one map[string]json.RawMessage
		if err := json.Unmarshal(wrapped, &one); err != nil {
			return nil, fmt.Errorf("param %q: %w", arg, err)
		}
		members[key] = one[key]
	}
	obj, err := json.Marshal(members)
	if err != nil {
		return nil, fmt.Errorf("build params object: %w", err)
	}
	c, err := Canonical(obj)
	if err != nil {
		return nil, err
	}
	if err := CheckSize(c); err != nil {
		big, size := "", 0
		for k, v := range members {
			if len(v) > size {
				big, size = k, len(v)
			}
		}
		return nil, fmt.Errorf("param %q (%d bytes) makes the set too large: %w", big, size, err)
	}
	return c, nil
}

// CheckSize refuses a canonical parameter set larger than MaxSetBytes.
func CheckSize(canonical []byte) error {
	if len(canonical) > MaxSetBytes {
		return fmt.Errorf("%w: parameter set is %d bytes in canonical form, over the limit of %d", ErrInvalid, len(canonical), MaxSetBytes)
	}
	return nil
}

// ParseFile reads parameter sets from r and returns each in canonical form, in file
// order. It accepts either a JSON array of objects (when the first non-space byte is
// "[") or JSON lines: one object per line, blank lines ignored; a multi-line object
// must therefore sit in an array. A UTF-8 byte order mark is skipped.
//
// Errors name the array element (0-based, as in jq) or the line (1-based, as in
// editors). Reading more than maxBytes (DefaultMaxFileBytes when maxBytes <= 0) is an
// error naming the limit, as is a set whose canonical form exceeds MaxSetBytes.
// Duplicates are kept; Dedupe removes them.
func ParseFile(r io.Reader, maxBytes int64) ([]json.RawMessage, error) {
	if maxBytes <= 0 {
		maxBytes = DefaultMaxFileBytes
	}
	var sets []json.RawMessage
	for set, err := range Stream(r, maxBytes) {
		if err != nil {
			return nil, err
		}
		sets = append(sets, set)
	}
	return sets, nil
}

func canonicalSet(raw []byte) (json.RawMessage, error) {
	c, err := Canonical(raw)
	if err != nil {
		return nil, err
	}
	if err := CheckSize(c); err != nil {
		return nil, err
	}
	return c, nil
}

func eofIsUnexpected(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// Set is one parameter set with its identity.
type Set struct {
	// Params is the canonical form.
	Params json.RawMessage
	// Hash is the param_hash of Params.
	Hash string
}

// Dedupe canonicalises sets and drops every set equal to an earlier one (same
// param_hash), keeping first-occurrence order. It reports how many were dropped;
// an invalid set is an error naming its 0-based index.
func Dedupe(sets []json.RawMessage) (unique []Set, dropped int, err error) {
	seen := make(map[string]bool, len(sets))
	unique = make([]Set, 0, len(sets))
	for i, raw := range sets {
		c, h, err := Canon(raw)
		if err != nil {
			return nil, 0, fmt.Errorf("parameter set %d: %w", i, err)
		}
		if seen[h] {
			dropped++
			continue
		}
		seen[h] = true
		unique = append(unique, Set{Params: c, Hash: h})
	}
	return unique, dropped, nil
}
