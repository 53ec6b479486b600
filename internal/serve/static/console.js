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
