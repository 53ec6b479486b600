package etl_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/etlexec/etlexec/etl"
)

type testPagination struct {
	Type  string `json:"type"`
	Limit int    `json:"limit"`
}

type testConfig struct {
	Query      string            `json:"query"`
	PageSize   int               `json:"page_size"`
	Pagination testPagination    `json:"pagination"`
	Columns    map[string]string `json:"columns"`
	Lookback   string            `json:"lookback"`
	Ignored    string            `json:"-"`
	derived    int
}

func (c *testConfig) Validate(s etl.Strategy) error {
	if c.Query == "" {
		return errors.New("query: required")
	}
	if s == etl.StrategyModifiedDate && c.Lookback == "" {
		return errors.New("lookback: required for modified_date")
	}
	c.derived = len(c.Query)
	return nil
}

func TestValidateConfig(t *testing.T) {
	t.Parallel()
	r := etl.NewRegistry()
	r.Register("declared", nopHandler)
	r.Register("free", nopHandler)
	etl.DeclareConfig[testConfig](r, "declared")

	tests := []struct {
		name     string
		kind     string
		config   string
		strategy etl.Strategy
		want     string // substring of the error; "" means valid
		unknown  *etl.UnknownKeyError
	}{
		{name: "Valid", kind: "declared", config: `{"query":"q","columns":{"any":"thing"},"pagination":{"type":"page"}}`},
		{name: "ExecutorKeysLeftOut", kind: "declared", config: `{"query":"q","target_url_env":"WAREHOUSE_URL"}`},
		{name: "TopLevelTypo", kind: "declared", config: `{"query":"q","pagniation":{}}`,
			unknown: &etl.UnknownKeyError{Key: "pagniation", Closest: "pagination"}},
		{name: "NestedTypo", kind: "declared", config: `{"query":"q","pagination":{"limt":5}}`,
			unknown: &etl.UnknownKeyError{Key: "pagination.limt", Closest: "pagination.limit"}},
		{name: "WrongCaseIsUnknown", kind: "declared", config: `{"Query":"q"}`,
			unknown: &etl.UnknownKeyError{Key: "Query", Closest: "query"}},
		{name: "DashedKeyIsUnknown", kind: "declared", config: `{"query":"q","-":1}`,
			unknown: &etl.UnknownKeyError{Key: "-", Closest: "query"}},
		{name: "UnexportedIsUnknown", kind: "declared", config: `{"query":"q","derived":1}`,
			unknown: &etl.UnknownKeyError{Key: "derived", Closest: "query"}},
		{name: "WrongType", kind: "declared", config: `{"query":"q","page_size":"ten"}`, want: `field "page_size"`},
		{name: "ValidateRuns", kind: "declared", config: `{}`, want: "query: required"},
		{name: "ValidateSeesStrategy", kind: "declared", config: `{"query":"q"}`, strategy: etl.StrategyModifiedDate,
			want: "lookback: required"},
		{name: "NotAnObject", kind: "declared", config: `[1]`, want: "want a JSON object"},
		{name: "UndeclaredKindTakesAnything", kind: "free", config: `{"whatever":1}`},
		{name: "UndeclaredKindStillWantsAnObject", kind: "free", config: `"x"`, want: "want a JSON object"},
		{name: "UnknownKind", kind: "nosuch", config: `{"x":1}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := tc.strategy
			if s == "" {
				s = etl.StrategyNone
			}
			err := r.ValidateConfig(tc.kind, json.RawMessage(tc.config), s)
			switch {
			case tc.unknown != nil:
				var uk *etl.UnknownKeyError
				if !errors.As(err, &uk) {
					t.Fatalf("ValidateConfig() = %v, want an UnknownKeyError", err)
				}
				if *uk != *tc.unknown {
					t.Errorf("ValidateConfig() = %+v, want %+v", *uk, *tc.unknown)
				}
				if !errors.Is(err, etl.ErrUnknownConfigKey) {
					t.Errorf("errors.Is(%v, ErrUnknownConfigKey) = false", err)
				}
				if !strings.Contains(err.Error(), fmt.Sprintf("did you mean %q", tc.unknown.Closest)) {
					t.Errorf("message %q does not name the closest key", err)
				}
			case tc.want != "":
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("ValidateConfig() = %v, want an error containing %q", err, tc.want)
				}
			default:
				if err != nil {
					t.Fatalf("ValidateConfig() = %v, want nil", err)
				}
				return
			}
			if etl.Classify(err) != etl.CategoryData {
				t.Errorf("error classifies as %s, want DATA", etl.Classify(err))
			}
		})
	}
}

func TestLoadConfig(t *testing.T) {
	t.Parallel()
	it := etl.NewItem(etl.ItemSpec{Strategy: etl.StrategyModifiedDate,
		Config: json.RawMessage(`{"query":"SELECT 1","lookback":"1h","target_url_env":"X"}`)})
	cfg, err := etl.LoadConfig[testConfig](it)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Query != "SELECT 1" || cfg.derived != len("SELECT 1") {
		t.Errorf("LoadConfig() = %+v, want the decoded and validated config", cfg)
	}

	bad := etl.NewItem(etl.ItemSpec{Strategy: etl.StrategyModifiedDate, Config: json.RawMessage(`{"querry":"x"}`)})
	_, err = etl.LoadConfig[testConfig](bad)
	if !errors.Is(err, etl.ErrUnknownConfigKey) || !etl.IsPermanent(err) || etl.Classify(err) != etl.CategoryData {
		t.Errorf("LoadConfig() with a typo = %v, want a permanent DATA unknown-key error", err)
	}
}

func TestDeclareConfigPanics(t *testing.T) {
	t.Parallel()
	for name, declare := range map[string]func(r *etl.Registry){
		"BeforeRegister": func(r *etl.Registry) { etl.DeclareConfig[testConfig](r, "k") },
		"NotAStruct": func(r *etl.Registry) {
			r.Register("k", nopHandler)
			etl.DeclareConfig[map[string]any](r, "k")
		},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			defer func() {
				if recover() == nil {
					t.Error("DeclareConfig did not panic")
				}
			}()
			declare(etl.NewRegistry())
		})
	}
}
