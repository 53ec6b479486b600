// Package jobdef owns job definitions as operators write them (jobs.yaml): parsing, strict
// validation with errors naming the job and the field, and conversion to store rows. A file
// is applied all-or-nothing.
package jobdef

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
	"sigs.k8s.io/yaml"

	"github.com/etlexec/etlexec/etl"
	"github.com/etlexec/etlexec/internal/params"
	"github.com/etlexec/etlexec/internal/runstate"
	"github.com/etlexec/etlexec/internal/store"
)

// File is the top level of jobs.yaml.
type File struct {
	Jobs []Job `json:"jobs"`
	// Sources are named sources: one request rate shared by every worker and every job whose
	// config names the source (`source: crm_api`).
	Sources map[string]Source `json:"sources"`
}

// Source is one named source of the jobs file.
type Source struct {
	// Rate is how many requests go to the source per Per, steadily. Required, >= 1.
	Rate *int32 `json:"rate"`
	// Burst is how many requests may go at once (the bucket's size); default 1: evenly spaced.
	Burst *int32 `json:"burst"`
	// Per is what Rate counts over, a duration; default 1s.
	Per string `json:"per"`
}

// Job is one job definition. Durations are Go duration strings ("10m", "1h30m").
type Job struct {
	JobID               string          `json:"job_id"`
	Kind                string          `json:"kind"`
	Description         string          `json:"description"`
	SupportsParams      bool            `json:"supports_params"`
	SupportsIncremental bool            `json:"supports_incremental"`
	Strategy            string          `json:"strategy"`
	CursorPolicy        string          `json:"cursor_policy"`
	Config              json.RawMessage `json:"config"`
	ParamSource         json.RawMessage `json:"param_source"`
	Schedule            string          `json:"schedule"`
	OverlapPolicy       string          `json:"overlap_policy"`
	Queue               string          `json:"queue"`
	MaxAttempts         *int32          `json:"max_attempts"`
	Timeout             string          `json:"timeout"`
	RunTimeout          string          `json:"run_timeout"`
	Retention           string          `json:"retention"`
	Enabled             *bool           `json:"enabled"`
	// HistoryRetention keeps the job's finished runs this long ("90d", "720h"); empty means
	// the global retention of `enqueuer prune` and the scheduler's daily pass.
	HistoryRetention string `json:"history_retention"`
	// AlertOn lists the run end statuses that notify; absent means the alerter's default,
	// [] means none.
	AlertOn []string `json:"alert_on"`
	// ExpectedDuration: a run still open after this long notifies once (run_overdue).
	ExpectedDuration string `json:"expected_duration"`
	// Catchup is what the scheduler does with missed cron ticks: skip, once (default: only the
	// latest fires) or each (every one, oldest first, at most CatchupLimit).
	Catchup      string `json:"catchup"`
	CatchupLimit *int32 `json:"catchup_limit"`
	// MaxRunningItems is the most items of the job running at once across the whole fleet;
	// absent or 0 means no limit.
	MaxRunningItems *int32 `json:"max_running_items"`
}

// Defaults applied to fields a definition leaves out.
const (
	StrategyDefault      = "none"
	CursorPolicyDefault  = "run"
	OverlapPolicyDefault = "skip"
	QueueDefault         = "etl"
	MaxAttemptsDefault   = 3
	TimeoutDefault       = 10 * time.Minute
	// RetentionDefault keeps no completed task in Redis: Postgres is the record, and a
	// retained task costs ~0.7 KB of Redis memory per item for the whole retention.
	RetentionDefault = 0
	// SourceBurstDefault spaces a source's requests evenly.
	SourceBurstDefault = 1
	// SourcePerDefault is the period a source's rate counts over.
	SourcePerDefault = time.Second
	// MaxRunningItemsMax bounds max_running_items (a Redis set of that many holders at most).
	MaxRunningItemsMax = 100000
)

