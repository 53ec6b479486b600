package jobdef_test

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/etlexec/etlexec/internal/jobdef"
	"github.com/etlexec/etlexec/internal/kinds"
	"github.com/etlexec/etlexec/internal/store"
)

func builtin() jobdef.Catalog {
	return jobdef.Catalog{Registry: kinds.Builtin(), Extra: []string{"team_kind"}}
}

func TestParseExamples(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("../../examples/jobs.yaml")
	require.NoError(t, err)
	rows, err := jobdef.Parse("examples/jobs.yaml", b, builtin())
	require.NoError(t, err, "the examples must apply as they are")
	require.NotEmpty(t, rows)
}

func TestParseConfig(t *testing.T) {
	t.Parallel()
	job := func(kind, strategy, config string) []byte {
		incremental := ""
		if strategy != "none" {
			incremental = "\n    supports_incremental: true"
		}
		return []byte("jobs:\n  - job_id: orders\n    kind: " + kind + "\n    strategy: " + strategy + incremental +
			"\n    config:\n" + indent(config, "      "))
	}
	for _, tc := range []struct {
		name, kind, strategy, config string
		want                         []string // substrings of the error; none means valid
	}{
		{name: "SyntheticValid", kind: "synthetic", strategy: "none", config: "target_table: t"},
		{name: "SyntheticTypo", kind: "synthetic", strategy: "none", config: "target_tabel: t",
			want: []string{`job "orders"`, `config.target_tabel: unknown key; did you mean "target_table"?`}},
		{name: "ExecutorKeyAccepted", kind: "synthetic", strategy: "none", config: "target_url_env: WAREHOUSE_URL"},
		{name: "ExtraKindAnyConfig", kind: "team_kind", strategy: "none", config: "whatever: 1"},
		{name: "SQLQueryTypo", kind: "sql_incremental", strategy: "modified_date", config: `source_url_env: SRC
querry: SELECT id, modified_at FROM src
modified_column: modified_at
target_table: dw.orders
key_columns: [id]`,
			want: []string{`job "orders"`, `config.querry: unknown key; did you mean "query"?`}},
		{name: "SQLValueChecked", kind: "sql_incremental", strategy: "modified_date", config: `source_url_env: SRC
query: SELECT id, modified_at FROM src
target_table: dw.orders
key_columns: [id]`,
			want: []string{`job "orders"`, "modified_column: required"}},
		{name: "SQLSkippingComparisonRefused", kind: "sql_incremental", strategy: "modified_date", config: `source_url_env: SRC
query: SELECT id, modified_at FROM src WHERE modified_at > :cursor_start
modified_column: modified_at
target_table: dw.orders
key_columns: [id]`,
			want: []string{`job "orders"`, "> :cursor_start"}},
		{name: "HTTPPaginationTypo", kind: "http_json", strategy: "modified_date", config: `base_url: https://api.example.com/orders
modified_field: updated_at
target_table: dw.orders
key_columns: [id]
columns: {id: id}
pagniation: {type: page, limit: 50}`,
			want: []string{`job "orders"`, `config.pagniation: unknown key; did you mean "pagination"?`}},
		{name: "HTTPNestedTypo", kind: "http_json", strategy: "modified_date", config: `base_url: https://api.example.com/orders
modified_field: updated_at
target_table: dw.orders
key_columns: [id]
columns: {id: id}
pagination: {type: keyset, limit: 50, since_parm: updated_since}`,
			want: []string{`job "orders"`, `config.pagination.since_parm: unknown key; did you mean "pagination.since_param"?`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := jobdef.Parse("jobs.yaml", job(tc.kind, tc.strategy, tc.config), builtin())
			if len(tc.want) == 0 {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, jobdef.ErrInvalid)
			for _, w := range tc.want {
				require.ErrorContains(t, err, w)
			}
		})
	}
}

func indent(s, prefix string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = prefix + l
	}
	return strings.Join(lines, "\n") + "\n"
}

func TestParseLimits(t *testing.T) {
	t.Parallel()
	t.Run("Valid", func(t *testing.T) {
		t.Parallel()
		file, err := jobdef.Load("jobs.yaml", []byte(`sources:
  crm_api: {rate: 20, burst: 5}
  slow_api: {rate: 1, per: 10s}
jobs:
  - job_id: contacts
    kind: synthetic
    max_running_items: 2
    config: {source: crm_api, target_table: t}
  - job_id: other
    kind: synthetic
`), builtin())
		require.NoError(t, err)
		require.Equal(t, []store.Source{
			{Name: "crm_api", Rate: 20, Burst: 5, Period: time.Second},
			{Name: "slow_api", Rate: 1, Burst: jobdef.SourceBurstDefault, Period: 10 * time.Second},
		}, file.Sources)
		require.EqualValues(t, 2, file.Jobs[0].Job.MaxRunningItems)
		require.EqualValues(t, 0, file.Jobs[1].Job.MaxRunningItems, "absent means no limit")
	})
	for _, tc := range []struct {
		name, file string
		want       []string
	}{
		{name: "UnknownSource", file: `sources:
  crm_api: {rate: 20}
jobs:
  - job_id: contacts
    kind: synthetic
    config: {source: crm_apj}
`, want: []string{`job "contacts"`, `config.source: "crm_apj" is not a source`, `did you mean "crm_api"?`}},
		{name: "SourceNotAString", file: `jobs:
  - job_id: contacts
    kind: synthetic
    config: {source: 5}
`, want: []string{`config.source: want the name of a source`}},
		{name: "SourceKeyTypo", file: `sources:
  crm_api: {rate: 20, brust: 5}
jobs:
  - job_id: contacts
    kind: synthetic
`, want: []string{`sources.crm_api: unknown key "brust"; did you mean "burst"?`}},
		{name: "RateRequired", file: `sources:
  crm_api: {burst: 5}
jobs:
  - job_id: contacts
    kind: synthetic
`, want: []string{`sources.crm_api.rate: required`}},
		{name: "RateZero", file: `sources:
  crm_api: {rate: 0}
jobs:
  - job_id: contacts
    kind: synthetic
`, want: []string{`sources.crm_api.rate: 0 must be at least 1`}},
		{name: "BadPer", file: `sources:
  crm_api: {rate: 2, per: soon}
jobs:
  - job_id: contacts
    kind: synthetic
`, want: []string{`sources.crm_api.per: "soon" is not a duration`}},
		{name: "BadSourceName", file: `sources:
  CRM API: {rate: 2}
jobs:
  - job_id: contacts
    kind: synthetic
`, want: []string{`sources.CRM API: the name must be a slug`}},
		{name: "NegativeMaxRunning", file: `jobs:
  - job_id: contacts
    kind: synthetic
    max_running_items: -1
`, want: []string{`job "contacts"`, `max_running_items: -1 must be between 0 (no limit) and`}},
		{name: "MaxRunningTypo", file: `jobs:
  - job_id: contacts
    kind: synthetic
    max_runing_items: 2
`, want: []string{`unknown field "max_runing_items"`}},
		{name: "TopLevelTypo", file: `source:
  crm_api: {rate: 2}
jobs:
  - job_id: contacts
    kind: synthetic
`, want: []string{`top level: unknown field "source"`, "optionally a `sources:` mapping"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := jobdef.Load("jobs.yaml", []byte(tc.file), builtin())
			require.ErrorIs(t, err, jobdef.ErrInvalid)
			for _, w := range tc.want {
				require.ErrorContains(t, err, w)
			}
		})
	}
}
