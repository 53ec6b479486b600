// Package alert notifies operators of run events: a run that ended in one of its job's chosen
// statuses (run_ended; default FAILED and PARTIAL_SUCCESS) and a run still open after its job's
// expected duration (run_overdue, once per opening). It polls the ledger rather than hooking
// into finalisation: each Pass adds open runs (and runs that opened and closed since the last
// pass) to dw_etl_run_watch, notices the ends and overdue runs there, and records one delivery
// per destination in the same transaction, so an end is noticed exactly once even across
// restarts and failovers. Deliveries are then POSTed, retried with exponential backoff (and
// Retry-After) until delivered or MaxAttempts, each attempt recorded in dw_etl_alert_attempts.
//
// A "webhook" destination gets the JSON event signed with HMAC-SHA256:
//
//	X-Etlexec-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>
//
// (Verify checks it); a "slack" destination gets a Slack-compatible {"text", "blocks"} body.
// `enqueuer schedule` runs the alerter on its leader.
package alert

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/etlexec/etlexec/internal/runstate"
	"github.com/etlexec/etlexec/internal/store"
)

// Destination formats.
const (
	FormatJSON  = "json"
	FormatSlack = "slack"
)

// Destination is where notifications go.
type Destination struct {
	// Name identifies the destination in the deliveries table ("webhook", "slack").
	Name string
	URL  string
	// Format is FormatJSON (the signed event) or FormatSlack.
	Format string
	// Secret signs FormatJSON bodies (X-Etlexec-Signature); empty sends them unsigned.
	Secret string
}

// Defaults of Config.
const (
	IntervalDefault     = 5 * time.Second
	MaxAttemptsDefault  = 8
	BackoffBaseDefault  = 2 * time.Second
	BackoffMaxDefault   = 10 * time.Minute
	RecentWindowDefault = 10 * time.Minute
	TimeoutDefault      = 10 * time.Second
	batchSize           = 500
)

// DefaultOn are the run end statuses that notify for a job that names none.
var DefaultOn = runstate.Strings(runstate.StatusFailed, runstate.StatusPartialSuccess)

// Config configures an Alerter.
type Config struct {
	// Store is etlexec's database. Required.
	Store *store.Store
	// Destinations receive every notification; with none, ends are still noticed (metrics).
	Destinations []Destination
	// DefaultOn are the statuses that notify for jobs without alert_on. Defaults to DefaultOn.
	DefaultOn []string
	// MaxAttempts bounds a delivery's HTTP attempts. Defaults to MaxAttemptsDefault.
	MaxAttempts int
	// BackoffBase doubles per failed attempt up to BackoffMax. Defaults BackoffBaseDefault,
	// BackoffMaxDefault.
	BackoffBase, BackoffMax time.Duration
	// RecentWindow is how far back a pass looks for runs that opened and closed between passes.
	// Defaults to RecentWindowDefault.
	RecentWindow time.Duration
	// Client sends the deliveries. Defaults to a client with a TimeoutDefault timeout.
	Client *http.Client
	// ConsoleURL, when set, puts a link to the run's console page in each notification.
	ConsoleURL string
	// OnRunEnd is called once per run end noticed (the scheduler's Prometheus counters).
	OnRunEnd func(jobID, status string, duration time.Duration)
	// OnDelivery is called per delivery attempt with its destination and outcome
	// (delivered, retry, failed).
	OnDelivery func(destination, outcome string)
	// Now is the clock of overdue checks and signatures. Defaults to time.Now.
	Now    func() time.Time
	Logger zerolog.Logger
}

// Alerter notices run events and delivers their notifications.
type Alerter struct {
	cfg Config
	log zerolog.Logger
}

