// Select many cards of a grid and retag them in one action, and undo the last decision.
// Shared by the project grid and the false-negative/positive grids (templates/labeling/
// _bulk_bar.html is the bar). Each card carries data-image and data-version (the label
// version the page rendered, sent with the retag) and a checkbox input.pick:
//   click a checkbox, shift-click another: the range between; Space: the focused card;
//   "Select all on this page"; Escape clears; while images are selected a label's key
//   (or the bar's picker) retags all of them: POST /api/retag/bulk/, one event per image.
// An image someone changed since the page was rendered is marked (.conflict), reported in a
// line, and not retagged. Every decision is confirmed with an Undo button (and Ctrl+Z):
// POST /api/retag/undo/ with the versions the retag returned, so a change in between is a
// conflict there too. window.BulkSelect.attach(opts) -> the grid's selection:
//   opts.cells    the cards, in page order
//   opts.focused  () -> index of the card the keyboard is on, or -1
//   opts.show     (cell, labelId, labelName) redraws a card's label after a retag or undo
(function () {
  "use strict";

  function attach(opts) {
    var bar = document.getElementById("bulk-bar");
    if (!bar) return null;
    var cells = opts.cells;
    var noticeEl = document.getElementById(bar.dataset.notice || "bulk-notice");
    var say = window.Retag.notice(noticeEl);
    var task = Number(bar.dataset.task), taskName = bar.dataset.taskName;
    var picker = bar.querySelector("[data-role=label]");
    var options = Array.prototype.slice.call(picker.options);
    var keys = window.Retag.labelKeys(options);
    var names = {};
    options.forEach(function (o) { names[o.value] = o.dataset.labelName; });
    var anchor = -1, busy = false, last = null;  // last: {items, text} of the decision Undo takes back

    function boxOf(cell) { return cell.querySelector("input.pick"); }
    function picked() { return cells.filter(function (c) { return c.classList.contains("picked"); }); }

    function set(cell, on) {
      cell.classList.toggle("picked", on);
      boxOf(cell).checked = on;
    }

    function redraw() {
      var n = picked().length;
      bar.classList.toggle("active", n > 0);
      bar.querySelector("[data-role=count]").textContent = n ? n + " selected" : "none selected";
      bar.querySelector("[data-role=go]").disabled = n === 0;
      bar.querySelector("[data-role=go]").textContent = n ? "Retag " + n + " selected" : "Retag selected";
    }

    function toggle(i, range) {
      var on = !cells[i].classList.contains("picked");
      if (range && anchor >= 0) {
        var lo = Math.min(anchor, i), hi = Math.max(anchor, i);
        for (var j = lo; j <= hi; j++) set(cells[j], on);
      } else {
        set(cells[i], on);
      }
      anchor = i;
      redraw();
    }

    function clear() { cells.forEach(function (c) { set(c, false); }); anchor = -1; redraw(); }
    function selectAll() { cells.forEach(function (c) { set(c, true); }); redraw(); }

    function cellOf(image) {
      return cells.filter(function (c) { return c.dataset.image === String(image); })[0];
    }

    // Show a request's outcome on the cards: done ({image, version, label}) are redrawn,
    // conflicts marked with the label they have now (their version kept for the next try).
    function apply(body) {
      body.changed.concat(body.unchanged).forEach(function (d) {
        var c = cellOf(d.image);
        if (!c) return;
        c.dataset.version = String(d.version);
        c.classList.remove("conflict");
        opts.show(c, d.label, d.label == null ? null : names[String(d.label)]);
      });
      body.conflicts.forEach(function (d) {
        var c = cellOf(d.image);
        if (!c) return;
        c.dataset.version = String(d.version);
        c.classList.add("conflict");
        opts.show(c, d.label, d.label == null ? null : names[String(d.label)]);
      });
    }

    function conflictLine(n, what) {
      return n ? " · " + n + " changed by someone since: not " + what + " (marked red, their label now is shown)" : "";
    }

    // Say text with an Undo button that takes back items ([{image, version}]).
    function confirm(kind, text, items) {
      say(kind, text);
      offerUndo(items);
    }

    function offerUndo(items) {
      last = items.length ? { items: items } : null;
      if (!last) return;
      noticeEl.appendChild(window.Retag.undoButton(undo));
    }

    function post(url, body, done) {
      busy = true;
      return window.Retag.postJSON(url, body).then(function (res) {
        if (res.status === 200) done(res.data);
        else if (res.status === 403) say("error", "You are not allowed to retag (or your session expired). Reload the page.");
        else say("error", (res.data && res.data.detail) || "The server refused it (HTTP " + res.status + ").");
      }).catch(function () {
        say("error", "Network error: nothing was saved.");
      }).then(function () { busy = false; });
    }

    function retag(labelId) {
      var chosen = picked();
      if (busy || !chosen.length) return;
      var name = names[String(labelId)];
      say("pending", "Retagging " + chosen.length + " to " + name + "…");
      post(bar.dataset.bulkUrl, {
        task: task, label: labelId,
        items: chosen.map(function (c) { return { image: Number(c.dataset.image), expected_version: Number(c.dataset.version) }; })
      }, function (body) {
        apply(body);
        clear();
        body.conflicts.forEach(function (d) { var c = cellOf(d.image); if (c) set(c, true); });
        redraw();
        var text = "Retagged " + body.changed.length + " to " + name +
          (body.unchanged.length ? " · " + body.unchanged.length + " already " + name + " (confirmed)" : "") +
          conflictLine(body.conflicts.length, "retagged") +
          (body.missing.length ? " · " + body.missing.length + " no longer in the project" : "");
        confirm(body.conflicts.length ? "conflict" : "ok", text, body.changed.map(function (d) {
          return { image: d.image, version: d.version };
        }));
      });
    }

    function undo() {
      if (busy || !last) return;
      var items = last.items;
      last = null;
      say("pending", "Undoing " + items.length + "…");
      post(bar.dataset.undoUrl, { task: task, items: items }, function (body) {
        apply(body);
        say(body.conflicts.length ? "conflict" : "ok", "Undone: " + body.changed.length + " back to the label " +
            (body.changed.length === 1 ? "it" : "each") + " had" + conflictLine(body.conflicts.length, "undone"));
      });
    }

    cells.forEach(function (c, i) {
      var box = boxOf(c);
      box.addEventListener("click", function (ev) {
        ev.stopPropagation();
        ev.preventDefault();
        // The click toggled the box already; toggle() decides its state (and the range's).
        setTimeout(function () { toggle(i, ev.shiftKey); }, 0);
      });
    });
    bar.querySelector("[data-role=all]").addEventListener("click", selectAll);
    bar.querySelector("[data-role=clear]").addEventListener("click", clear);
    bar.querySelector("[data-role=go]").addEventListener("click", function () { retag(Number(picker.value)); });

    // Capture phase: while images are selected their keys come here before the page's own.
    window.addEventListener("keydown", function (ev) {
      if ((ev.ctrlKey || ev.metaKey) && !ev.altKey && (ev.key === "z" || ev.key === "Z")) {
        var tag = (ev.target.tagName || "").toLowerCase();
        if (tag === "input" || tag === "textarea") return;
        if (last) { undo(); ev.preventDefault(); ev.stopImmediatePropagation(); }
        return;
      }
      if (window.Retag.typingIn(ev) && !(ev.target.matches && ev.target.matches("input.pick"))) return;
      if (ev.key === " ") {
        var i = opts.focused();
        if (i >= 0) { toggle(i, ev.shiftKey); ev.preventDefault(); ev.stopImmediatePropagation(); }
        return;
      }
      if (!picked().length) return;
      if (ev.key === "Escape") { clear(); say("ok", "Selection cleared."); ev.stopImmediatePropagation(); return; }
      if (window.Retag.handleLabelKey(keys, ev, say, function (k) { retag(Number(options[k].value)); })) {
        ev.stopImmediatePropagation();
      }
    }, true);

    redraw();
    return {
      count: function () { return picked().length; },
      retag: retag,
      // A single retag the page made (the version it returned) becomes the decision Undo
      // takes back: the button follows the page's own confirmation.
      offerUndo: function (image, version) { offerUndo([{ image: image, version: version }]); }
    };
  }

  window.BulkSelect = { attach: attach };
})();
