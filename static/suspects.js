// The suspects queue, keyboard first: a/Enter accept the suggestion, k keep the given label,
// a label's key (on its button) picks that label, s skip. Each action posts the annotation version
// this page saw; 200 loads the next suspect (leased to this annotator), 409 means someone
// else changed the label first: nothing is overwritten and the label shown is updated.
(function () {
  "use strict";
  var root = document.getElementById("suspect-page");
  var help = document.getElementById("help");
  var busy = false;

  function toggleHelp(show) { if (help) help.hidden = show === undefined ? !help.hidden : !show; }
  document.querySelectorAll("[data-toggle-help]").forEach(function (b) {
    b.addEventListener("click", function () { toggleHelp(); });
  });
  // Undo of the last decision (the strip above the suspect): POST /api/suspects/{id}/undo/
  // puts a retag's label back (an event of its own) and reopens the suspect for this person;
  // if someone changed the label since, nothing is undone and the strip says so.
  var last = document.querySelector("[data-testid=last-decision]");
  function undoLast() {
    var says = document.getElementById("undo-says");
    says.textContent = "Undoing…";
    window.Retag.postJSON(last.dataset.undoUrl, {}).then(function (res) {
      if (res.status === 200) { window.location.reload(); return; }
      says.textContent = "Not undone: " + ((res.data && res.data.detail) || "HTTP " + res.status) + ".";
    }).catch(function () { says.textContent = "Network error: nothing was undone."; });
  }
  if (last) {
    last.querySelector("[data-testid=undo-decision]").addEventListener("click", undoLast);
    document.addEventListener("keydown", function (ev) {
      if ((ev.ctrlKey || ev.metaKey) && (ev.key === "z" || ev.key === "Z")) { ev.preventDefault(); undoLast(); }
    });
  }
  if (!root) {
    document.addEventListener("keydown", function (ev) { if (ev.key === "?") toggleHelp(); if (ev.key === "Escape") toggleHelp(false); });
    return;
  }
  var notice = document.getElementById("notice");
  var choices = Array.prototype.slice.call(document.querySelectorAll("#task-labels .choice"));
  var picker = window.Retag.labelKeys(choices);

  var say = window.Retag.notice(notice);
  // A suspect action is not always a retag (keep, skip): its failures are worded for it.
  var words = { action: "do this", thing: "this", lost: "nothing was saved" };

  function showCurrent(labelId, name) {
    root.dataset.currentName = name || "";
    document.querySelector("[data-testid=given]").textContent = name || "no label";
    root.querySelector("[data-role=keep-name]").textContent = name || "no label";
    choices.forEach(function (b) { b.classList.toggle("current", labelId != null && b.dataset.label === String(labelId)); });
  }

  function send(action, labelId, what) {
    if (busy) return;
    busy = true;
    say("pending", what + "…");
    window.Retag.save(root.dataset.resolveUrl, {
      action: action, label: labelId, expected_version: Number(root.dataset.version)
    }, {
      say: say,
      words: words,
      ok: function () {
        say("ok", what + ": done.");
        window.location.reload();  // the next suspect, and the counts, come with the page
      },
      conflict: function (data) {
        // POST /api/suspects/{id}/resolve/ answers 409 with "current" when the label changed
        // since the page saw it, with only "detail" when the suspect was already resolved.
        var now = data.current;
        if (!now) {
          var text = window.Retag.errorText(data);
          say("conflict", text.charAt(0).toUpperCase() + text.slice(1) + ".");
          return;
        }
        root.dataset.version = String(now.version);
        showCurrent(now.label, now.label_name);
        say("conflict", "Someone else changed this label while you were looking: it is now " +
            (now.label_name == null ? "no label" : "“" + now.label_name + "”") +
            ". Your choice was not saved and nothing was overwritten.");
      }
    }).then(function (status) {
      if (status !== 200) busy = false;  // after a 200 the page reloads: no second send meanwhile
    });
  }

  function accept() { send("accept", null, "Accepting " + root.dataset.suggestedName); }
  function keep() { send("keep", null, "Keeping " + (root.dataset.currentName || "the label")); }
  function skip() { send("skip", null, "Skipping"); }
  function pick(button) { send("label", Number(button.dataset.label), "Setting " + button.dataset.labelName); }

  document.addEventListener("keydown", function (ev) {
    if (window.Retag.typingIn(ev)) return;
    var key = ev.key;
    if (key === "Escape") { toggleHelp(false); return; }
    if (key === "?") { toggleHelp(); ev.preventDefault(); return; }
    if (help && !help.hidden) return;
    if (key === "a" || key === "Enter") { accept(); ev.preventDefault(); return; }
    if (key === "k") { keep(); return; }
    if (key === "s") { skip(); return; }
    window.Retag.handleLabelKey(picker, ev, say, function (i) { pick(choices[i]); });
  });
  root.querySelectorAll("[data-action]").forEach(function (b) {
    b.addEventListener("click", function () {
      var a = b.dataset.action;
      if (a === "accept") accept(); else if (a === "keep") keep(); else skip();
    });
  });
  choices.forEach(function (b) { b.addEventListener("click", function () { pick(b); }); });
})();
