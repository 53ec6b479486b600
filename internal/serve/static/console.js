// etlexec console: confirmations and auto-refresh. Pages work without it.
(function () {
  "use strict";
  document.addEventListener("submit", function (e) {
    var form = e.target;
    var btn = e.submitter;
    var msg = (btn && btn.dataset && btn.dataset.confirm) || (form.dataset && form.dataset.confirm);
    if (msg && !window.confirm(msg)) {
      e.preventDefault();
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
