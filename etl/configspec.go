package etl

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
)

// ConfigValidator is implemented (on the pointer) by a kind's config struct to check what
// decoding alone cannot: required fields, ranges, templates, durations. It may fill derived
// fields. s is the job's strategy. Its errors should name the config key at fault.
type ConfigValidator interface {
	Validate(s Strategy) error
}

// ErrUnknownConfigKey is wrapped by the error for a config key the kind does not declare.
var ErrUnknownConfigKey = errors.New("unknown config key")

// UnknownKeyError names a config key the kind does not know and the closest one it does.
type UnknownKeyError struct {
	// Key is the dotted path of the key, e.g. "pagination.limt".
	Key string
	// Closest is the dotted path of the known key nearest to Key, "" when its object has none.
	Closest string
}

func (e *UnknownKeyError) Error() string {
	if e.Closest == "" {
		return fmt.Sprintf("unknown key %q", e.Key)
	}
	return fmt.Sprintf("unknown key %q (did you mean %q?)", e.Key, e.Closest)
}

func (e *UnknownKeyError) Unwrap() error { return ErrUnknownConfigKey }

// configSpec is what a kind declared about its config.
type configSpec struct {
	typ reflect.Type // the config struct
}

// DeclareConfig declares that jobs of kind carry a config object decoding into C, a struct
// whose json tags are the known keys (nested structs are nested objects). [Registry.ValidateConfig]
// then refuses, before any job is stored, a config with a key C does not have (naming the
// closest known key), a value of the wrong type, or one that C's Validate (see
// [ConfigValidator]) rejects. Handlers decode with [LoadConfig] under exactly the same rules.
// It panics when kind has no handler yet or C is not a struct.
func DeclareConfig[C any](r *Registry, kind string) {
	typ := reflect.TypeFor[C]()
	if typ.Kind() != reflect.Struct {
		panic("etl: DeclareConfig for kind " + kind + " with " + typ.String() + ", want a struct")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.handlers[kind]; !ok {
		panic("etl: DeclareConfig for kind " + kind + " before Register")
	}
	if r.configs == nil {
		r.configs = make(map[string]configSpec)
	}
	r.configs[kind] = configSpec{typ: typ}
}

// ValidateConfig checks a job's config for kind and strategy s as the kind declared it with
// [DeclareConfig], leaving out the [ExecutorConfigKeys]. Kinds that declared nothing (and
// unknown kinds) accept any config object. The error is a DATA error; an unknown key is an
// [*UnknownKeyError].
func (r *Registry) ValidateConfig(kind string, config json.RawMessage, s Strategy) error {
	r.mu.RLock()
	spec, ok := r.configs[kind]
	r.mu.RUnlock()
	if !ok {
		_, err := KindConfig(config)
		return err
	}
	v := reflect.New(spec.typ)
	return decodeConfig(config, v.Interface(), s)
}

// LoadConfig decodes the item's config into a new C and validates it for the item's strategy
// exactly as [Registry.ValidateConfig] does at apply time: unknown keys (with the closest known
// one), wrong types and C's Validate are permanent DATA errors.
func LoadConfig[C any](it *Item) (*C, error) {
	c := new(C)
	if err := decodeConfig(it.spec.Config, c, it.spec.Strategy); err != nil {
		return nil, Permanent(err)
	}
	return c, nil
}

// decodeConfig is the one rule for config: strip the executor's keys, refuse unknown keys
// (exact spelling), decode strictly, then validate.
func decodeConfig(raw json.RawMessage, v any, s Strategy) error {
	kc, err := KindConfig(raw)
	if err != nil {
		return err
	}
	var doc any
	dec := json.NewDecoder(bytes.NewReader(kc))
	dec.UseNumber()
	if err := dec.Decode(&doc); err != nil {
		return DataError(fmt.Errorf("decode config: %w", err))
	}
	if err := checkKeys(doc, reflect.TypeOf(v).Elem(), ""); err != nil {
		return DataError(err)
	}
	if err := decodeStrict("config", kc, v); err != nil {
		return err
	}
	if cv, ok := v.(ConfigValidator); ok {
		if err := cv.Validate(s); err != nil {
			if Classify(err) != CategoryData {
				err = DataError(err)
			}
			return err
		}
	}
	return nil
}

// checkKeys walks a decoded JSON value alongside the Go type it decodes into and returns an
// *UnknownKeyError for the first key (in sorted order) that type does not declare. Keys must be
// spelt exactly: encoding/json would accept "Query" for "query", which jobs apply should not.
func checkKeys(doc any, typ reflect.Type, prefix string) error {
	for typ.Kind() == reflect.Pointer {
		typ = typ.Elem()
	}
	switch typ.Kind() {
	case reflect.Struct:
		obj, ok := doc.(map[string]any)
		if !ok {
			return nil // a type error; strict decoding reports it with the field's name
		}
		fields := jsonFields(typ)
		keys := make([]string, 0, len(obj))
		for k := range obj {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			f, ok := fields[k]
			if !ok {
				known := make([]string, 0, len(fields))
				for name := range fields {
					known = append(known, name)
				}
				e := &UnknownKeyError{Key: prefix + k}
				if c := Closest(k, known); c != "" {
					e.Closest = prefix + c
				}
				return e
			}
			if err := checkKeys(obj[k], f, prefix+k+"."); err != nil {
				return err
			}
		}
	case reflect.Slice, reflect.Array:
		arr, ok := doc.([]any)
		if !ok {
			return nil
		}
		for i, e := range arr {
			if err := checkKeys(e, typ.Elem(), fmt.Sprintf("%s%d.", prefix, i)); err != nil {
				return err
			}
		}
	}
	// Maps hold the user's own keys (column names, query parameters): nothing to check.
	return nil
}

// jsonFields maps the JSON names of a struct's exported fields to their types, following
// embedded structs the way encoding/json does.
func jsonFields(typ reflect.Type) map[string]reflect.Type {
	fields := make(map[string]reflect.Type)
	for f := range typ.Fields() {
		if !f.IsExported() && !f.Anonymous {
			continue
		}
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" {
			t := f.Type
			if t.Kind() == reflect.Pointer {
				t = t.Elem()
			}
			if t.Kind() == reflect.Struct {
				for k, v := range jsonFields(t) {
					if _, shadowed := fields[k]; !shadowed {
						fields[k] = v
					}
				}
				continue
			}
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		fields[name] = f.Type
	}
	return fields
}

// Closest returns the candidate with the smallest edit distance to s (ties: the first in
// sorted order), "" when there are none: the "did you mean" of an error naming a bad key or
// name. It sorts candidates in place.
func Closest(s string, candidates []string) string {
	slices.Sort(candidates)
	best, bestD := "", -1
	for _, c := range candidates {
		if d := editDistance(s, c); bestD < 0 || d < bestD {
			best, bestD = c, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance between a and b in bytes. Written here because the
// SDK imports nothing beyond the standard library, pgx, zerolog and uuid.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
