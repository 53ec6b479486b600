package alert_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/etlexec/etlexec/internal/alert"
	"github.com/etlexec/etlexec/internal/dbtest"
	"github.com/etlexec/etlexec/internal/runstate"
	"github.com/etlexec/etlexec/internal/store"
)

const secret = "webhook-secret"

// receiver is a real HTTP endpoint that answers failFirst requests with 503, then 200, and
// keeps what it received.
type receiver struct {
	srv       *httptest.Server
	mu        sync.Mutex
	failFirst int
	got       []received
}

type received struct {
	status              int
	body                []byte
	signature, event    string
	delivery, userAgent string
}

func newReceiver(t *testing.T, failFirst int) *receiver {
	t.Helper()
	rc := &receiver{failFirst: failFirst}
	rc.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		rc.mu.Lock()
		defer rc.mu.Unlock()
		status := http.StatusOK
		if len(rc.got) < rc.failFirst {
			status = http.StatusServiceUnavailable
		}
		rc.got = append(rc.got, received{status: status, body: body, signature: r.Header.Get(alert.SignatureHeader),
			event: r.Header.Get("X-Etlexec-Event"), delivery: r.Header.Get("X-Etlexec-Delivery"),
			userAgent: r.Header.Get("User-Agent")})
		w.WriteHeader(status)
	}))
	t.Cleanup(rc.srv.Close)
	return rc
}

func (rc *receiver) requests() []received {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]received(nil), rc.got...)
}

type bundle struct {
	st    *store.Store
	hook  *receiver
	slack *receiver
	al    *alert.Alerter
	ends  map[string]int
	mu    sync.Mutex
}

func setup(t *testing.T, hookFails, maxAttempts int) *bundle {
	t.Helper()
	b := &bundle{st: dbtest.Store(t), hook: newReceiver(t, hookFails), slack: newReceiver(t, 0), ends: map[string]int{}}
	_, err := b.st.Pool().Exec(t.Context(), `INSERT INTO dw_etl_jobs (job_id, kind) VALUES ('orders', 'synthetic'), ('quiet', 'synthetic');
		UPDATE dw_etl_jobs SET alert_on = '{SUCCESS}', expected_duration_ms = 1000 WHERE job_id = 'quiet'`)
	require.NoError(t, err)
	b.al, err = alert.New(alert.Config{Store: b.st, Logger: zerolog.Nop(), MaxAttempts: maxAttempts,
		BackoffBase: time.Millisecond, BackoffMax: 5 * time.Millisecond, ConsoleURL: "https://etl.example/",
		Destinations: []alert.Destination{
			{Name: "webhook", URL: b.hook.srv.URL, Format: alert.FormatJSON, Secret: secret},
			{Name: "slack", URL: b.slack.srv.URL, Format: alert.FormatSlack},
		},
		OnRunEnd: func(job, status string, _ time.Duration) {
			b.mu.Lock()
			b.ends[job+" "+status]++
			b.mu.Unlock()
		}})
	require.NoError(t, err)
	return b
}

func (b *bundle) run(t *testing.T, job, status string, age time.Duration) uuid.UUID {
	t.Helper()
	id := uuid.Must(uuid.NewV7())
	_, err := b.st.Pool().Exec(t.Context(), `INSERT INTO dw_etl_runs (run_id, job_id, status, exclusive, started_at, item_count, items_failed)
		VALUES ($1, $2, $3, false, now() - $4 * interval '1 millisecond', 10, 3)`, id, job, status, age.Milliseconds())
	require.NoError(t, err)
	return id
}

func (b *bundle) end(t *testing.T, id uuid.UUID, status string) {
	t.Helper()
	_, err := b.st.Pool().Exec(t.Context(), `UPDATE dw_etl_runs SET status = $2, ended_at = clock_timestamp(), duration_ms = 1500,
		error_category = 'API', error_message = '3 of 10 items failed' WHERE run_id = $1`, id, status)
	require.NoError(t, err)
}

func (b *bundle) pass(t *testing.T) alert.Report {
	t.Helper()
	rep, err := b.al.Pass(t.Context())
	require.NoError(t, err)
	return rep
}

// passUntil makes passes until cond holds (retries are due after a few milliseconds).
func (b *bundle) passUntil(t *testing.T, cond func() bool) {
	t.Helper()
	// A pass per tick: retries fall due after their backoff of a few milliseconds.
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		if cond() {
			return
		}
		_, err := b.al.Pass(t.Context())
		require.NoError(c, err)
		c.Errorf("condition not reached")
	}, 10*time.Second, 2*time.Millisecond)
}

func (b *bundle) deliveries(t *testing.T, runID uuid.UUID) ([]store.Delivery, map[uuid.UUID][]store.DeliveryAttempt) {
	t.Helper()
	ds, as, err := b.st.RunDeliveries(t.Context(), runID)
	require.NoError(t, err)
	return ds, as
}

