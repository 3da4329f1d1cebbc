// False negative / false positive / confusion-cell grids: pick an image with the arrows
// (or j/k), press a number to set its label in the task's order, as on the image page.
// The retag posts the annotation version this page saw; a 409 means someone else changed
// the label first: nothing is overwritten and the cell shows the label it has now.
(function () {
  "use strict";
  var grid = document.getElementById("pred-grid");
  if (!grid) return;
  var cells = Array.prototype.slice.call(grid.querySelectorAll(".pcell"));
  var labels = Array.prototype.slice.call(document.querySelectorAll("#task-labels li"));
  var notice = document.getElementById("notice");
  var csrf = document.querySelector("meta[name=csrf-token]").getAttribute("content");
  var task = Number(grid.dataset.task), taskName = grid.dataset.taskName;
  var selected = 0, busy = false;

  function say(kind, text) {
    notice.hidden = false;
    notice.className = "notice notice-" + kind;
    notice.textContent = text;
  }

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
    fetch(cell.dataset.retagUrl, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrf, "Accept": "application/json" },
      body: JSON.stringify({ task: task, label: Number(item.dataset.label), expected_version: Number(cell.dataset.version) })
    }).then(function (resp) {
      return resp.json().catch(function () { return {}; }).then(function (data) { return [resp.status, data]; });
    }).then(function (res) {
      var status = res[0], data = res[1];
      cell.classList.remove("conflict");
      if (status === 200) {
        showNow(cell, data.facet);
        cell.classList.add("retagged");
        say("ok", data.changed ? "Image " + cell.dataset.image + ": " + taskName + " is now " + name + "."
                               : "Image " + cell.dataset.image + " was already " + name + "; marked as confirmed.");
        select(selected + 1);
      } else if (status === 409) {
        showNow(cell, data.facet);
        cell.classList.add("conflict");
        var now = data.facet.label_name == null ? "no label" : "“" + data.facet.label_name + "”";
        say("conflict", "Someone else changed " + taskName + " of image " + cell.dataset.image + " while you were looking: it is now " +
            now + ". Your choice (" + name + ") was not saved and nothing was overwritten. Press the key again to set it.");
      } else if (status === 403) {
        say("error", "You are not allowed to retag (or your session expired). Reload the page.");
      } else {
        say("error", (data && data.message) || "The server could not save this label (HTTP " + status + ").");
      }
    }).catch(function () {
      say("error", "Network error: the label was not saved.");
    }).then(function () { busy = false; });
  }

  function follow(rel) {
    var a = document.querySelector(".grid-toolbar a[rel=" + rel + "]");
    if (a) window.location.href = a.href;
  }

  document.addEventListener("keydown", function (ev) {
    if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
    var tag = (ev.target.tagName || "").toLowerCase();
    if (tag === "input" || tag === "textarea" || tag === "select") return;
    var key = ev.key;
    if (key === "ArrowRight" || key === "j" || key === "l") { select(selected + 1); ev.preventDefault(); return; }
    if (key === "ArrowLeft" || key === "k" || key === "h") { select(selected - 1); ev.preventDefault(); return; }
    if (key === "ArrowDown") { select(selected + columns()); ev.preventDefault(); return; }
    if (key === "ArrowUp") { select(selected - columns()); ev.preventDefault(); return; }
    if (key === "Enter" || key === "o") { if (cells[selected]) window.location.href = cells[selected].dataset.imageUrl; return; }
    if (key === "n") { follow("next"); return; }
    if (key === "p") { follow("prev"); return; }
    if (/^[0-9]$/.test(key)) {
      var i = key === "0" ? 9 : Number(key) - 1;
      if (labels[i]) retag(cells[selected], labels[i]);
      else say("error", taskName + " has no label number " + key + ".");
      ev.preventDefault();
    }
  });

  cells.forEach(function (c, i) {
    c.addEventListener("click", function (ev) {
      if (ev.target.closest("a")) return;
      select(i);
    });
  });
  labels.forEach(function (li) {
    li.style.cursor = "pointer";
    li.addEventListener("click", function () { retag(cells[selected], li); });
  });
})();
