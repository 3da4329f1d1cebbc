// The suspects queue, keyboard first: a/Enter accept the suggestion, k keep the given label,
// 1..9/0 pick a label in the task's order, s skip. Each action posts the annotation version
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
  if (!root) {
    document.addEventListener("keydown", function (ev) { if (ev.key === "?") toggleHelp(); if (ev.key === "Escape") toggleHelp(false); });
    return;
  }
  var notice = document.getElementById("notice");
  var csrf = document.querySelector("meta[name=csrf-token]").getAttribute("content");
  var choices = Array.prototype.slice.call(document.querySelectorAll("#task-labels .choice"));

  function say(kind, text) {
    notice.hidden = false;
    notice.className = "notice notice-" + kind;
    notice.textContent = text;
  }

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
    fetch(root.dataset.resolveUrl, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrf, "Accept": "application/json" },
      body: JSON.stringify({ action: action, label: labelId, expected_version: Number(root.dataset.version) })
    }).then(function (resp) {
      return resp.json().catch(function () { return {}; }).then(function (data) { return [resp.status, data]; });
    }).then(function (res) {
      var status = res[0], data = res[1];
      if (status === 200) {
        say("ok", what + ": done.");
        document.getElementById("done-count").textContent = String(data.throughput.done);
        document.getElementById("per-minute").textContent = String(data.throughput.per_minute);
        window.location.reload();
        return;
      }
      if (status === 409) {
        if (data.version != null) root.dataset.version = String(data.version);
        showCurrent(data.label, data.label_name);
        say("conflict", data.message || "Someone else changed this label first; nothing was overwritten.");
      } else if (status === 403) {
        say("error", "You are not allowed to do this (or your session expired). Reload the page.");
      } else {
        say("error", (data && data.message) || "The server could not save this (HTTP " + status + ").");
      }
      busy = false;
    }).catch(function () {
      say("error", "Network error: nothing was saved.");
      busy = false;
    });
  }

  function accept() { send("accept", null, "Accepting " + root.dataset.suggestedName); }
  function keep() { send("keep", null, "Keeping " + (root.dataset.currentName || "the label")); }
  function skip() { send("skip", null, "Skipping"); }
  function pick(button) { send("label", Number(button.dataset.label), "Setting " + button.dataset.labelName); }

  document.addEventListener("keydown", function (ev) {
    if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
    var tag = (ev.target.tagName || "").toLowerCase();
    if (tag === "input" || tag === "textarea" || tag === "select") return;
    var key = ev.key;
    if (key === "Escape") { toggleHelp(false); return; }
    if (key === "?") { toggleHelp(); ev.preventDefault(); return; }
    if (help && !help.hidden) return;
    if (key === "a" || key === "Enter") { accept(); ev.preventDefault(); return; }
    if (key === "k") { keep(); return; }
    if (key === "s") { skip(); return; }
    if (/^[0-9]$/.test(key)) {
      var b = choices[key === "0" ? 9 : Number(key) - 1];
      if (b) pick(b); else say("error", "There is no label number " + key + ".");
      ev.preventDefault();
    }
  });
  root.querySelectorAll("[data-action]").forEach(function (b) {
    b.addEventListener("click", function () {
      var a = b.dataset.action;
      if (a === "accept") accept(); else if (a === "keep") keep(); else skip();
    });
  });
  choices.forEach(function (b) { b.addEventListener("click", function () { pick(b); }); });
})();