var (
	jobIDPattern = regexp.MustCompile(`^[a-z][a-z0-9_.-]{0,62}$`)
	// sourcePattern is jobIDPattern: source names end up in Redis keys and log fields.
	sourcePattern = jobIDPattern
	queuePattern  = regexp.MustCompile(`^[A-Za-z0-9_.:-]{1,64}$`)
	// CronParser accepts standard 5-field specs and descriptors like @hourly.
	CronParser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)
)

// ErrInvalid wraps every validation error.
var ErrInvalid = errors.New("invalid job definition")

// Catalog is what Parse knows about kinds: the registry of the worker's kinds, whose declared
// configs it checks, and the names of kinds registered elsewhere (a team's own worker binary),
// whose configs it cannot check. The zero Catalog accepts any kind and any config object.
type Catalog struct {
	Registry *etl.Registry
	Extra    []string
}

// kinds returns every known kind name, nil when the catalog is empty (anything goes).
func (c Catalog) kinds() []string {
	if c.Registry == nil && len(c.Extra) == 0 {
		return nil
	}
	var ks []string
	if c.Registry != nil {
		ks = c.Registry.Kinds()
	}
	return append(ks, c.Extra...)
}

// Parse reads jobs.yaml strictly (unknown fields are errors) and validates every job against
// the catalog: its kind must exist and its config must be what the kind declared (a typo is
// refused naming the key and the closest known one). All problems are reported together. It
// returns how each job runs; Definitions adds each job's policy.
func Parse(name string, b []byte, cat Catalog) ([]store.JobSpec, error) {
	defs, err := Definitions(name, b, cat)
	if err != nil {
		return nil, err
	}
	out := make([]store.JobSpec, len(defs))
	for i, d := range defs {
		out[i] = d.Job
	}
	return out, nil
}

// Definitions is Parse with each job's policy (retention, alerts, catch-up).
func Definitions(name string, b []byte, cat Catalog) ([]store.JobDefinition, error) {
	file, err := Load(name, b, cat)
	if err != nil {
		return nil, err
	}
	return file.Jobs, nil
}

// Load is Definitions with the file's named sources: the whole file, as `jobs apply` writes
// it. A job's config `source` must name a source of the same file.
func Load(name string, b []byte, cat Catalog) (store.Definitions, error) {
	var none store.Definitions
	if len(bytes.TrimSpace(b)) == 0 {
		return none, fmt.Errorf("%w: %s is empty", ErrInvalid, name)
	}
	js, err := yaml.YAMLToJSON(b)
	if err != nil {
		return none, fmt.Errorf("%w: %s: not valid YAML: %v", ErrInvalid, name, err)
	}
	var top struct {
		Jobs    []json.RawMessage          `json:"jobs"`
		Sources map[string]json.RawMessage `json:"sources"`
	}
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&top); err != nil {
		return none, fmt.Errorf("%w: %s: top level: %v (want a `jobs:` list and optionally a `sources:` mapping)", ErrInvalid, name, fieldError(err))
	}
	var (
		f       File
		decErrs []error
	)
	sources, srcErrs := parseSources(top.Sources)
	for _, e := range srcErrs {
		decErrs = append(decErrs, fmt.Errorf("%s: %w", name, e))
	}
	declared := make(map[string]bool, len(sources))
	for _, src := range sources {
		declared[src.Name] = true
	}
	for i, raw := range top.Jobs {
		var j Job
		d := json.NewDecoder(bytes.NewReader(raw))
		d.DisallowUnknownFields()
		if err := d.Decode(&j); err != nil {
			var id struct {
				JobID string `json:"job_id"`
			}
			_ = json.Unmarshal(raw, &id)
			where := fmt.Sprintf("job #%d", i+1)
			if id.JobID != "" {
				where = fmt.Sprintf("job %q", id.JobID)
			}
			decErrs = append(decErrs, fmt.Errorf("%s: %s: %s", name, where, fieldError(err)))
		}
		f.Jobs = append(f.Jobs, j)
	}
	if len(decErrs) > 0 {
		return none, fmt.Errorf("%w:\n%w", ErrInvalid, errors.Join(decErrs...))
	}
	if len(f.Jobs) == 0 {
		return none, fmt.Errorf("%w: %s: no jobs (want a top-level `jobs:` list)", ErrInvalid, name)
	}
	var (
		errs []error
		out  []store.JobDefinition
		seen = map[string]int{}
	)
	for i, j := range f.Jobs {
		row, jerrs := j.validate(cat)
		jerrs = append(jerrs, j.limits(&row, declared)...)
		policy, perrs := j.policy()
		jerrs = append(jerrs, perrs...)
		where := fmt.Sprintf("job #%d", i+1)
		if j.JobID != "" {
			where = fmt.Sprintf("job %q", j.JobID)
		}
		if prev, dup := seen[j.JobID]; dup && j.JobID != "" {
			jerrs = append(jerrs, fmt.Errorf("job_id: duplicate of job #%d", prev))
		}
		seen[j.JobID] = i + 1
		for _, e := range jerrs {
			errs = append(errs, fmt.Errorf("%s: %s: %w", name, where, e))
		}
		out = append(out, store.JobDefinition{Job: row, Policy: policy})
	}
	if len(errs) > 0 {
		return none, fmt.Errorf("%w:\n%w", ErrInvalid, errors.Join(errs...))
	}
	return store.Definitions{Jobs: out, Sources: sources}, nil
}

