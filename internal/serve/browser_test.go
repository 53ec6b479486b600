package serve_test

import (
	"bytes"
	"context"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/etlexec/etlexec/internal/serve"
)

// chromiumPath is Debian's chromium wrapper; ETL_CHROMIUM points elsewhere.
func chromiumPath() string {
	if p := os.Getenv("ETL_CHROMIUM"); p != "" {
		return p
	}
	return "/usr/bin/chromium"
}

// TestBrowser renders the console in headless Chromium: each page is screenshotted (and checked
// to be a real rendering, styled by the embedded CSS) and its DOM, after the embedded script
// ran, is checked against the database. Screenshots land in t.TempDir(), and are copied to
// $ETL_SCREENSHOT_DIR when set (relative to this package's directory).
func TestBrowser(t *testing.T) {
	t.Parallel()
	bin := requireChromium(t)
	// The browser cannot send an Authorization header, so this server alone takes ?token=.
	b := setup(t, func(c *serve.Config) { c.AllowQueryToken = true })
	s := seed(t, b.st, b.queue)
	ctx := t.Context()

	var (
		runStatus, jobDesc         string
		itemCount, written, failed int64
	)
	if err := b.st.Pool().QueryRow(ctx, `SELECT r.status, r.item_count, r.records_written, r.items_failed, j.description
		FROM dw_etl_runs r JOIN dw_etl_jobs j USING (job_id) WHERE r.run_id = $1`, s.runPartial).
		Scan(&runStatus, &itemCount, &written, &failed, &jobDesc); err != nil {
		t.Fatal(err)
	}
	var logCount int
	if err := b.st.Pool().QueryRow(ctx, `SELECT count(*) FROM dw_etl_run_logs WHERE run_id = $1`, s.runPartial).Scan(&logCount); err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	pages := []struct {
		name   string
		path   string
		height int
		want   []string
		check  func(t *testing.T, dom string)
	}{
		{name: "jobs", path: "/", height: 900,
			want: []string{s.jobID, jobDesc, runStatus}},
		{name: "job", path: "/jobs/" + s.jobID, height: 900,
			want: []string{"Duration per run", "Records written per run", s.runOK.String(), s.runPartial.String(), "1,200", fmt.Sprint(written)}},
		{name: "run", path: "/runs/" + s.runPartial.String(), height: 900,
			want: []string{runStatus, `id="count-items">` + fmt.Sprint(itemCount) + "<", `id="count-failed">` + fmt.Sprint(failed) + "<",
				"held: run not successful", "Queue " + b.queue + " in asynqmon"},
			check: func(t *testing.T, dom string) {
				if n := strings.Count(dom, `<a class="sq st-`); int64(n) != itemCount {
					t.Errorf("status grid has %d squares, the run %d items", n, itemCount)
				}
				if n := strings.Count(dom, "<tr>\n    <td class=\"nowrap\">"); n != logCount {
					t.Errorf("log table has %d lines, the run %d", n, logCount)
				}
			}},
		{name: "run-full", path: "/runs/" + s.runPartial.String() + "?level=error", height: 2000,
			want: []string{"upstream returned 503"},
			check: func(t *testing.T, dom string) {
				if strings.Contains(dom[strings.Index(dom, `id="logs"`):], "page loaded") {
					t.Error("level=error filter shows an info line")
				}
			}},
	}
	for _, p := range pages {
		t.Run(p.name, func(t *testing.T) {
			url := b.ts.URL + p.path + sep(p.path) + "token=" + testToken
			shot := filepath.Join(dir, p.name+".png")
			// Let layout, paint and compositing finish before the capture.
			chromium(t, bin, fmt.Sprintf("--window-size=1280,%d", p.height), "--run-all-compositor-stages-before-draw",
				"--virtual-time-budget=2000", "--screenshot="+shot, url)
			checkScreenshot(t, shot, 1280, p.height)
			if out := os.Getenv("ETL_SCREENSHOT_DIR"); out != "" {
				if err := os.MkdirAll(out, 0o755); err != nil {
					t.Fatal(err)
				}
				raw, err := os.ReadFile(shot)
				if err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(out, p.name+".png"), raw, 0o644); err != nil {
					t.Fatal(err)
				}
			}

			dom := chromium(t, bin, "--window-size=1280,900", "--dump-dom", url)
			wantContains(t, dom, p.want...)
			// console.js ran (it adds local-time tooltips), so /static/ reached the browser.
			if strings.Contains(dom, "<time ") && !timeTitled.MatchString(dom) {
				t.Error("console.js did not run: <time> elements have no title")
			}
			if p.check != nil {
				p.check(t, dom)
			}
		})
	}
}

// requireChromium returns the browser's path, or skips (fails with ETL_REQUIRE_BROWSER=1).
func requireChromium(t *testing.T) string {
	t.Helper()
	bin := chromiumPath()
	if _, err := os.Stat(bin); err != nil {
		msg := fmt.Sprintf("headless browser test needs %s (apt-get install -y chromium, or set ETL_CHROMIUM): %v", bin, err)
		if os.Getenv("ETL_REQUIRE_BROWSER") == "1" {
			t.Fatal(msg + " — ETL_REQUIRE_BROWSER=1 makes this a failure")
		}
		t.Skip(msg + " — skipped; set ETL_REQUIRE_BROWSER=1 to fail instead")
	}
	return bin
}

var timeTitled = regexp.MustCompile(`<time datetime="[^"]+" title="[^"]+">`)

func sep(path string) string {
	if strings.Contains(path, "?") {
		return "&"
	}
	return "?"
}

// chromium runs one headless Chromium invocation in a fresh profile and returns its stdout.
func chromium(t *testing.T, bin string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	base := []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
		"--hide-scrollbars", "--user-data-dir=" + t.TempDir()}
	cmd := exec.CommandContext(ctx, bin, append(base, args...)...)
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\nstderr:\n%s", bin, strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String()
}

// checkScreenshot wants a PNG of the window's size that is a real page: many colours, the
// console's dark header bar (the embedded CSS applied) and a light body.
func checkScreenshot(t *testing.T, path string, w, h int) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("screenshot %s: %v", path, err)
	}
	if got := img.Bounds().Size(); got != (image.Point{X: w, Y: h}) {
		t.Errorf("screenshot is %v, want %dx%d", got, w, h)
	}
	colours := map[color.RGBA]bool{}
	for y := 0; y < img.Bounds().Dy(); y += 3 {
		for x := 0; x < img.Bounds().Dx(); x += 3 {
			r, g, b, _ := img.At(x, y).RGBA()
			colours[color.RGBA{R: uint8(r >> 8), G: uint8(g >> 8), B: uint8(b >> 8)}] = true
		}
	}
	if len(colours) < 20 {
		t.Errorf("screenshot has %d colours: a blank or unstyled page", len(colours))
	}
	// The header bar is #1d2330.
	if r, g, b, _ := img.At(3, 3).RGBA(); r>>8 > 0x40 || g>>8 > 0x40 || b>>8 > 0x50 {
		t.Errorf("top-left pixel is #%02x%02x%02x, want the dark header (CSS not applied?)", r>>8, g>>8, b>>8)
	}
}
