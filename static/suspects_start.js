// The "Find suspects" form: its time estimate follows the K and epochs fields as they
// change. The rule is the server's (services.suspect_quality.estimate): the fragment is
// re-read from views.suspects.suspect_estimate, a moment after the last keystroke.
(function () {
  "use strict";
  var out = document.querySelector("[data-testid=estimate][data-url]");
  if (!out) return;
  var form = out.closest("form"), timer = null, asked = 0;

  function refresh() {
    var params = new URLSearchParams();
    ["k", "fold_epochs"].forEach(function (name) { params.set(name, form.elements[name].value.trim()); });
    var n = ++asked;
    fetch(out.dataset.url + "?" + params.toString(), { credentials: "same-origin" }).then(function (r) {
      return r.ok ? r.text() : null;
    }).then(function (html) {
      if (n !== asked || html == null) return;  // a later keystroke's answer wins
      out.innerHTML = html;
      out.hidden = !html.trim();
    }).catch(function () {});
  }

  ["k", "fold_epochs"].forEach(function (name) {
    form.elements[name].addEventListener("input", function () {
      clearTimeout(timer);
      timer = setTimeout(refresh, 200);
    });
  });
})();
