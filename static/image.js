// The image page: keyboard retagging with optimistic concurrency.
// The page sends the annotation version it saw; a 409 means someone else changed the
// label first, and nothing was overwritten. Everything user-typed is set with textContent.
(function () {
  "use strict";

  var root = document.getElementById("image-page");
  if (!root) return;
  var facets = Array.prototype.slice.call(root.querySelectorAll(".facet"));
  var notice = document.getElementById("notice");
  var help = document.getElementById("help");
  var selected = Math.max(0, facets.findIndex(function (f) { return f.classList.contains("selected"); }));
  var busy = false;

  // Each task's label keys (the data-key of its buttons).
  var pickers = facets.map(function (f) { return window.Retag.labelKeys(f.querySelectorAll(".choice")); });
  var zoom = window.Retag.zoom(document.getElementById("original"));

  function select(i) {
    if (!facets.length) return;
    if (pickers[selected]) pickers[selected].reset();
    selected = (i + facets.length) % facets.length;
    facets.forEach(function (f, j) { f.classList.toggle("selected", j === selected); });
    facets[selected].scrollIntoView({ block: "nearest" });
  }

  var say = window.Retag.notice(notice);

  function showFacet(facet, state) {
    facet.dataset.version = String(state.version);
    facet.dataset.current = state.label == null ? "" : String(state.label);
    var current = facet.querySelector("[data-role=current]");
    current.textContent = "";
    if (state.label_name == null) {
      var em = document.createElement("em");
      em.textContent = "no label";
      current.appendChild(em);
    } else {
      current.textContent = state.label_name;
    }
    facet.querySelector("[data-role=verified]").hidden = !state.verified;
    facet.querySelectorAll(".choice").forEach(function (b) {
      b.classList.toggle("current", state.label != null && b.dataset.label === String(state.label));
    });
  }

  function cell(tr, text, cls) {
    var td = document.createElement("td");
    if (cls) td.className = cls;
    if (text == null) {
      var em = document.createElement("em");
      em.className = "muted";
      em.textContent = "none";
      td.appendChild(em);
    } else {
      td.textContent = text;
    }
    tr.appendChild(td);
    return td;
  }

  function showHistory(rows) {
    var body = document.getElementById("history-rows");
    body.textContent = "";
    rows.forEach(function (r) {
      var tr = document.createElement("tr");
      tr.dataset.event = String(r.id);
      var when = cell(tr, null, "nowrap");
      when.textContent = "";
      var t = document.createElement("time");
      t.dateTime = r.when;
      t.textContent = r.when.slice(0, 16).replace("T", " ");
      t.title = r.when;
      when.appendChild(t);
      cell(tr, r.task);
      cell(tr, r.from);
      cell(tr, r.to, "strong");
      var who = cell(tr, r.by == null ? "—" : r.by);
      if (r.by == null) who.className = "muted";
      var src = cell(tr, "");
      var tag = document.createElement("span");
      tag.className = "source source-" + r.source_key;
      tag.textContent = r.source;
      src.appendChild(tag);
      if (r.reference) {
        var ref = document.createElement("span");
        ref.className = "muted small";
        ref.textContent = " " + r.reference;
        src.appendChild(ref);
      }
      body.appendChild(tr);
    });
    document.getElementById("history-count").textContent = rows.length + (rows.length === 1 ? " event" : " events");
    var first = body.firstElementChild;
    if (first) first.classList.add("fresh");
  }

  function retag(facet, button) {
    if (busy || !button) return;
    busy = true;
    var taskName = facet.dataset.taskName;
    var labelName = button.dataset.labelName;
    say("pending", "Setting " + taskName + " to " + labelName + "…");
    window.Retag.save(root.dataset.retagUrl, {
      task: Number(facet.dataset.task),
      label: Number(button.dataset.label),
      expected_version: Number(facet.dataset.version)
    }, {
      say: say,
      ok: function (data) {
        showFacet(facet, window.Retag.facetOf(200, data, labelName));
        say("ok", data.event ? taskName + " is now " + labelName + "." : taskName + " was already " + labelName + "; marked as confirmed.");
        if (data.event) offerUndo(facet, data.annotation.version);
      },
      conflict: function (data) {
        var now = window.Retag.facetOf(409, data);
        showFacet(facet, now);
        say("conflict", window.Retag.conflictText(taskName, now, labelName));
      }
    }).then(function (status) {
      busy = false;
      // Either way the history changed (ours, or the change that beat ours): redraw it.
      if (status === 200 || status === 409) window.Retag.getJSON(root.dataset.historyUrl).then(showHistory).catch(function () {});
    });
  }

  // The confirmation of a retag carries an Undo (and Ctrl+Z): POST /api/retag/undo/ with the
  // version the retag returned puts the label it replaced back, as an event of its own; if
  // someone changed it in between, that is told and nothing is overwritten. The history is
  // then read again from the page as the server renders it.
  var undoLast = null;
  function offerUndo(facet, version) {
    var taskName = facet.dataset.taskName;
    undoLast = function () {
      undoLast = null;
      say("pending", "Undoing…");
      window.Retag.postJSON(root.dataset.undoUrl, {
        task: Number(facet.dataset.task), items: [{ image: Number(root.dataset.image), version: version }]
      }).then(function (res) {
        if (res.status !== 200) {
          say("error", (res.data && res.data.detail) || "The undo was refused (HTTP " + res.status + ").");
          return;
        }
        var d = res.data.changed[0] || res.data.conflicts[0];
        var button = d && d.label != null ? facet.querySelector(".choice[data-label='" + d.label + "']") : null;
        var name = button ? button.dataset.labelName : null;
        showFacet(facet, { version: d.version, label: d.label, label_name: name, verified: !!res.data.changed.length });
        if (res.data.changed.length) say("ok", "Undone: " + taskName + " is back to " + (name == null ? "no label" : name) + ".");
        else say("conflict", "Not undone: someone changed " + taskName + " since (it is now " + (name == null ? "no label" : name) + "); nothing was overwritten.");
        return fetch(window.location.href, { credentials: "same-origin" }).then(function (r) { return r.text(); }).then(function (html) {
          var fresh = new DOMParser().parseFromString(html, "text/html");
          ["history-rows", "history-count"].forEach(function (id) {
            var el = fresh.getElementById(id);
            if (el) document.getElementById(id).replaceWith(document.adoptNode(el));
          });
        });
      }).catch(function () { say("error", "Network error: nothing was undone."); });
    };
    notice.appendChild(window.Retag.undoButton(function () { if (undoLast) undoLast(); }));
  }
  document.addEventListener("keydown", function (ev) {
    if ((ev.ctrlKey || ev.metaKey) && (ev.key === "z" || ev.key === "Z") && undoLast && !window.Retag.typingIn({ target: ev.target })) {
      ev.preventDefault();
      undoLast();
    }
  });

  function go(url) { if (url) window.location.href = url; }

  function toggleHelp(show) {
    help.hidden = show === undefined ? !help.hidden : !show;
  }

  document.addEventListener("keydown", function (ev) {
    if (window.Retag.typingIn(ev)) return;
    var key = ev.key;
    if (key === "Escape") { toggleHelp(false); return; }
    if (key === "?") { toggleHelp(); ev.preventDefault(); return; }
    if (!help.hidden) return;
    if (key === "Tab") { select(selected + (ev.shiftKey ? -1 : 1)); ev.preventDefault(); return; }
    if (key === "t") { select(selected + 1); return; }
    if (key === "T") { select(selected - 1); return; }
    if (key === "j" || key === "ArrowRight") { go(root.dataset.nextUrl); return; }
    if (key === "k" || key === "ArrowLeft") { go(root.dataset.prevUrl); return; }
    if (key === "g") { go(root.dataset.gridUrl); return; }
    if (zoom && zoom.key(key)) { ev.preventDefault(); return; }
    if (!facets.length) return;
    var facet = facets[selected];
    window.Retag.handleLabelKey(pickers[selected], ev, say, function (i) {
      retag(facet, facet.querySelectorAll(".choice")[i]);
    });
  });

  facets.forEach(function (facet, i) {
    facet.addEventListener("click", function (ev) {
      select(i);
      var button = ev.target.closest(".choice");
      if (button) retag(facet, button);
    });
  });
  document.querySelectorAll("[data-toggle-help]").forEach(function (b) {
    b.addEventListener("click", function () { toggleHelp(); });
  });
  help.addEventListener("click", function (ev) { if (ev.target === help) toggleHelp(false); });
})();