// New validates cfg and builds an Alerter.
func New(cfg Config) (*Alerter, error) {
	if cfg.Store == nil {
		return nil, errors.New("alert config: Store is required")
	}
	seen := map[string]bool{}
	for _, d := range cfg.Destinations {
		if d.Name == "" || seen[d.Name] {
			return nil, fmt.Errorf("alert config: destination names must be unique and set, got %q", d.Name)
		}
		seen[d.Name] = true
		if !strings.HasPrefix(d.URL, "http://") && !strings.HasPrefix(d.URL, "https://") {
			return nil, fmt.Errorf("alert config: destination %s: URL %q must be http:// or https://", d.Name, d.URL)
		}
		if d.Format != FormatJSON && d.Format != FormatSlack {
			return nil, fmt.Errorf("alert config: destination %s: format %q (want %s or %s)", d.Name, d.Format, FormatJSON, FormatSlack)
		}
	}
	if cfg.DefaultOn == nil {
		cfg.DefaultOn = DefaultOn
	}
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = MaxAttemptsDefault
	}
	if cfg.BackoffBase <= 0 {
		cfg.BackoffBase = BackoffBaseDefault
	}
	if cfg.BackoffMax <= 0 {
		cfg.BackoffMax = BackoffMaxDefault
	}
	if cfg.RecentWindow <= 0 {
		cfg.RecentWindow = RecentWindowDefault
	}
	if cfg.Client == nil {
		cfg.Client = &http.Client{Timeout: TimeoutDefault}
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Alerter{cfg: cfg, log: cfg.Logger.With().Str("component", "alerter").Logger()}, nil
}

// Report says what one Pass did.
type Report struct {
	Ended, Overdue       int // events noticed
	Recorded             int // deliveries recorded
	Delivered, Retried   int
	Failed, AttemptsMade int
}

// Pass watches, notices run events and makes the deliveries that are due.
func (a *Alerter) Pass(ctx context.Context) (Report, error) {
	var rep Report
	now := a.cfg.Now()
	st := a.cfg.Store
	if _, err := st.WatchRuns(ctx, now.Add(-a.cfg.RecentWindow)); err != nil {
		return rep, err
	}
	runs, err := st.WatchedRuns(ctx, batchSize)
	if err != nil {
		return rep, err
	}
	for _, r := range runs {
		if err := a.notice(ctx, r, now, &rep); err != nil {
			return rep, err
		}
	}
	if _, err := st.ForgetWatched(ctx, now.Add(-a.cfg.RecentWindow-time.Hour)); err != nil {
		return rep, err
	}
	return rep, a.deliver(ctx, &rep)
}

// notice handles one watched run: its end, or its being overdue.
func (a *Alerter) notice(ctx context.Context, r store.WatchedRun, now time.Time, rep *Report) error {
	if r.Status.Terminal() {
		on := a.cfg.DefaultOn
		if r.AlertOn != nil {
			on = r.AlertOn
		}
		var ds []store.NewDelivery
		if slices.Contains(on, string(r.Status)) {
			ds = a.deliveries(store.EventRunEnded, r, now)
		}
		noticed, err := a.cfg.Store.RecordRunEnd(ctx, r, ds)
		if err != nil || !noticed {
			return err
		}
		rep.Ended++
		rep.Recorded += len(ds)
		if a.cfg.OnRunEnd != nil {
			var d time.Duration
			if r.DurationMs != nil {
				d = time.Duration(*r.DurationMs) * time.Millisecond
			}
			a.cfg.OnRunEnd(r.JobID, string(r.Status), d)
		}
		return nil
	}
	if r.ExpectedDurationMs == nil || r.OverdueAt != nil || now.Sub(r.OpenedAt) <= time.Duration(*r.ExpectedDurationMs)*time.Millisecond {
		return nil
	}
	ds := a.deliveries(store.EventRunOverdue, r, now)
	noticed, err := a.cfg.Store.RecordRunOverdue(ctx, r, now, ds)
	if err != nil || !noticed {
		return err
	}
	rep.Overdue++
	rep.Recorded += len(ds)
	a.log.Warn().Str("run_id", r.RunID.String()).Str("job_id", r.JobID).Dur("open_for", now.Sub(r.OpenedAt)).Msg("run overdue")
	return nil
}

// Event is the JSON body a webhook destination receives.
type Event struct {
	Event      string           `json:"event"`
	OccurredAt time.Time        `json:"occurred_at"`
	Run        store.WatchedRun `json:"run"`
	// ExpectedDurationMs is the job's expected duration (run_overdue).
	ExpectedDurationMs *int64 `json:"expected_duration_ms,omitempty"`
	URL                string `json:"url,omitempty"`
}

