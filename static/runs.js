// The quality pages' small behaviours: sortable metric tables (click a column header;
// numbers sort high first on the first click), and the F1-over-runs charts.
(function () {
  "use strict";

  // --- sortable tables ---------------------------------------------------------------
  document.querySelectorAll("table.metric-table").forEach(function (table) {
    var heads = Array.prototype.slice.call(table.querySelectorAll("thead th.sortable"));
    heads.forEach(function (th) {
      th.tabIndex = 0;
      th.setAttribute("role", "button");
      function sort() {
        var index = Array.prototype.indexOf.call(th.parentNode.children, th);
        var numeric = th.dataset.sort === "num";
        var desc = th.classList.contains("sorted-desc") ? false : th.classList.contains("sorted-asc") ? true : numeric;
        heads.forEach(function (h) { h.classList.remove("sorted-asc", "sorted-desc"); h.removeAttribute("aria-sort"); });
        th.classList.add(desc ? "sorted-desc" : "sorted-asc");
        th.setAttribute("aria-sort", desc ? "descending" : "ascending");
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows).filter(function (r) { return !r.classList.contains("empty-row"); });
        rows.sort(function (a, b) {
          var va = a.cells[index].dataset.v, vb = b.cells[index].dataset.v, r;
          if (numeric) {
            var na = va === "" || va == null ? -Infinity : Number(va), nb = vb === "" || vb == null ? -Infinity : Number(vb);
            r = na - nb;
          } else {
            r = String(va).localeCompare(String(vb));
          }
          return desc ? -r : r;
        });
        rows.forEach(function (r) { body.appendChild(r); });
      }
      th.addEventListener("click", sort);
      th.addEventListener("keydown", function (ev) { if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); sort(); } });
    });
  });

  // --- F1 over runs ------------------------------------------------------------------
  var data = document.getElementById("f1-series");
  if (!data || !window.RetagCharts) return;
  var series = JSON.parse(data.textContent);
  var runs = series.runs;
  var xTicks = runs.map(function (r, i) { return [i, "#" + r.id]; });
  if (xTicks.length > 12) {
    var every = Math.ceil(xTicks.length / 12);
    xTicks = xTicks.filter(function (_, i) { return i % every === 0 || i === xTicks.length - 1; });
  }
  function pts(values) { return values.map(function (v, i) { return [i, v, "run " + runs[i].id]; }); }
  var common = { yMin: 0, yMax: 1, xMin: runs.length > 1 ? 0 : -0.5, xMax: runs.length > 1 ? runs.length - 1 : 0.5,
                 xTicks: xTicks, yFormat: function (v) { return v.toFixed(2); }, empty: "No finished runs yet." };

  var selector = document.getElementById("class-select");
  var main = document.getElementById("f1-main");
  var palette = window.RetagCharts.palette;

  function drawMain() {
    var chosen = selector ? Array.prototype.slice.call(selector.querySelectorAll("input:checked")).map(function (i) { return Number(i.value); }) : [];
    var lines = [{ name: "macro-F1", points: pts(runs.map(function (r) { return r.macro_f1; })), color: "#1b2030", width: 2.6 }];
    series.labels.forEach(function (lb, i) {
      if (chosen.indexOf(lb.id) >= 0) lines.push({ name: lb.name, points: pts(lb.f1), color: palette[i % palette.length] });
    });
    window.RetagCharts.line(main, Object.assign({ series: lines, height: 280, label: "F1 over runs" }, common));
    window.RetagCharts.legend(document.getElementById("f1-legend"), lines);
  }
  if (main) {
    drawMain();
    if (selector) selector.addEventListener("change", drawMain);
  }
  document.querySelectorAll("[data-class-chart]").forEach(function (box) {
    var id = Number(box.dataset.classChart);
    var i = series.labels.findIndex(function (lb) { return lb.id === id; });
    if (i < 0) return;
    window.RetagCharts.line(box, Object.assign({ series: [{ name: series.labels[i].name, points: pts(series.labels[i].f1),
                                                             color: palette[i % palette.length] }],
                                                 height: 140, yTickCount: 2 }, common));
  });
})();
