package runstate

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/etlexec/etlexec/etl"
)

// Named defaults of DefaultRetryPolicy.
const (
	// RetryBaseDefault is the wait after an item's first failed attempt; it doubles
	// with each further attempt.
	RetryBaseDefault = time.Second
	// RetryMaxDefault caps every wait, including a server's Retry-After, so a retry
	// never sleeps past a run's useful life.
	RetryMaxDefault = 10 * time.Minute
	// RetryJitterDefault spreads waits by ±20% so items that failed together (an API
	// outage) do not retry in lockstep.
	RetryJitterDefault = 0.2
)

// RetryPolicy computes how long a failed item waits before its next attempt. The
// same function feeds asynq's RetryDelayFunc and the backoff_ms recorded with the
// attempt, so both agree.
type RetryPolicy struct {
	// Base is the wait after the first failed attempt.
	Base time.Duration
	// Max caps every wait.
	Max time.Duration
	// Jitter is the fraction in [0, 1) by which a computed wait is spread either way;
	// 0 means none.
	Jitter float64
}

// DefaultRetryPolicy is the policy the worker uses unless configured otherwise.
var DefaultRetryPolicy = RetryPolicy{Base: RetryBaseDefault, Max: RetryMaxDefault, Jitter: RetryJitterDefault}

// Validate reports a policy that Backoff would have to correct.
func (p RetryPolicy) Validate() error {
	var errs []error
	if p.Base <= 0 {
		errs = append(errs, fmt.Errorf("retry base %s must be positive", p.Base))
	}
	if p.Max < p.Base {
		errs = append(errs, fmt.Errorf("retry max %s must be at least base %s", p.Max, p.Base))
	}
	if p.Jitter < 0 || p.Jitter >= 1 {
		errs = append(errs, fmt.Errorf("retry jitter %g must be in [0, 1)", p.Jitter))
	}
	return errors.Join(errs...)
}

// Backoff is the wait after failed attempt itemAttempt (1 for the item's first) before
// the next. When the error carries a server's Retry-After (etl.RetryAfterOf) that is
// the wait, capped at Max and without jitter. Otherwise it is Base·2^(itemAttempt-1),
// capped at Max, then spread by ±Jitter: d·(1 + Jitter·(2r-1)) with r = rnd() in
// [0, 1), and capped at Max again so Max is a true ceiling.
//
// rnd makes the result deterministic for tests and lets the recorded backoff equal
// the scheduled one; nil means math/rand/v2's Float64. asynq's RetryDelayFunc counts
// retries from 0, so it calls Backoff(n+1, err, rnd).
//
// An invalid policy is corrected rather than rejected (a negative wait becomes 0,
// Max below Base becomes Base, Jitter is clamped to [0, 1)); Validate it at start-up.
func (p RetryPolicy) Backoff(itemAttempt int, err error, rnd func() float64) time.Duration {
	base, ceiling := max(p.Base, 0), max(p.Max, p.Base, 0)
	if d, ok := etl.RetryAfterOf(err); ok {
		return min(d, ceiling)
	}
	d := base
	for i := 1; i < itemAttempt && d < ceiling; i++ {
		d *= 2 // stops at the ceiling, long before it could overflow
	}
	d = min(d, ceiling)

	jitter := min(max(p.Jitter, 0), 0.999999)
	if jitter == 0 || d == 0 {
		return d
	}
	if rnd == nil {
		rnd = rand.Float64
	}
	r := min(max(rnd(), 0), 1)
	d = time.Duration(float64(d) * (1 + jitter*(2*r-1)))
	return min(d, ceiling)
}

// Reasons a Decision gives, stable for logs and tests.
const (
	ReasonSucceeded = "succeeded"
	ReasonData      = "data error"
	ReasonPermanent = "permanent error"
	ReasonExhausted = "attempts exhausted"
	ReasonRetryable = "retryable error"
)

// Decision is what happens to an item after an attempt.
type Decision struct {
	// Retry is true when the item gets another attempt.
	Retry bool
	// Category is the attempt's error category, NONE on success.
	Category etl.Category
	// Reason is one of the Reason constants.
	Reason string
}

// Decide whether an item is retried after attempt itemAttempt of maxAttempts ended
// with err. It is not retried when err is nil, classifies as DATA, is permanent
// (etl.IsPermanent) or the attempts are used up (itemAttempt >= maxAttempts; a
// maxAttempts below 1 counts as 1). The reason names the first of these that applies.
// Cancellation is the caller's business: a cancelled run's items are not retried
// whatever this says.
func Decide(err error, itemAttempt, maxAttempts int) Decision {
	cat := etl.Classify(err)
	switch {
	case err == nil:
		return Decision{Category: cat, Reason: ReasonSucceeded}
	case cat == etl.CategoryData:
		return Decision{Category: cat, Reason: ReasonData}
	case etl.IsPermanent(err):
		return Decision{Category: cat, Reason: ReasonPermanent}
	case itemAttempt >= max(maxAttempts, 1):
		return Decision{Category: cat, Reason: ReasonExhausted}
	default:
		return Decision{Retry: true, Category: cat, Reason: ReasonRetryable}
	}
}
