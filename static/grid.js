// The project grid: select cards and retag them in one action (static/bulk_select.js).
// The keyboard's card is the one whose link has the focus (Tab moves it).
(function () {
  "use strict";
  var grid = document.querySelector("ul.grid");
  if (!grid || !window.BulkSelect) return;
  var cells = Array.prototype.slice.call(grid.querySelectorAll("li.cell"));
  var sidebar = document.querySelector("[data-counts-url]");

  // The sidebar's label counts (and the toolbar's image count) re-read from the server
  // (GET /api/projects/{id}/label-counts/, the figures the page was rendered with), so
  // they follow a bulk retag and its undo without a reload.
  function recount() {
    if (!sidebar) return;
    window.Retag.getJSON(sidebar.dataset.countsUrl).then(function (d) {
      var fmt = function (n) { return n.toLocaleString("en-US"); };
      var total = sidebar.querySelector("[data-count-of=total] .count");
      if (total) total.textContent = fmt(d.total);
      d.rows.forEach(function (row) {
        var el = sidebar.querySelector("[data-count-of='" + (row.label == null ? "none" : row.label) + "'] .count");
        if (!el) return;
        el.textContent = fmt(row.count);
        var bar = el.parentNode.querySelector(".bar");
        if (bar) bar.style.setProperty("--share", (d.total ? Math.round(row.count * 100 / d.total) : 0) + "%");
      });
      var shown = document.querySelector("[data-testid=shown-count]");
      if (shown) shown.textContent = fmt(d.shown);
    }).catch(function () {});  // the counts stay as they were; the retag's own line says what happened
  }

  window.BulkSelect.attach({
    cells: cells,
    focused: function () {
      return cells.findIndex(function (c) { return c.contains(document.activeElement); });
    },
    show: function (cell, labelId, name) {
      var el = cell.querySelector(".cell-label");
      if (!el) return;
      el.textContent = name == null ? "no label" : name;
      el.classList.toggle("none", name == null);
      if (!cell.classList.contains("conflict")) cell.classList.add("retagged");
    },
    changed: recount
  });
})();
