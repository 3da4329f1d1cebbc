// False negative / false positive / confusion-cell grids: pick an image with the arrows
// (or j/k), press a label's key to set its label, as on the image page; after a retag the
// next image is selected (the panel's help says so), and a key no label has is told.
// The retag posts the annotation version this page saw; a 409 means someone else changed
// the label first: nothing is overwritten and the cell shows the label it has now.
(function () {
  "use strict";
  var grid = document.getElementById("pred-grid");
  if (!grid) return;
  var cells = Array.prototype.slice.call(grid.querySelectorAll(".pcell"));
  var labels = Array.prototype.slice.call(document.querySelectorAll("#task-labels li"));
  var picker = window.Retag.labelKeys(labels);
  var notice = document.getElementById("notice");
  var task = Number(grid.dataset.task), taskName = grid.dataset.taskName;
  var selected = 0, busy = false;

  var say = window.Retag.notice(notice);

  function select(i) {
    if (!cells.length) return;
    selected = Math.max(0, Math.min(cells.length - 1, i));
    cells.forEach(function (c, j) { c.classList.toggle("selected", j === selected); });
    cells[selected].focus({ preventScroll: true });
    cells[selected].scrollIntoView({ block: "nearest" });
  }

  function columns() {
    if (cells.length < 2) return 1;
    var top = cells[0].offsetTop, n = 0;
    while (n < cells.length && cells[n].offsetTop === top) n++;
    return Math.max(1, n);
  }

  function showNow(cell, facet) {
    cell.dataset.version = String(facet.version);
    cell.dataset.current = facet.label == null ? "" : String(facet.label);
    var now = cell.querySelector("[data-role=now]");
    now.textContent = facet.label_name == null ? "no label" : facet.label_name;
    now.classList.remove("same");
  }

  function retag(cell, item) {
    if (busy || !cell || !item) return;
    busy = true;
    var name = item.dataset.labelName;
    say("pending", "Setting " + taskName + " to " + name + "…");
    window.Retag.save(cell.dataset.retagUrl, {
      task: task, label: Number(item.dataset.label), expected_version: Number(cell.dataset.version)
    }, {
      say: say,
      answered: function () { cell.classList.remove("conflict"); },
      ok: function (data) {
        showNow(cell, window.Retag.facetOf(200, data, name));
        cell.classList.add("retagged");
        say("ok", data.event ? "Image " + cell.dataset.image + ": " + taskName + " is now " + name + "."
                               : "Image " + cell.dataset.image + " was already " + name + "; marked as confirmed.");
        if (data.event && bulk) bulk.offerUndo(Number(cell.dataset.image), data.annotation.version);
        select(selected + 1);
      },
      conflict: function (data) {
        var now = window.Retag.facetOf(409, data);
        showNow(cell, now);
        cell.classList.add("conflict");
        say("conflict", window.Retag.conflictText(taskName, now, name, "image " + cell.dataset.image));
      }
    }).then(function () { busy = false; });
  }

  function follow(rel) {
    var a = document.querySelector(".grid-toolbar a[rel=" + rel + "]");
    if (a) window.location.href = a.href;
  }

  document.addEventListener("keydown", function (ev) {
    if (window.Retag.typingIn(ev)) return;
    var key = ev.key;
    if (key === "ArrowRight" || key === "j" || key === "l") { select(selected + 1); ev.preventDefault(); return; }
    if (key === "ArrowLeft" || key === "k" || key === "h") { select(selected - 1); ev.preventDefault(); return; }
    if (key === "ArrowDown") { select(selected + columns()); ev.preventDefault(); return; }
    if (key === "ArrowUp") { select(selected - columns()); ev.preventDefault(); return; }
    if (key === "Enter" || key === "o") { if (cells[selected]) window.location.href = cells[selected].dataset.imageUrl; return; }
    if (key === "n") { follow("next"); return; }
    if (key === "p") { follow("prev"); return; }
    window.Retag.handleLabelKey(picker, ev, say, function (i) { retag(cells[selected], labels[i]); });
  });

  cells.forEach(function (c, i) {
    c.addEventListener("click", function (ev) {
      if (ev.target.closest("a")) return;
      select(i);
    });
  });
  // Bulk selection (static/bulk_select.js): its keys come first while images are selected.
  var bulk = window.BulkSelect && window.BulkSelect.attach({
    cells: cells,
    focused: function () { return selected; },
    show: function (cell, labelId, labelName) {
      showNow(cell, { version: Number(cell.dataset.version), label: labelId, label_name: labelName });
      if (!cell.classList.contains("conflict")) cell.classList.add("retagged");
    }
  });

  labels.forEach(function (li) {
    li.style.cursor = "pointer";
    li.addEventListener("click", function () {
      if (bulk && bulk.count()) bulk.retag(Number(li.dataset.label));  // as its key does
      else retag(cells[selected], li);
    });
  });
})();
