// etlexec console: confirmations, auto-refresh, and the action forms sent to /api/v1.
// Pages work without it: every form also posts to a console route that renders a page.
(function () {
  "use strict";

  var result = function () { return document.getElementById("action-result"); };

  function show(html) {
    var el = result();
    if (el) { el.innerHTML = html; }
  }

  function esc(s) {
    return String(s == null ? "" : s).replace(/[&<>"']/g, function (c) {
      return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c];
    });
  }

  // send posts a form's fields to its data-api endpoint and handles the JSON answer.
  function send(form, submitter) {
    var body = new FormData(form);
    if (submitter && submitter.name) { body.set(submitter.name, submitter.value); }
    if (form.enctype !== "multipart/form-data") { body = new URLSearchParams(body); }
    var buttons = form.querySelectorAll("button");
    buttons.forEach(function (b) { b.disabled = true; });
    show('<p class="muted" id="action-pending">Working…</p>');
    return fetch(form.dataset.api, {
      method: "POST", body: body, credentials: "same-origin", headers: { "Accept": "application/json" }
    }).then(function (res) {
      return res.json().then(function (j) { return { ok: res.ok, status: res.status, j: j }; });
    }).then(function (r) {
      buttons.forEach(function (b) { b.disabled = false; });
      if (!r.ok) {
        show('<p class="error" id="action-error">' + esc(r.status + ": " + (r.j.error || "request failed")) + "</p>");
        return;
      }
      after(form, r.j);
    }).catch(function (err) {
      buttons.forEach(function (b) { b.disabled = false; });
      show('<p class="error" id="action-error">' + esc(err) + "</p>");
    });
  }

  function after(form, j) {
    switch (form.dataset.after) {
      case "run":
        location.assign("/runs/" + j.run.run_id);
        return;
      case "rerun":
        if (j.preview) { previewRerun(form, j); return; }
        location.reload();
        return;
      default:
        location.reload();
    }
  }

  // previewRerun lists the items a rerun would take and offers to confirm it.
  function previewRerun(form, j) {
    var statuses = Array.prototype.map.call(form.querySelectorAll('input[name="statuses"]:checked'), function (i) { return i.value; });
    var rows = j.items.map(function (it) {
      return "<tr><td>" + it.item_no + '</td><td><span class="badge st-' + esc(it.status.toLowerCase().replace("_", "-")) + '">' +
        esc(it.status) + "</span></td><td>" + esc(it.error_category) + '</td><td class="num">' + it.attempts +
        "</td><td><code>" + esc(JSON.stringify(it.params)) + '</code></td><td class="errmsg">' + esc(it.error_message) + "</td></tr>";
    }).join("");
    var hidden = statuses.map(function (s) { return '<input type="hidden" name="statuses" value="' + esc(s) + '">'; }).join("");
    show('<p class="summary" id="rerun-preview-summary">Would re-run ' + j.items.length + " items (" + esc(statuses.join(",")) + ").</p>" +
      '<table class="list compact"><thead><tr><th>Item</th><th>Status</th><th>Category</th><th class="num">Attempts</th><th>Params</th><th>Error</th></tr></thead><tbody>' +
      rows + "</tbody></table>" +
      '<form method="post" action="' + esc(form.action) + '" data-api="' + esc(form.dataset.api) + '" data-after="reload" class="actions">' +
      hidden + '<input type="hidden" name="preview" value="0"><p><button type="submit" class="danger" id="rerun-confirm">Re-run these ' +
      j.items.length + " items now</button></p></form>");
  }

  document.addEventListener("submit", function (e) {
    var form = e.target;
    var btn = e.submitter;
    var msg = (btn && btn.dataset && btn.dataset.confirm) || (form.dataset && form.dataset.confirm);
    if (msg && !window.confirm(msg)) {
      e.preventDefault();
      return;
    }
    if (form.dataset && form.dataset.api && window.fetch) {
      e.preventDefault();
      send(form, btn);
    }
  });

  // Show each <time> in the viewer's local zone as a tooltip (the text stays UTC).
  document.querySelectorAll("time[datetime]").forEach(function (t) {
    var d = new Date(t.getAttribute("datetime"));
    if (!isNaN(d)) { t.title = d.toLocaleString(); }
  });

  // fmtDuration prints milliseconds as the server's templates do: 850ms, 12.4s, 3m04s, 2h05m.
  function fmtDuration(ms) {
    ms = Math.max(0, Math.round(ms));
    var two = function (n) { return (n < 10 ? "0" : "") + n; };
    if (ms < 1000) { return ms + "ms"; }
    if (ms < 60000) { return (ms / 1000).toFixed(1) + "s"; }
    if (ms < 3600000) { return Math.floor(ms / 60000) + "m" + two(Math.floor(ms / 1000) % 60) + "s"; }
    return Math.floor(ms / 3600000) + "h" + two(Math.floor(ms / 60000) % 60) + "m";
  }

  function num(n) { return Number(n).toLocaleString("en-US"); }

  // While the run is not terminal, its running items (and the counters beside them) are read
  // from the JSON API every 5 s and redrawn in place, so a typed cancel reason survives; at a
  // terminal status the page reloads once to show the outcome and the rerun form.
  var running = document.getElementById("running");
  if (running && running.dataset.poll === "1") {
    var terminal = (running.dataset.terminal || "").split(" ");
    var setText = function (id, v) {
      var el = document.getElementById(id);
      if (el) { el.textContent = v; }
    };
    var draw = function (d, now) {
      var rows = (d.running || []).map(function (r) {
        var updated = r.progress_at ? fmtDuration(now - Date.parse(r.progress_at)) + " ago" : "—";
        return '<tr data-item="' + r.item_no + '"><td><a href="?item=' + r.item_no + '#logs">' + r.item_no + "</a></td><td>" +
          r.item_attempt + "</td><td>" + esc(r.worker) + '</td><td title="started ' + esc(r.started_at) + '">' +
          fmtDuration(now - Date.parse(r.started_at)) + '</td><td class="num">' + num(r.records_read) + '</td><td class="num">' +
          num(r.records_written) + '</td><td class="num">' + num(r.page_count) + '</td><td class="msg">' + esc(r.progress) +
          "</td><td>" + updated + "</td></tr>";
      }).join("");
      var table = document.getElementById("running-items");
      table.querySelector("tbody").innerHTML = rows;
      table.hidden = rows === "";
      document.getElementById("running-empty").hidden = rows !== "";
      setText("running-count", num(d.attempts.running) + " running" +
        (d.running_more ? " · " + num(d.running_more) + " not listed" : "") + " · refreshes every 5 s");
      var run = d.run;
      setText("run-status", run.status);
      setText("count-succeeded", num(run.items_succeeded));
      setText("count-failed", num(run.items_failed));
      setText("count-attempts", num(run.attempt_count));
      setText("count-written", num(run.records_written));
    };
    var poll = function () {
      fetch(running.dataset.api, { credentials: "same-origin", headers: { "Accept": "application/json" } }).then(function (res) {
        if (!res.ok) { throw new Error(res.status); }
        // Ages are measured on the server's clock (its Date header), not the browser's.
        var now = Date.parse(res.headers.get("Date") || "");
        return res.json().then(function (j) { return { d: j, now: isNaN(now) ? Date.now() : now }; });
      }).then(function (r) {
        if (terminal.indexOf(r.d.run.status) >= 0) { location.reload(); return; }
        draw(r.d, r.now);
        setTimeout(poll, 5000);
      }).catch(function () { setTimeout(poll, 5000); });
    };
    setTimeout(poll, 5000);
  }

  // Auto-refresh an active run every 5 s while the box is ticked (remembered per tab).
  var box = document.getElementById("auto-refresh");
  if (box) {
    var key = "etlexec.autoRefresh";
    box.checked = sessionStorage.getItem(key) === "1";
    var timer = null;
    var arm = function () {
      if (timer) { clearTimeout(timer); timer = null; }
      if (box.checked) { timer = setTimeout(function () { location.reload(); }, 5000); }
    };
    box.addEventListener("change", function () {
      sessionStorage.setItem(key, box.checked ? "1" : "0");
      arm();
    });
    arm();
  }
})();