func (a *Alerter) deliveries(event string, r store.WatchedRun, now time.Time) []store.NewDelivery {
	ev := Event{Event: event, OccurredAt: now.UTC(), Run: r}
	if event == store.EventRunEnded && r.EndedAt != nil {
		ev.OccurredAt = r.EndedAt.UTC()
	}
	if event == store.EventRunOverdue {
		ev.ExpectedDurationMs = r.ExpectedDurationMs
	}
	if a.cfg.ConsoleURL != "" {
		ev.URL = strings.TrimRight(a.cfg.ConsoleURL, "/") + "/runs/" + r.RunID.String()
	}
	var out []store.NewDelivery
	for _, d := range a.cfg.Destinations {
		var body any = ev
		if d.Format == FormatSlack {
			body = slackBody(ev)
		}
		b, err := json.Marshal(body)
		if err != nil {
			continue // the types above always marshal
		}
		out = append(out, store.NewDelivery{Event: event, Destination: d.Name, Payload: b})
	}
	return out
}

// slackBody is a Slack incoming-webhook message (also what Mattermost and Rocket.Chat take).
func slackBody(ev Event) map[string]any {
	r := ev.Run
	var text string
	switch ev.Event {
	case store.EventRunOverdue:
		text = fmt.Sprintf(":hourglass: etlexec run of *%s* is still %s after %s (expected %s)", r.JobID, r.Status,
			ev.OccurredAt.Sub(r.OpenedAt).Round(time.Second), time.Duration(derefInt(ev.ExpectedDurationMs))*time.Millisecond)
	default:
		icon := ":red_circle:"
		switch r.Status {
		case runstate.StatusSuccess:
			icon = ":large_green_circle:"
		case runstate.StatusPartialSuccess, runstate.StatusCancelled, runstate.StatusSkipped:
			icon = ":large_yellow_circle:"
		}
		text = fmt.Sprintf("%s etlexec run of *%s* ended *%s*: %d of %d items succeeded, %d failed", icon, r.JobID, r.Status,
			r.ItemsSucceeded, r.ItemCount, r.ItemsFailed)
		if r.ErrorMessage != nil && *r.ErrorMessage != "" {
			text += fmt.Sprintf(" (%s: %s)", r.ErrorCategory, *r.ErrorMessage)
		}
	}
	if r.DryRun {
		text += " [dry run]"
	}
	detail := "run `" + r.RunID.String() + "`"
	if ev.URL != "" {
		detail = "<" + ev.URL + "|run " + r.RunID.String() + ">"
	}
	return map[string]any{
		"text": text,
		"blocks": []map[string]any{
			{"type": "section", "text": map[string]string{"type": "mrkdwn", "text": text}},
			{"type": "context", "elements": []map[string]string{{"type": "mrkdwn", "text": detail}}},
		},
	}
}

func derefInt(p *int64) int64 {
	if p == nil {
		return 0
	}
	return *p
}

// deliver POSTs every due delivery once and records the outcome.
func (a *Alerter) deliver(ctx context.Context, rep *Report) error {
	due, err := a.cfg.Store.DueDeliveries(ctx, batchSize)
	if err != nil {
		return err
	}
	dests := map[string]Destination{}
	for _, d := range a.cfg.Destinations {
		dests[d.Name] = d
	}
	for _, d := range due {
		dest, ok := dests[d.Destination]
		attempt := store.DeliveryAttempt{Attempt: d.Attempts + 1}
		start := time.Now()
		var retryAfter time.Duration
		if !ok {
			msg := fmt.Sprintf("destination %q is not configured in this process", d.Destination)
			attempt.Error = &msg
		} else {
			code, ra, err := a.send(ctx, dest, d)
			if code != 0 {
				attempt.StatusCode = &code
			}
			if err != nil {
				msg := err.Error()
				attempt.Error = &msg
			}
			retryAfter = ra
		}
		attempt.DurationMs = time.Since(start).Milliseconds()
		if ctx.Err() != nil {
			return ctx.Err() // shutting down: the attempt did not really happen
		}
		status, outcome, backoff := store.DeliveryDelivered, "delivered", time.Duration(0)
		switch {
		case attempt.Error == nil:
			rep.Delivered++
		case int(attempt.Attempt) >= a.cfg.MaxAttempts:
			status, outcome = store.DeliveryFailed, "failed"
			rep.Failed++
			a.log.Error().Str("delivery_id", d.DeliveryID.String()).Str("destination", d.Destination).Str("run_id", d.RunID.String()).
				Int32("attempts", attempt.Attempt).Str("error", *attempt.Error).Msg("alert delivery given up")
		default:
			status, outcome = store.DeliveryPending, "retry"
			backoff = max(a.backoff(int(attempt.Attempt)), min(retryAfter, a.cfg.BackoffMax))
			rep.Retried++
			a.log.Warn().Str("delivery_id", d.DeliveryID.String()).Str("destination", d.Destination).Int32("attempt", attempt.Attempt).
				Dur("retry_in", backoff).Str("error", *attempt.Error).Msg("alert delivery failed; will retry")
		}
		rep.AttemptsMade++
		if err := a.cfg.Store.RecordDeliveryAttempt(ctx, d, attempt, status, backoff); err != nil {
			return err
		}
		if a.cfg.OnDelivery != nil {
			a.cfg.OnDelivery(d.Destination, outcome)
		}
	}
	return nil
}

