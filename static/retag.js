// Small behaviours shared by every page. No framework, no build step.
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

  // Buttons that ask before doing something that cannot be undone.
  document.addEventListener("submit", function (ev) {
    var msg = ev.target.getAttribute("data-confirm");
    if (msg && !window.confirm(msg)) ev.preventDefault();
  });
})();