// parseSources validates the file's `sources:` mapping, in name order.
func parseSources(raw map[string]json.RawMessage) ([]store.Source, []error) {
	names := make([]string, 0, len(raw))
	for n := range raw {
		names = append(names, n)
	}
	slices.Sort(names)
	var (
		out  []store.Source
		errs []error
	)
	for _, n := range names {
		where := fmt.Sprintf("sources.%s", n)
		if !sourcePattern.MatchString(n) {
			errs = append(errs, fmt.Errorf("%s: the name must be a slug of lowercase letters, digits, '_', '-', '.' starting with a letter (max 63)", where))
			continue
		}
		var src Source
		d := json.NewDecoder(bytes.NewReader(raw[n]))
		d.DisallowUnknownFields()
		if err := d.Decode(&src); err != nil {
			msg := fieldError(err)
			if f, ok := strings.CutPrefix(msg, "unknown field "); ok {
				key := strings.Trim(strings.TrimSuffix(f, " (a typo?)"), `"`)
				msg = fmt.Sprintf("unknown key %q; did you mean %q?", key, etl.Closest(key, []string{"rate", "burst", "per"}))
			}
			errs = append(errs, fmt.Errorf("%s: %s (want {rate: N, burst: N, per: 1s})", where, msg))
			continue
		}
		s := store.Source{Name: n, Burst: SourceBurstDefault, Period: SourcePerDefault}
		switch {
		case src.Rate == nil:
			errs = append(errs, fmt.Errorf("%s.rate: required (requests per %s)", where, SourcePerDefault))
		case *src.Rate < 1:
			errs = append(errs, fmt.Errorf("%s.rate: %d must be at least 1 (for slower sources raise per, e.g. rate: 1, per: 10s)", where, *src.Rate))
		default:
			s.Rate = *src.Rate
		}
		if src.Burst != nil {
			if *src.Burst < 1 {
				errs = append(errs, fmt.Errorf("%s.burst: %d must be at least 1", where, *src.Burst))
			}
			s.Burst = *src.Burst
		}
		if src.Per != "" {
			d, err := duration(where+".per", src.Per, SourcePerDefault, false)
			if err == nil && d < time.Millisecond {
				err = fmt.Errorf("%s.per: %q must be at least 1ms", where, src.Per)
			}
			if err != nil {
				errs = append(errs, err)
			}
			s.Period = d
		}
		out = append(out, s)
	}
	return out, errs
}

