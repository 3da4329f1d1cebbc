// Small behaviours shared by every page, and window.Retag: the pieces the keyboard pages
// (image, prediction grids, suspects queue) share. No framework, no build step.
// base.html loads this file (deferred) in <head>, so it runs before any page's own script.
(function () {
  "use strict";

  document.addEventListener("change", function (ev) {
    var el = ev.target;
    // The project switcher: each option's value is the page to open.
    if (el.matches("select[data-navigate]") && el.value) {
      window.location.href = el.value;
      return;
    }
    // Filter selects submit their form; a new task drops the label of the old one.
    if (el.matches("select[data-autosubmit]") && el.form) {
      if (el.hasAttribute("data-resets-label")) {
        el.form.querySelectorAll("input[name=label]").forEach(function (i) { i.remove(); });
      }
      el.form.submit();
    }
  });

  // The top bar's Manage menu closes on a click elsewhere or Escape.
  function closeMenus(except) {
    document.querySelectorAll(".adminnav details[open]").forEach(function (d) { if (d !== except) d.open = false; });
  }
  document.addEventListener("click", function (ev) { closeMenus(ev.target.closest(".adminnav details")); });
  document.addEventListener("keydown", function (ev) { if (ev.key === "Escape") closeMenus(null); });

  // Buttons that ask before doing something that cannot be undone.
  document.addEventListener("submit", function (ev) {
    var msg = ev.target.getAttribute("data-confirm");
    if (msg && !window.confirm(msg)) ev.preventDefault();
  });

  // --- window.Retag ------------------------------------------------------------------

  // True when a key press is not a page shortcut: a modifier is held, or the person is
  // typing in a form field.
  function typingIn(ev) {
    if (ev.ctrlKey || ev.metaKey || ev.altKey) return true;
    var tag = (ev.target.tagName || "").toLowerCase();
    return tag === "input" || tag === "textarea" || tag === "select";
  }

  // The keys that pick labels, read from the buttons (their data-key, which the server
  // decides: services.labels.label_key): 1..9, 0, letters, then chords such as ";1".
  // picker.press(key) -> {index} when the keys typed so far name a label, {pending} while
  // they start a chord, {miss} when no label has them (the caller says so), or null for a
  // key that is no label key at all (a named key such as Shift or F5).
  function labelKeys(elements) {
    var keys = Array.prototype.map.call(elements, function (el) { return el.dataset.key; });
    var typed = "";
    return {
      keys: keys,
      press: function (key) {
        if (key.length !== 1 || key === " ") return null;
        var sofar = typed + key;
        var i = keys.indexOf(sofar);
        if (i >= 0) { typed = ""; return { index: i, typed: sofar }; }
        if (keys.some(function (k) { return k.indexOf(sofar) === 0; })) { typed = sofar; return { pending: sofar }; }
        typed = "";
        return { miss: sofar };
      },
      reset: function () { typed = ""; }
    };
  }

  // The short notice of a key no label has, naming the keys there are.
  function missText(typed, keys) {
    var there = !keys.length ? "none" : keys.length <= 12 ? keys.join(" ") : keys[0] + " … " + keys[keys.length - 1];
    return "No label has the key “" + typed + "” (label keys here: " + there + "; each is on its label).";
  }

  // What a page does with a picker's answer: say() for a chord in progress or a miss, pick(i)
  // for a label. True when the key was the picker's (the caller stops there).
  function handleLabelKey(picker, ev, say, pick) {
    var r = picker.press(ev.key);
    if (r === null) return false;
    ev.preventDefault();
    if (r.index != null) pick(r.index);
    else if (r.pending) say("pending", "“" + r.pending + "”… the next key picks the label.");
    else say("error", missText(r.miss, picker.keys));
    return true;
  }

  // A say(kind, text) that shows text in the page's notice element (kind: pending, ok,
  // conflict, error). textContent only: label and task names come from users.
  function notice(el) {
    return function say(kind, text) {
      el.hidden = false;
      el.className = "notice notice-" + kind;
      el.textContent = text;
    };
  }

  // POST body as JSON with the page's CSRF token. Resolves to {status, data} (data is {}
  // when the answer is not JSON); rejects only when the request did not get an answer.
  function postJSON(url, body) {
    var csrf = document.querySelector("meta[name=csrf-token]").getAttribute("content");
    return fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrf, "Accept": "application/json" },
      body: JSON.stringify(body)
    }).then(function (resp) {
      return resp.json().catch(function () { return {}; }).then(function (data) {
        return { status: resp.status, data: data };
      });
    });
  }

  // GET JSON from the API with the session's cookie. Resolves to the data; rejects on any
  // answer but 2xx with an Error that carries status and detail (what the answer's body
  // says, errorText; message: that, or "HTTP <status>"), and when the request did not get
  // an answer (no status).
  function getJSON(url) {
    return fetch(url, { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (r) {
        if (r.ok) return r.json();
        return r.json().catch(function () { return {}; }).then(function (data) {
          var e = new Error(errorText(data) || "HTTP " + r.status);
          e.status = r.status;
          e.detail = errorText(data);
          throw e;
        });
      });
  }

  // The parts of a widget: the elements under root that have a data-testid, by that name
  // in camelCase ("map-status" -> parts.mapStatus), so a script names each part once.
  function parts(root) {
    var out = {};
    root.querySelectorAll("[data-testid]").forEach(function (el) {
      var key = el.getAttribute("data-testid").replace(/-([a-z0-9])/g, function (m, c) { return c.toUpperCase(); });
      if (!(key in out)) out[key] = el;
    });
    return out;
  }

  // One line for a person from a DRF error body: {"detail": ...} or field errors
  // ({"label": ["..."], "non_field_errors": [...]}). "" when the body says nothing.
  function errorText(data) {
    if (!data || typeof data !== "object") return "";
    if (typeof data.detail === "string") return data.detail;
    return Object.keys(data).map(function (k) {
      var v = data[k], text = Array.isArray(v) ? v.join(" ") : (typeof v === "string" ? v : errorText(v));
      return k === "non_field_errors" ? text : k + ": " + text;
    }).join("; ");
  }

  // Post a change that carries the annotation version the page saw, and tell its outcome.
  // opts.answered(status, data), if given, runs first on any answer. The caller handles
  // 200 (opts.ok(data)) and 409 (opts.conflict(data)): they redraw.
  // 403, other errors and network errors are told with opts.say, worded by opts.words
  // (default: retagging a label). Resolves to the HTTP status, or 0 after a network error
  // (or an error in ok/conflict, which is told the same way).
  var RETAG_WORDS = { action: "retag", thing: "this label", lost: "the label was not saved" };
  function save(url, body, opts) {
    var say = opts.say, words = opts.words || RETAG_WORDS;
    return postJSON(url, body).then(function (res) {
      var status = res.status, data = res.data;
      if (opts.answered) opts.answered(status, data);
      if (status === 200) {
        opts.ok(data);
      } else if (status === 409) {
        opts.conflict(data);
      } else if (status === 403) {
        say("error", "You are not allowed to " + words.action + " (or your session expired). Reload the page.");
      } else {
        say("error", errorText(data) || "The server could not save " + words.thing + " (HTTP " + status + ").");
      }
      return status;
    }).catch(function () {
      say("error", "Network error: " + words.lost + ".");
      return 0;
    });
  }

  // The notice after a 409 on a retag: the label someone else set, and that nothing of
  // this person's choice was saved. where ("image 12") names the image when the page
  // shows many.
  function conflictText(taskName, facet, choiceName, where) {
    var now = facet.label_name == null ? "no label" : "“" + facet.label_name + "”";
    return "Someone else changed " + taskName + (where ? " of " + where : "") + " while you were looking: it is now " +
           now + ". Your choice (" + choiceName + ") was not saved and nothing was overwritten. Press the key again to set it.";
  }

  // What a retag answer (POST /api/images/{id}/retag/) says the label is now, as
  // {label, label_name, version, verified}: on 200 from the annotation written (its name is
  // the one the person picked), on 409 from "current", the annotation someone else wrote.
  function facetOf(status, data, pickedName) {
    if (status === 409) return data.current;
    var a = data.annotation;
    return { label: a.label, label_name: a.label == null ? null : pickedName, version: a.version, verified: a.verified };
  }

  // The Undo button a retag's confirmation carries (Ctrl+Z does the same), calling onClick.
  function undoButton(onClick) {
    var b = document.createElement("button");
    b.type = "button";
    b.className = "btn btn-small undo-btn";  // its word is CSS: the notice's text stays the sentence
    b.setAttribute("data-testid", "undo");
    b.setAttribute("aria-label", "Undo");
    b.title = "Ctrl+Z";
    b.addEventListener("click", onClick);
    return b;
  }

  window.Retag = {
    facetOf: facetOf,
    undoButton: undoButton,
    typingIn: typingIn,
    labelKeys: labelKeys,
    handleLabelKey: handleLabelKey,
    notice: notice,
    postJSON: postJSON,
    getJSON: getJSON,
    parts: parts,
    errorText: errorText,
    save: save,
    conflictText: conflictText
  };
})();
