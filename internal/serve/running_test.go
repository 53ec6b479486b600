package serve_test

import (
	"context"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/etlexec/etlexec/internal/workertest"
)

// runningRow matches a running item's row on the run page as the server renders it.
func runningRow(item string) *regexp.Regexp {
	return regexp.MustCompile(`<tr data-item="` + item + `"><td><a href="\?item=` + item + `#logs">` + item +
		`</a></td><td>1</td><td>workertest</td><td title="started [^"]+">[^<]+</td><td class="num">120</td>` +
		`<td class="num">100</td><td class="num">3</td><td class="msg">` + regexp.QuoteMeta(workertest.Progress) +
		`</td><td>[^<]+ ago</td></tr>`)
}

// TestRunPageRunningItems: while a run's items report progress and block, its page lists them
// with their progress and polls for more; once they end, the page lists none and stops polling.
func TestRunPageRunningItems(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	env := workertest.Start(t, b.st)
	runID := env.Trigger(t, 2)
	path := "/runs/" + runID.String()
	auth := bearer(testToken)

	var body string
	workertest.Eventually(t, 20*time.Second, "the run page never listed both items with their progress", func() bool {
		r := b.get(t, path, auth)
		wantStatus(t, r, http.StatusOK)
		body = r.body
		return runningRow("1").MatchString(body) && runningRow("2").MatchString(body)
	})
	wantContains(t, body, `<section id="running" data-api="/api/v1/runs/`+runID.String()+`"`, `data-poll="1"`,
		`data-terminal="SUCCESS PARTIAL_SUCCESS FAILED SKIPPED CANCELLED"`, `id="running-count">2 running`)

	env.Release()
	if run := env.WaitRun(t, runID); run.Status != "SUCCESS" {
		t.Fatalf("run ended %s", run.Status)
	}
	r := b.get(t, path, auth)
	wantStatus(t, r, http.StatusOK)
	wantNotContains(t, r.body, `id="running"`, `data-poll`, `<tr data-item=`)
}

// TestBrowserRunningItems opens a running run's page in headless Chromium: its script redraws
// the running items from the API in place while the run runs, and reloads the page once the
// run ended.
func TestBrowserRunningItems(t *testing.T) {
	t.Parallel()
	bin := requireChromium(t)
	b := setup(t, nil)
	env := workertest.Start(t, b.st)
	runID := env.Trigger(t, 2)

	actx, cancelAlloc := chromedp.NewExecAllocator(t.Context(), append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(bin), chromedp.NoSandbox, chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1280, 1000))...)
	defer cancelAlloc()
	bctx, cancelBrowser := chromedp.NewContext(actx)
	defer cancelBrowser()
	bctx, cancelTimeout := context.WithTimeout(bctx, 90*time.Second)
	defer cancelTimeout()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	_, err := chromedp.Call(bctx, network.Enable, network.EnableParams{})
	must(err)
	_, err = chromedp.Call(bctx, network.SetExtraHTTPHeaders, network.SetExtraHTTPHeadersParams{
		Headers: network.Headers{"Authorization": "Bearer " + testToken}})
	must(err)
	waitJS := func(expr, what string) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			ok, err := chromedp.Run(bctx, chromedp.Evaluate[bool]("(function(){try{return !!("+expr+")}catch(e){return false}})()"))
			if err == nil && ok {
				return
			}
			if time.Now().After(deadline) {
				text, _ := chromedp.Run(bctx, chromedp.Evaluate[string]("document.body ? document.body.innerText : ''"))
				t.Fatalf("waiting for %s: %v\npage text:\n%s", what, err, text)
			}
			time.Sleep(50 * time.Millisecond) // poll with a deadline
		}
	}

	must(chromedp.Do(bctx, chromedp.Navigate(b.ts.URL+"/runs/"+runID.String()), chromedp.WaitVisible(chromedp.CSS("#running"))))
	// Empty the table and mark this document: rows that come back with the mark still set were
	// drawn by the poll, not by a reload.
	must(chromedp.Do(bctx, chromedp.Evaluate[chromedp.Void](
		`document.querySelector("#running-items tbody").innerHTML = ""; window.drawnHere = true;`)))
	rows := `document.querySelectorAll("#running-items tbody tr")`
	waitJS(`window.drawnHere && `+rows+`.length === 2 && Array.prototype.every.call(`+rows+`, function (tr) {
		var td = tr.querySelectorAll("td");
		return td[2].textContent === "workertest" && td[4].textContent === "120" && td[5].textContent === "100" &&
			td[6].textContent === "3" && td[7].textContent === "`+workertest.Progress+`" && / ago$/.test(td[8].textContent);
	}) && !document.getElementById("running-items").hidden`, "the poll to draw both running items in place")
	if got, err := chromedp.Run(bctx, chromedp.Text(chromedp.CSS("#running-count"))); err != nil || !strings.HasPrefix(got, "2 running") {
		t.Errorf("running count reads %q (%v)", got, err)
	}

	env.Release()
	if run := env.WaitRun(t, runID); run.Status != "SUCCESS" {
		t.Fatalf("run ended %s", run.Status)
	}
	waitJS(`!window.drawnHere && document.getElementById("run-status").textContent === "SUCCESS" && !document.getElementById("running")`,
		"the page to reload at the run's end")
}