// limits validates the job's max_running_items and the source its config names.
func (j Job) limits(row *store.JobSpec, sources map[string]bool) []error {
	var errs []error
	if j.MaxRunningItems != nil {
		row.MaxRunningItems = *j.MaxRunningItems
		if *j.MaxRunningItems < 0 || *j.MaxRunningItems > MaxRunningItemsMax {
			errs = append(errs, fmt.Errorf("max_running_items: %d must be between 0 (no limit) and %d", *j.MaxRunningItems, MaxRunningItemsMax))
		}
	}
	var cfg map[string]json.RawMessage
	if json.Unmarshal(row.Config, &cfg) != nil {
		return errs
	}
	raw, ok := cfg[etl.SourceKey]
	if !ok {
		return errs
	}
	var name string
	if err := json.Unmarshal(raw, &name); err != nil || name == "" {
		return append(errs, fmt.Errorf("config.%s: want the name of a source under the top-level `sources:`, got %s", etl.SourceKey, raw))
	}
	if !sources[name] {
		known := make([]string, 0, len(sources))
		for n := range sources {
			known = append(known, n)
		}
		msg := fmt.Sprintf("config.%s: %q is not a source of this file's top-level `sources:`", etl.SourceKey, name)
		if c := etl.Closest(name, known); c != "" {
			msg += fmt.Sprintf("; did you mean %q?", c)
		}
		errs = append(errs, errors.New(msg))
	}
	return errs
}

// fieldError rewords encoding/json's decode errors for people editing YAML.
func fieldError(err error) string {
	msg := err.Error()
	if f, ok := strings.CutPrefix(msg, "json: unknown field "); ok {
		return "unknown field " + f + " (a typo?)"
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return fmt.Sprintf("field %s: got a %s, want %s", te.Field, te.Value, te.Type)
	}
	return strings.TrimPrefix(msg, "json: ")
}

func oneOf(field, v string, allowed ...string) error {
	if slices.Contains(allowed, v) {
		return nil
	}
	return fmt.Errorf("%s: unknown value %q (want %s)", field, v, strings.Join(allowed, "|"))
}

func duration(field, v string, def time.Duration, allowZero bool) (time.Duration, error) {
	if v == "" {
		return def, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, fmt.Errorf("%s: %q is not a duration like 10m or 1h", field, v)
	}
	if d < 0 || (d == 0 && !allowZero) {
		return 0, fmt.Errorf("%s: %q must be positive", field, v)
	}
	return d, nil
}