func TestRunEndAlertsWithRetriesAndSignature(t *testing.T) {
	t.Parallel()
	b := setup(t, 2, 5)
	runID := b.run(t, "orders", "RUNNING", time.Minute)

	rep := b.pass(t)
	require.Zero(t, rep.Ended+rep.Recorded, "an open run is only watched")
	b.end(t, runID, "FAILED")
	rep = b.pass(t)
	require.Equal(t, 1, rep.Ended)
	require.Equal(t, 2, rep.Recorded, "one delivery per destination")

	b.passUntil(t, func() bool {
		ds, _ := b.deliveries(t, runID)
		return len(ds) == 2 && ds[0].Status == store.DeliveryDelivered && ds[1].Status == store.DeliveryDelivered
	})
	// The webhook failed twice, then took it: three attempts recorded, three requests received.
	ds, attempts := b.deliveries(t, runID)
	byDest := map[string]store.Delivery{}
	for _, d := range ds {
		byDest[d.Destination] = d
	}
	hook := byDest["webhook"]
	require.EqualValues(t, 3, hook.Attempts)
	var codes []int32
	for _, a := range attempts[hook.DeliveryID] {
		codes = append(codes, *a.StatusCode)
	}
	require.Equal(t, []int32{503, 503, 200}, codes)
	require.EqualValues(t, 1, byDest["slack"].Attempts)

	got := b.hook.requests()
	require.Len(t, got, 3)
	for _, r := range got {
		require.NoError(t, alert.Verify(secret, r.signature, r.body, time.Now(), time.Minute), "signature of %s", r.body)
		require.Error(t, alert.Verify("other", r.signature, r.body, time.Now(), time.Minute))
		require.Equal(t, "run_ended", r.event)
		require.Equal(t, hook.DeliveryID.String(), r.delivery, "the same delivery id on every retry")
		require.Equal(t, "etlexec-alerter", r.userAgent)
	}
	require.ErrorIs(t, alert.Verify(secret, got[0].signature, got[0].body, time.Now().Add(time.Hour), time.Minute), alert.ErrBadSignature,
		"a replayed old delivery is refused")
	var ev alert.Event
	require.NoError(t, json.Unmarshal(got[2].body, &ev))
	require.Equal(t, "run_ended", ev.Event)
	require.Equal(t, runID, ev.Run.RunID)
	require.Equal(t, runstate.StatusFailed, ev.Run.Status)
	require.Equal(t, "https://etl.example/runs/"+runID.String(), ev.URL)

	var sl struct {
		Text   string           `json:"text"`
		Blocks []map[string]any `json:"blocks"`
	}
	require.NoError(t, json.Unmarshal(b.slack.requests()[0].body, &sl))
	require.Contains(t, sl.Text, "*orders* ended *FAILED*")
	require.Len(t, sl.Blocks, 2)

	// Noticed once: more passes add nothing.
	rep = b.pass(t)
	require.Zero(t, rep.Ended+rep.Recorded+rep.AttemptsMade)
	require.Equal(t, 1, b.ends["orders FAILED"])

	// A rerun reopens the run; its next end is a new event.
	_, err := b.st.Pool().Exec(t.Context(), `UPDATE dw_etl_runs SET status = 'RUNNING', ended_at = NULL WHERE run_id = $1`, runID)
	require.NoError(t, err)
	b.pass(t)
	b.end(t, runID, "PARTIAL_SUCCESS")
	rep = b.pass(t)
	require.Equal(t, 1, rep.Ended)
	require.Equal(t, 2, rep.Recorded)
}

func TestAlertRules(t *testing.T) {
	t.Parallel()
	b := setup(t, 0, 3)
	ok := b.run(t, "orders", "RUNNING", 0)
	quietOK := b.run(t, "quiet", "RUNNING", 0)
	b.pass(t)
	b.end(t, ok, "SUCCESS")
	b.end(t, quietOK, "SUCCESS")
	// A run that opened and closed between two passes is noticed too.
	flash := b.run(t, "orders", "RUNNING", 0)
	b.end(t, flash, "FAILED")
	rep := b.pass(t)
	require.Equal(t, 3, rep.Ended)
	ds, _ := b.deliveries(t, ok)
	require.Empty(t, ds, "SUCCESS does not notify by default")
	ds, _ = b.deliveries(t, quietOK)
	require.Len(t, ds, 2, "job quiet asks for SUCCESS")
	ds, _ = b.deliveries(t, flash)
	require.Len(t, ds, 2)
	require.Equal(t, map[string]int{"orders SUCCESS": 1, "quiet SUCCESS": 1, "orders FAILED": 1}, b.ends)
}

func TestOverdueAndGivingUp(t *testing.T) {
	t.Parallel()
	b := setup(t, 1000, 2) // the webhook always fails; two attempts at most
	slow := b.run(t, "quiet", "RUNNING", time.Hour)
	fresh := b.run(t, "quiet", "RUNNING", 0)
	rep := b.pass(t)
	require.Equal(t, 1, rep.Overdue, "only the run open past its expected second")
	rep = b.pass(t)
	require.Zero(t, rep.Overdue, "once per opening")
	ds, _ := b.deliveries(t, fresh)
	require.Empty(t, ds)

	b.passUntil(t, func() bool {
		ds, _ := b.deliveries(t, slow)
		for _, d := range ds {
			if d.Destination == "webhook" {
				return d.Status == store.DeliveryFailed
			}
		}
		return false
	})
	ds, attempts := b.deliveries(t, slow)
	for _, d := range ds {
		require.Equal(t, store.EventRunOverdue, d.Event)
		if d.Destination == "webhook" {
			require.EqualValues(t, 2, d.Attempts)
			require.Len(t, attempts[d.DeliveryID], 2)
			require.Contains(t, *d.LastError, "HTTP 503")
		}
	}
	require.Len(t, b.hook.requests(), 2, "given up after MaxAttempts")
}

func TestNewValidates(t *testing.T) {
	t.Parallel()
	st := &store.Store{}
	for _, d := range []alert.Destination{{Name: "", URL: "http://x", Format: "json"}, {Name: "a", URL: "ftp://x", Format: "json"},
		{Name: "a", URL: "http://x", Format: "xml"}} {
		_, err := alert.New(alert.Config{Store: st, Destinations: []alert.Destination{d}})
		require.Error(t, err, "%+v", d)
	}
}
