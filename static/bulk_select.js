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
//   opts.changed  (), optional: after a retag or undo changed some labels (the page's counts)
// The requests, their report and the Undo are window.BulkSelect.retagger(opts), which the
// embeddings map (static/embedding_map.js) uses for its selection too.
(function () {
  "use strict";

  var CHUNK = 1000;  // images per request: the API's MAX_BULK (labeling/services/retag.py)

  // A field whose Ctrl+Z is the browser's own undo of typing. A checkbox, radio or button
  // has none: after a click on a selection box and a label's key the focus is still on the
  // box, and Ctrl+Z there undoes the retag (as the label keys are taken from input.pick).
  function editsText(el) {
    var tag = (el.tagName || "").toLowerCase();
    if (tag === "textarea" || el.isContentEditable) return true;
    if (tag !== "input") return false;
    return ["checkbox", "radio", "button", "submit", "reset", "range", "color", "file", "image"]
      .indexOf((el.type || "text").toLowerCase()) < 0;
  }

  // The bulk retag and its Undo of one page -> {retag(items, labelId), offerUndo(items)}:
  //   opts.task, opts.bulkUrl, opts.undoUrl
  //   opts.notice   the element that tells each outcome (and holds the Undo button)
  //   opts.names    {labelId: name}
  //   opts.apply    (body) shows an answer: changed and unchanged ({image, version, label}),
  //                 conflicts ({image, version, label}: the label someone set since)
  //   opts.retagged (body), optional: after a retag's answer was applied
  // items: [{image, expected_version}], sent in requests of CHUNK one after another.
  // Ctrl+Z (outside a text field: a selection box is none) undoes the last decision while there is one.
  function retagger(opts) {
    var noticeEl = opts.notice, say = window.Retag.notice(noticeEl);
    var busy = false, last = null;  // last: the items ([{image, version}]) Undo takes back

    function conflictLine(n, what) {
      return n ? " · " + n + " changed by someone since: not " + what + " (marked red, their label now is shown)" : "";
    }

    function failLine(body) {
      return body.failed ? " · " + body.failed + " not sent: " + body.error : "";
    }

    function kindOf(body) { return body.failed ? "error" : body.conflicts.length ? "conflict" : "ok"; }

    function offerUndo(items) {
      last = items.length ? items : null;
      if (last) noticeEl.appendChild(window.Retag.undoButton(undo));
    }

    function refusal(res) {
      if (res.status === 403) return "You are not allowed to retag (or your session expired). Reload the page.";
      return (res.data && res.data.detail) || "The server refused it (HTTP " + res.status + ").";
    }

    // POST fields with items, CHUNK at a time; done(body) gets the answers merged, with
    // failed: how many were not sent and error: why (a refusal stops the rest). When
    // nothing went through, only the error is told.
    function post(url, fields, items, done) {
      busy = true;
      var body = { changed: [], unchanged: [], conflicts: [], missing: [], failed: 0, error: "" };
      var sent = 0;
      function next() {
        if (sent >= items.length) return null;
        var chunk = items.slice(sent, sent + CHUNK);
        return window.Retag.postJSON(url, Object.assign({ items: chunk }, fields)).then(function (res) {
          if (res.status !== 200) { body.failed = items.length - sent; body.error = refusal(res); return null; }
          ["changed", "unchanged", "conflicts", "missing"].forEach(function (k) { body[k] = body[k].concat(res.data[k]); });
          sent += chunk.length;
          return next();
        });
      }
      return Promise.resolve().then(next).catch(function () {
        body.failed = items.length - sent;
        body.error = sent ? "network error" : "Network error: nothing was saved.";
      }).then(function () {
        busy = false;
        if (body.failed === items.length) say("error", body.error);
        else done(body);
      });
    }

    function retag(items, labelId) {
      if (busy || !items.length) return;
      var name = opts.names[String(labelId)];
      say("pending", "Retagging " + items.length + " to " + name + "…");
      post(opts.bulkUrl, { task: opts.task, label: labelId }, items, function (body) {
        opts.apply(body);
        if (opts.retagged) opts.retagged(body);
        say(kindOf(body), "Retagged " + body.changed.length + " to " + name +
          (body.unchanged.length ? " · " + body.unchanged.length + " already " + name + " (confirmed)" : "") +
          conflictLine(body.conflicts.length, "retagged") +
          (body.missing.length ? " · " + body.missing.length + " no longer in the project" : "") + failLine(body));
        offerUndo(body.changed.map(function (d) { return { image: d.image, version: d.version }; }));
      });
    }

    function undo() {
      if (busy || !last) return;
      var items = last;
      last = null;
      say("pending", "Undoing " + items.length + "…");
      post(opts.undoUrl, { task: opts.task }, items, function (body) {
        opts.apply(body);
        say(kindOf(body), "Undone: " + body.changed.length + " back to the label " +
            (body.changed.length === 1 ? "it" : "each") + " had" + conflictLine(body.conflicts.length, "undone") +
            failLine(body));
      });
    }

    // Capture phase, before the page's own keys.
    window.addEventListener("keydown", function (ev) {
      if (!(ev.ctrlKey || ev.metaKey) || ev.altKey || (ev.key !== "z" && ev.key !== "Z")) return;
      if (editsText(ev.target)) return;  // the field's own undo
      if (last) { undo(); ev.preventDefault(); ev.stopImmediatePropagation(); }
    }, true);

    return { retag: retag, offerUndo: offerUndo };
  }

  function attach(opts) {
    var bar = document.getElementById("bulk-bar");
    if (!bar) return null;
    var cells = opts.cells;
    var noticeEl = document.getElementById(bar.dataset.notice || "bulk-notice");
    var say = window.Retag.notice(noticeEl);
    var picker = bar.querySelector("[data-role=label]");
    var options = Array.prototype.slice.call(picker.options);
    var keys = window.Retag.labelKeys(options);
    var names = {};
    options.forEach(function (o) { names[o.value] = o.dataset.labelName; });
    var anchor = -1;
    var testNotice = document.getElementById("bulk-test-notice");  // templates/labeling/_test_split_notice.html

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
      if (testNotice) {  // the project grid mixes splits: warn while the selection holds test images
        var t = picked().filter(function (c) { return c.dataset.split === "test"; }).length;
        testNotice.hidden = t === 0;
        testNotice.querySelector("[data-role=test-count]").textContent =
          t === n ? (n === 1 ? "The selected image is" : "All " + n + " selected images are")
                  : t + " of the " + n + " selected images " + (t === 1 ? "is" : "are");
      }
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
      if (body.changed.length && opts.changed) opts.changed();
    }

    var bulk = retagger({
      task: Number(bar.dataset.task), bulkUrl: bar.dataset.bulkUrl, undoUrl: bar.dataset.undoUrl,
      notice: noticeEl, names: names, apply: apply,
      retagged: function (body) {  // the conflicts stay selected, for a second try
        clear();
        body.conflicts.forEach(function (d) { var c = cellOf(d.image); if (c) set(c, true); });
        redraw();
      }
    });

    function retag(labelId) {
      bulk.retag(picked().map(function (c) {
        return { image: Number(c.dataset.image), expected_version: Number(c.dataset.version) };
      }), labelId);
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
      if ((ev.ctrlKey || ev.metaKey) && !ev.altKey && (ev.key === "z" || ev.key === "Z")) return;  // retagger's
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
      offerUndo: function (image, version) { bulk.offerUndo([{ image: image, version: version }]); }
    };
  }

  window.BulkSelect = { attach: attach, retagger: retagger };
})();