// backoff is BackoffBase doubled per failed attempt (1 → base), capped at BackoffMax.
func (a *Alerter) backoff(attempt int) time.Duration {
	d := a.cfg.BackoffBase
	for i := 1; i < attempt && d < a.cfg.BackoffMax; i++ {
		d *= 2
	}
	return min(d, a.cfg.BackoffMax)
}

// SignatureHeader carries the HMAC signature of a webhook body.
const SignatureHeader = "X-Etlexec-Signature"

// Sign returns the SignatureHeader value for body at t.
func Sign(secret string, body []byte, t time.Time) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(ts + "."))
	m.Write(body)
	return "t=" + ts + ",v1=" + hex.EncodeToString(m.Sum(nil))
}

// ErrBadSignature is returned by Verify for a missing, malformed, wrong or stale signature.
var ErrBadSignature = errors.New("bad alert signature")

// Verify checks a SignatureHeader value against body: the HMAC must match and its time be
// within tolerance of now (a replayed old delivery is refused).
func Verify(secret, header string, body []byte, now time.Time, tolerance time.Duration) error {
	var ts, sig string
	for _, part := range strings.Split(header, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
		switch k {
		case "t":
			ts = v
		case "v1":
			sig = v
		}
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || sig == "" {
		return fmt.Errorf("%w: want t=<unix>,v1=<hex>", ErrBadSignature)
	}
	if d := now.Sub(time.Unix(sec, 0)); d > tolerance || d < -tolerance {
		return fmt.Errorf("%w: signed %s ago, outside %s", ErrBadSignature, d.Round(time.Second), tolerance)
	}
	want := Sign(secret, body, time.Unix(sec, 0))
	if !hmac.Equal([]byte(want), []byte("t="+ts+",v1="+sig)) {
		return fmt.Errorf("%w: HMAC mismatch", ErrBadSignature)
	}
	return nil
}

// send POSTs one delivery; it returns the status code, a Retry-After the receiver asked for,
// and an error for anything but a 2xx.
func (a *Alerter) send(ctx context.Context, dest Destination, d store.Delivery) (int32, time.Duration, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, dest.URL, bytes.NewReader(d.Payload))
	if err != nil {
		return 0, 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "etlexec-alerter")
	req.Header.Set("X-Etlexec-Event", d.Event)
	req.Header.Set("X-Etlexec-Delivery", d.DeliveryID.String())
	if dest.Secret != "" {
		req.Header.Set(SignatureHeader, Sign(dest.Secret, d.Payload, a.cfg.Now()))
	}
	res, err := a.cfg.Client.Do(req)
	if err != nil {
		return 0, 0, fmt.Errorf("POST %s: %w", dest.Name, err)
	}
	defer res.Body.Close()
	snippet, _ := io.ReadAll(io.LimitReader(res.Body, 512))
	if res.StatusCode >= 200 && res.StatusCode < 300 {
		return int32(res.StatusCode), 0, nil
	}
	var ra time.Duration
	if s, err := strconv.Atoi(res.Header.Get("Retry-After")); err == nil && s > 0 {
		ra = time.Duration(s) * time.Second
	}
	return int32(res.StatusCode), ra, fmt.Errorf("POST %s: HTTP %d: %s", dest.Name, res.StatusCode, strings.TrimSpace(string(snippet)))
}