func (j Job) validate(cat Catalog) (store.JobSpec, []error) {
	kinds := cat.kinds()
	var errs []error
	add := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	if !jobIDPattern.MatchString(j.JobID) {
		add(fmt.Errorf("job_id: %q must be a slug of lowercase letters, digits, '_', '-', '.' starting with a letter (max 63)", j.JobID))
	}
	if j.Kind == "" {
		add(errors.New("kind: required"))
	} else if kinds != nil && !slices.Contains(kinds, j.Kind) {
		add(fmt.Errorf("kind: unknown kind %q (registered: %s)", j.Kind, strings.Join(kinds, ", ")))
	}
	row := store.JobSpec{
		JobID: j.JobID, Kind: j.Kind, Description: j.Description, SupportsParams: j.SupportsParams,
		SupportsIncremental: j.SupportsIncremental, Strategy: etl.Strategy(j.Strategy),
		CursorPolicy: runstate.CursorPolicy(j.CursorPolicy), OverlapPolicy: j.OverlapPolicy, Queue: j.Queue, Enabled: true,
	}
	if row.Strategy == "" {
		row.Strategy = StrategyDefault
	}
	if row.CursorPolicy == "" {
		row.CursorPolicy = CursorPolicyDefault
	}
	if row.OverlapPolicy == "" {
		row.OverlapPolicy = OverlapPolicyDefault
	}
	if row.Queue == "" {
		row.Queue = QueueDefault
	}
	add(oneOf("strategy", string(row.Strategy), "none", "modified_date", "last_run"))
	add(oneOf("cursor_policy", string(row.CursorPolicy), "run", "item"))
	add(oneOf("overlap_policy", row.OverlapPolicy, "skip", "queue", "allow"))
	if !queuePattern.MatchString(row.Queue) {
		add(fmt.Errorf("queue: %q must be 1-64 of letters, digits, '_', '.', ':', '-' (no braces)", row.Queue))
	}
	if row.Strategy != "none" && !j.SupportsIncremental {
		add(fmt.Errorf("strategy: %q needs supports_incremental: true", row.Strategy))
	}
	if j.SupportsIncremental && row.Strategy == "none" {
		add(errors.New("supports_incremental: true needs strategy modified_date or last_run"))
	}
	row.MaxAttempts = MaxAttemptsDefault
	if j.MaxAttempts != nil {
		row.MaxAttempts = *j.MaxAttempts
		if row.MaxAttempts < 1 || row.MaxAttempts > 100 {
			add(fmt.Errorf("max_attempts: %d must be between 1 and 100", row.MaxAttempts))
		}
	}
	if j.Enabled != nil {
		row.Enabled = *j.Enabled
	}
	d, err := duration("timeout", j.Timeout, TimeoutDefault, false)
	add(err)
	row.TimeoutMs = d.Milliseconds()
	d, err = duration("retention", j.Retention, RetentionDefault, true)
	add(err)
	row.RetentionMs = d.Milliseconds()
	if j.RunTimeout != "" {
		d, err := duration("run_timeout", j.RunTimeout, 0, false)
		add(err)
		ms := d.Milliseconds()
		row.RunTimeoutMs = &ms
	}
	row.Config = json.RawMessage(`{}`)
	if len(j.Config) > 0 && string(j.Config) != "null" {
		if !isObject(j.Config) {
			add(errors.New("config: must be a mapping"))
		} else if _, err := params.Canonical(j.Config); err != nil {
			add(fmt.Errorf("config: %w", err))
		} else {
			row.Config = j.Config
		}
	}
	if cat.Registry != nil && len(errs) == 0 {
		// The kind's own rules run on an otherwise valid job: its strategy is then known.
		if err := cat.Registry.ValidateConfig(j.Kind, row.Config, row.Strategy); err != nil {
			add(configError(err))
		}
	}
	if len(j.ParamSource) > 0 && string(j.ParamSource) != "null" {
		if !j.SupportsParams {
			add(errors.New("param_source: given for a job with supports_params: false"))
		} else if err := validateParamSource(j.ParamSource); err != nil {
			add(fmt.Errorf("param_source: %w", err))
		}
		row.ParamSource = j.ParamSource
	}
	if j.Schedule != "" {
		if _, err := CronParser.Parse(j.Schedule); err != nil {
			add(fmt.Errorf("schedule: %q is not a cron spec: %v", j.Schedule, err))
		}
		s := j.Schedule
		row.Schedule = &s
	}
	return row, errs
}

// configError words a kind's config error for people editing YAML: the key path leads.
func configError(err error) error {
	var uk *etl.UnknownKeyError
	if errors.As(err, &uk) {
		msg := fmt.Sprintf("config.%s: unknown key (a typo?)", uk.Key)
		if uk.Closest != "" {
			msg = fmt.Sprintf("config.%s: unknown key; did you mean %q?", uk.Key, uk.Closest)
		}
		return errors.New(msg)
	}
	return fmt.Errorf("config: %w", err)
}

func isObject(b json.RawMessage) bool {
	var m map[string]json.RawMessage
	return json.Unmarshal(b, &m) == nil
}

