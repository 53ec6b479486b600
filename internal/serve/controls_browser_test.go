package serve_test

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/require"

	"github.com/etlexec/etlexec/internal/redistest"
)

// TestBrowserControls drives the console's controls in headless Chromium as an operator does:
// the job page's trigger form (submitted twice, as a double click would: one run), cancel,
// rerun preview then confirm, pause (a trigger is then refused with the reason), resume. Every
// button goes through console.js to /api/v1; each step is checked in Postgres and Redis.
func TestBrowserControls(t *testing.T) {
	t.Parallel()
	bin := requireChromium(t)
	b := setup(t, nil)
	ctx := t.Context()
	if _, err := b.st.Pool().Exec(ctx, `INSERT INTO dw_etl_jobs (job_id, kind, description, supports_params, overlap_policy, queue)
		VALUES ('regions', 'synthetic', 'Regional load', true, 'allow', $1)`, b.queue); err != nil {
		t.Fatal(err)
	}
	insp := asynq.NewInspector(redistest.ConnOpt(t))
	defer insp.Close()
	pending := func() int {
		qi, err := insp.GetQueueInfo(b.queue)
		if err != nil {
			return 0
		}
		return qi.Pending
	}
	one := func(sql string, args ...any) string {
		t.Helper()
		var s string
		if err := b.st.Pool().QueryRow(ctx, sql, args...).Scan(&s); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
		return s
	}

	actx, cancelAlloc := chromedp.NewExecAllocator(ctx, append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(bin), chromedp.NoSandbox, chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1280, 1000))...)
	defer cancelAlloc()
	bctx, cancelBrowser := chromedp.NewContext(actx)
	defer cancelBrowser()
	bctx, cancelTimeout := context.WithTimeout(bctx, 120*time.Second)
	defer cancelTimeout()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(chromedp.Do(bctx, chromedp.EmulateViewport(1280, 1000)))
	_, err := chromedp.Call(bctx, network.Enable, network.EnableParams{})
	must(err)
	_, err = chromedp.Call(bctx, network.SetExtraHTTPHeaders, network.SetExtraHTTPHeadersParams{
		Headers: network.Headers{"Authorization": "Bearer " + testToken}})
	must(err)
	// Every confirm() is answered yes, as the operator would.
	_, err = chromedp.Call(bctx, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{
		Source: "window.confirm = function () { return true; };"})
	must(err)

	dir := t.TempDir()
	shot := func(name string) {
		t.Helper()
		png, err := chromedp.Run(bctx, chromedp.CaptureScreenshot())
		must(err)
		path := filepath.Join(dir, name+".png")
		must(os.WriteFile(path, png, 0o644))
		checkScreenshot(t, path, 1280, 1000)
		if out := os.Getenv("ETL_SCREENSHOT_DIR"); out != "" {
			must(os.MkdirAll(out, 0o755))
			must(os.WriteFile(filepath.Join(out, name+".png"), png, 0o644))
		}
	}
	// waitJS polls a JavaScript expression until it is true: across reloads, which end a
	// page-side poll, with a deadline.
	waitJS := func(expr, what string) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			ok, err := chromedp.Run(bctx, chromedp.Evaluate[bool]("(function(){try{return !!("+expr+")}catch(e){return false}})()"))
			if err == nil && ok {
				return
			}
			if time.Now().After(deadline) {
				html, _ := chromedp.Run(bctx, chromedp.Evaluate[string]("document.body ? document.body.innerText : ''"))
				t.Fatalf("waiting for %s: %v\npage text:\n%s", what, err, html)
			}
			time.Sleep(50 * time.Millisecond) // poll with a deadline
		}
	}
	text := func(sel string) string {
		t.Helper()
		s, err := chromedp.Run(bctx, chromedp.Text(chromedp.CSS(sel)))
		must(err)
		return s
	}

	// Trigger from the job page; a double submit (same idempotency key) starts one run.
	must(chromedp.Do(bctx, chromedp.Navigate(b.ts.URL+"/jobs/regions"), chromedp.WaitVisible(chromedp.CSS("#trigger-form"))))
	must(chromedp.Do(bctx, chromedp.SetValue(chromedp.CSS("#trigger-params"), `[{"r": "eu"}, {"r": "us"}]`)))
	shot("controls-job")
	must(chromedp.Do(bctx, chromedp.Evaluate[chromedp.Void](`(function(){var f=document.getElementById("trigger-form"); f.requestSubmit(); f.requestSubmit();})()`)))
	waitJS(`location.pathname.indexOf("/runs/") === 0 && document.getElementById("run-status")`, "the new run's page")
	loc, err := chromedp.Run(bctx, chromedp.Location())
	must(err)
	runID := regexp.MustCompile(`/runs/([0-9a-f-]{36})`).FindStringSubmatch(loc)
	if runID == nil {
		t.Fatalf("after trigger the browser is at %s", loc)
	}
	if n := one(`SELECT count(*)::text FROM dw_etl_runs WHERE job_id = 'regions'`); n != "1" {
		t.Fatalf("%s runs after a double submit, want 1", n)
	}
	if n := one(`SELECT item_count::text FROM dw_etl_runs WHERE run_id = $1`, runID[1]); n != "2" {
		t.Fatalf("run has %s items, want 2", n)
	}
	// The second submit may have been answered (same key, same run) while the first was still
	// fanning out, the run PENDING until its tasks were in Redis: once it is RUNNING, its page
	// says so.
	if got := text("#run-status"); got != "RUNNING" && got != "PENDING" {
		t.Errorf("run page status %q right after the trigger, want PENDING or RUNNING", got)
	}
	require.Eventually(t, func() bool {
		return one(`SELECT status FROM dw_etl_runs WHERE run_id = $1`, runID[1]) == "RUNNING"
	}, 20*time.Second, 20*time.Millisecond, "the run never left PENDING")
	must(chromedp.Do(bctx, chromedp.Navigate(loc), chromedp.WaitVisible(chromedp.CSS("#run-status"))))
	if got := text("#run-status"); got != "RUNNING" {
		t.Errorf("run page status %q, want RUNNING", got)
	}
	shot("controls-run")

	// Cancel.
	must(chromedp.Do(bctx, chromedp.Click(chromedp.CSS("#cancel-button"))))
	waitJS(`document.getElementById("run-status").textContent === "CANCELLED"`, "the run to show CANCELLED")
	if by := one(`SELECT status || ' ' || cancelled_by FROM dw_etl_runs WHERE run_id = $1`, runID[1]); by != "CANCELLED api:token" {
		t.Errorf("run after cancel: %q, want CANCELLED api:token", by)
	}
	if n := pending(); n != 0 {
		t.Errorf("%d tasks pending after cancel", n)
	}

	// Rerun: preview first (nothing changes), then confirm.
	must(chromedp.Do(bctx, chromedp.Click(chromedp.CSS("#rerun-preview"))))
	waitJS(`document.getElementById("rerun-preview-summary")`, "the rerun preview")
	if got := text("#rerun-preview-summary"); !strings.Contains(got, "Would re-run 2 items") {
		t.Errorf("preview says %q", got)
	}
	if st := one(`SELECT status FROM dw_etl_runs WHERE run_id = $1`, runID[1]); st != "CANCELLED" {
		t.Errorf("a preview changed the run to %s", st)
	}
	shot("controls-rerun-preview")
	must(chromedp.Do(bctx, chromedp.Click(chromedp.CSS("#rerun-confirm"))))
	waitJS(`document.getElementById("run-status").textContent === "RUNNING"`, "the rerun to show RUNNING")
	if n := pending(); n != 2 {
		t.Errorf("%d tasks pending after the rerun, want 2", n)
	}

	// Pause: the badge shows, a trigger is refused with the reason; resume clears it.
	must(chromedp.Do(bctx, chromedp.Navigate(b.ts.URL+"/jobs/regions"), chromedp.WaitVisible(chromedp.CSS("#pause-button")),
		chromedp.SetValue(chromedp.CSS("#pause-reason"), "vendor outage"), chromedp.Click(chromedp.CSS("#pause-button"))))
	waitJS(`document.getElementById("paused-badge")`, "the paused badge")
	if p := one(`SELECT paused::text || ' ' || pause_reason FROM dw_etl_jobs WHERE job_id = 'regions'`); p != "true vendor outage" {
		t.Errorf("job after pause: %q", p)
	}
	// The job has runs now, so the trigger panel starts folded: unfold it as the operator would.
	must(chromedp.Do(bctx, chromedp.Click(chromedp.CSS("#trigger summary")), chromedp.WaitVisible(chromedp.CSS("#trigger-params")),
		chromedp.SetValue(chromedp.CSS("#trigger-params"), `[{"r": "apac"}]`), chromedp.Click(chromedp.CSS("#trigger-button"))))
	waitJS(`document.getElementById("action-error")`, "the refusal")
	if got := text("#action-error"); !strings.Contains(got, "409") || !strings.Contains(got, "vendor outage") {
		t.Errorf("refusal reads %q", got)
	}
	shot("controls-paused")
	if n := one(`SELECT count(*)::text FROM dw_etl_runs WHERE job_id = 'regions'`); n != "1" {
		t.Errorf("%s runs after a refused trigger", n)
	}
	must(chromedp.Do(bctx, chromedp.Click(chromedp.CSS("#resume-button"))))
	waitJS(`document.getElementById("pause-button") && !document.getElementById("paused-badge")`, "the job to show resumed")
	if p := one(`SELECT paused::text FROM dw_etl_jobs WHERE job_id = 'regions'`); p != "false" {
		t.Errorf("job paused=%s after resume", p)
	}
}
