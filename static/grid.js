// The project grid: select cards and retag them in one action (static/bulk_select.js).
// The keyboard's card is the one whose link has the focus (Tab moves it).
(function () {
  "use strict";
  var grid = document.querySelector("ul.grid");
  if (!grid || !window.BulkSelect) return;
  var cells = Array.prototype.slice.call(grid.querySelectorAll("li.cell"));
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
    }
  });
})();