// validateParamSource accepts {"static": [objects...]} or {"sql": "...", "source_url_env": "VAR"}.
func validateParamSource(b json.RawMessage) error {
	var src struct {
		Static       []json.RawMessage `json:"static"`
		SQL          string            `json:"sql"`
		SourceURLEnv string            `json:"source_url_env"`
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&src); err != nil {
		return fmt.Errorf("want {static: [...]} or {sql: ..., source_url_env: VAR}: %v", err)
	}
	switch {
	case src.Static != nil && src.SQL != "":
		return errors.New("give either static or sql, not both")
	case src.Static != nil:
		for i, s := range src.Static {
			if !isObject(s) {
				return fmt.Errorf("static[%d]: must be a mapping", i)
			}
			c, err := params.Canonical(s)
			if err == nil {
				err = params.CheckSize(c)
			}
			if err != nil {
				return fmt.Errorf("static[%d]: %w", i, err)
			}
		}
	case src.SQL != "":
		if src.SourceURLEnv == "" {
			return errors.New("sql needs source_url_env (the variable holding the source database URL)")
		}
	default:
		return errors.New("want {static: [...]} or {sql: ..., source_url_env: VAR}")
	}
	return nil
}

// runStatusesEnded are the run statuses an alert can name.
var runStatusesEnded = runstate.Strings(slices.DeleteFunc(slices.Clone(runstate.Statuses), func(s runstate.Status) bool { return !s.Terminal() })...)

// policy validates the job's retention, alert and catch-up fields.
func (j Job) policy() (store.JobPolicy, []error) {
	var (
		p    store.JobPolicy
		errs []error
	)
	if j.HistoryRetention != "" {
		d, err := store.ParseAge(j.HistoryRetention)
		if err != nil || d <= 0 {
			errs = append(errs, fmt.Errorf("history_retention: %q is not a positive age like 90d or 720h", j.HistoryRetention))
		} else {
			ms := d.Milliseconds()
			p.HistoryRetentionMs = &ms
		}
	}
	if j.AlertOn != nil {
		p.AlertOn = []string{}
		for _, st := range j.AlertOn {
			u := strings.ToUpper(strings.TrimSpace(st))
			if !slices.Contains(runStatusesEnded, u) {
				errs = append(errs, fmt.Errorf("alert_on: unknown status %q (want %s)", st, strings.Join(runStatusesEnded, "|")))
				continue
			}
			if !slices.Contains(p.AlertOn, u) {
				p.AlertOn = append(p.AlertOn, u)
			}
		}
	}
	if j.ExpectedDuration != "" {
		d, err := duration("expected_duration", j.ExpectedDuration, 0, false)
		if err != nil {
			errs = append(errs, err)
		} else {
			ms := d.Milliseconds()
			p.ExpectedDurationMs = &ms
		}
	}
	p.CatchupPolicy = j.Catchup
	if p.CatchupPolicy == "" {
		p.CatchupPolicy = store.CatchupOnce
	}
	if err := oneOf("catchup", p.CatchupPolicy, store.CatchupSkip, store.CatchupOnce, store.CatchupEach); err != nil {
		errs = append(errs, err)
	}
	p.CatchupLimit = store.CatchupLimitDefault
	if j.CatchupLimit != nil {
		p.CatchupLimit = *j.CatchupLimit
		if p.CatchupLimit < 1 || p.CatchupLimit > 1000 {
			errs = append(errs, fmt.Errorf("catchup_limit: %d must be between 1 and 1000", p.CatchupLimit))
		}
		if p.CatchupPolicy != store.CatchupEach {
			errs = append(errs, errors.New("catchup_limit: only applies to catchup: each"))
		}
	}
	if j.Schedule == "" && (j.Catchup != "" || j.CatchupLimit != nil) {
		errs = append(errs, errors.New("catchup: given for a job without a schedule"))
	}
	return p, errs
}
