package runstate_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/etlexec/etlexec/etl"
	"github.com/etlexec/etlexec/internal/runstate"
)

func fixed(r float64) func() float64 { return func() float64 { return r } }

func TestBackoff(t *testing.T) {
	t.Parallel()
	plain := errors.New("boom")
	noJitter := runstate.RetryPolicy{Base: time.Second, Max: time.Minute}
	def := runstate.DefaultRetryPolicy
	tests := []struct {
		name    string
		p       runstate.RetryPolicy
		attempt int
		err     error
		rnd     func() float64
		want    time.Duration
	}{
		{"First", noJitter, 1, plain, nil, time.Second},
		{"Second", noJitter, 2, plain, nil, 2 * time.Second},
		{"Fifth", noJitter, 5, plain, nil, 16 * time.Second},
		{"Capped", noJitter, 7, plain, nil, time.Minute},
		{"HugeAttemptNoOverflow", noJitter, 10_000, plain, nil, time.Minute},
		{"ZeroAttemptIsFirst", noJitter, 0, plain, nil, time.Second},
		{"NilError", noJitter, 3, nil, nil, 4 * time.Second},

		{"JitterMiddleIsExact", def, 3, plain, fixed(0.5), 4 * time.Second},
		{"JitterLow", def, 3, plain, fixed(0), 3200 * time.Millisecond},
		{"JitterHigh", def, 3, plain, fixed(0.75), 4400 * time.Millisecond},
		{"JitterNeverAboveMax", def, 30, plain, fixed(0.99), 10 * time.Minute},
		{"JitterBelowMaxAtCap", def, 30, plain, fixed(0), 8 * time.Minute},
		{"RndOutOfRangeClamped", def, 1, plain, fixed(7), 1200 * time.Millisecond},

		{"RetryAfter", def, 1, etl.RetryAfter(plain, 42*time.Second), fixed(0), 42 * time.Second},
		{"RetryAfterWrapped", def, 4, fmt.Errorf("page 3: %w", etl.RetryAfter(plain, 5*time.Second)), fixed(0.9), 5 * time.Second},
		{"RetryAfterCapped", def, 1, etl.RetryAfter(plain, time.Hour), fixed(0), 10 * time.Minute},
		{"HTTPRetryAfter", def, 2, etl.HTTPStatus(429, 3*time.Second, ""), fixed(0.9), 3 * time.Second},
		{"ZeroRetryAfterUsesBackoff", noJitter, 2, etl.RetryAfter(plain, 0), nil, 2 * time.Second},

		{"MaxBelowBaseUsesBase", runstate.RetryPolicy{Base: time.Second, Max: time.Millisecond}, 3, plain, nil, time.Second},
		{"ZeroPolicy", runstate.RetryPolicy{}, 3, plain, fixed(0), 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := tc.p.Backoff(tc.attempt, tc.err, tc.rnd); got != tc.want {
				t.Errorf("Backoff(%d, %v) = %s, want %s", tc.attempt, tc.err, got, tc.want)
			}
		})
	}
}

// With the default random source every wait stays within the jitter band.
func TestBackoffDefaultRandomWithinBand(t *testing.T) {
	t.Parallel()
	p := runstate.DefaultRetryPolicy
	for attempt := 1; attempt <= 12; attempt++ {
		nominal := min(p.Base<<(attempt-1), p.Max)
		lo := time.Duration(float64(nominal) * (1 - p.Jitter))
		hi := min(time.Duration(float64(nominal)*(1+p.Jitter)), p.Max)
		for range 50 {
			if got := p.Backoff(attempt, nil, nil); got < lo || got > hi {
				t.Fatalf("Backoff(%d) = %s, want within [%s, %s]", attempt, got, lo, hi)
			}
		}
	}
}

func TestRetryPolicyValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		p       runstate.RetryPolicy
		wantErr bool
	}{
		{"Default", runstate.DefaultRetryPolicy, false},
		{"NoJitter", runstate.RetryPolicy{Base: time.Second, Max: time.Second}, false},
		{"ZeroBase", runstate.RetryPolicy{Max: time.Second}, true},
		{"MaxBelowBase", runstate.RetryPolicy{Base: time.Minute, Max: time.Second}, true},
		{"NegativeJitter", runstate.RetryPolicy{Base: time.Second, Max: time.Minute, Jitter: -0.1}, true},
		{"JitterOne", runstate.RetryPolicy{Base: time.Second, Max: time.Minute, Jitter: 1}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if err := tc.p.Validate(); (err != nil) != tc.wantErr {
				t.Errorf("Validate() = %v, want error %t", err, tc.wantErr)
			}
		})
	}
}

func TestDecide(t *testing.T) {
	t.Parallel()
	plain := errors.New("boom")
	tests := []struct {
		name             string
		err              error
		attempt, maxAtts int
		want             runstate.Decision
	}{
		{"Success", nil, 1, 3, runstate.Decision{Category: etl.CategoryNone, Reason: runstate.ReasonSucceeded}},
		{"SystemRetried", plain, 1, 3, runstate.Decision{Retry: true, Category: etl.CategorySystem, Reason: runstate.ReasonRetryable}},
		{"APIRetried", etl.HTTPStatus(503, 0, ""), 2, 3, runstate.Decision{Retry: true, Category: etl.CategoryAPI, Reason: runstate.ReasonRetryable}},
		{"DeadlineRetried", context.DeadlineExceeded, 1, 2, runstate.Decision{Retry: true, Category: etl.CategorySystem, Reason: runstate.ReasonRetryable}},
		{"Exhausted", etl.DBError(plain), 3, 3, runstate.Decision{Category: etl.CategoryDB, Reason: runstate.ReasonExhausted}},
		{"PastMax", plain, 5, 3, runstate.Decision{Category: etl.CategorySystem, Reason: runstate.ReasonExhausted}},
		{"ZeroMaxIsOne", plain, 1, 0, runstate.Decision{Category: etl.CategorySystem, Reason: runstate.ReasonExhausted}},
		{"DataNeverRetried", etl.DataError(plain), 1, 5, runstate.Decision{Category: etl.CategoryData, Reason: runstate.ReasonData}},
		{"DataOnLastAttempt", etl.DataError(plain), 5, 5, runstate.Decision{Category: etl.CategoryData, Reason: runstate.ReasonData}},
		{"Permanent", etl.Permanent(etl.APIError(plain)), 1, 5, runstate.Decision{Category: etl.CategoryAPI, Reason: runstate.ReasonPermanent}},
		{"HTTP404", etl.HTTPStatus(404, 0, ""), 1, 5, runstate.Decision{Category: etl.CategoryAPI, Reason: runstate.ReasonPermanent}},
		{"HTTP429", etl.HTTPStatus(429, time.Second, ""), 1, 5, runstate.Decision{Retry: true, Category: etl.CategoryAPI, Reason: runstate.ReasonRetryable}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := runstate.Decide(tc.err, tc.attempt, tc.maxAtts)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("Decide(%v, %d, %d) mismatch (-want +got):\n%s", tc.err, tc.attempt, tc.maxAtts, diff)
			}
		})
	}
}
