// The import job page polls the job (GET /api/imports/{id}/) every second until it is done
// or failed (static/poll.js).
(function () {
  "use strict";
  var root = document.getElementById("job");
  if (!root) return;
  var url = root.dataset.statusUrl;
  var fmt = new Intl.NumberFormat("en-US");

  function set(id, text) { document.getElementById(id).textContent = text; }

  function render(s) {
    var state = document.getElementById("job-state");
    state.textContent = s.state;
    state.className = "state state-" + s.state;
    set("job-processed", fmt.format(s.processed));
    set("job-total", fmt.format(s.total));
    set("job-message", s.message || "");
    var share = s.total ? Math.min(100, Math.round(100 * s.processed / s.total)) : (s.finished ? 100 : 0);
    document.getElementById("job-bar").style.width = share + "%";
    root.querySelectorAll("[data-k]").forEach(function (el) { el.textContent = fmt.format(s[el.dataset.k] || 0); });
    var body = document.getElementById("problems");
    body.textContent = "";
    if (!s.problems.length) {
      var tr = document.createElement("tr"), td = document.createElement("td");
      tr.className = "empty-row"; td.colSpan = 3; td.className = "muted";
      td.textContent = s.finished ? "No problems." : "No problems so far.";
      tr.appendChild(td); body.appendChild(tr);
    }
    s.problems.forEach(function (p) {
      var tr = document.createElement("tr");
      [[p.row, "num"], [p.uri, "mono small"], [p.reason, ""]].forEach(function (c) {
        var td = document.createElement("td");
        td.className = c[1];
        td.textContent = c[0] == null ? "" : String(c[0]);
        tr.appendChild(td);
      });
      body.appendChild(tr);
    });
    set("problem-count", s.problems_total > s.problems.length
      ? "first " + s.problems.length + " of " + fmt.format(s.problems_total) : String(s.problems.length));
  }

  if (root.dataset.finished !== "1") {
    window.RetagPoll(url, { update: function (s) { render(s); return s.finished; } });
  }
})();
