// The cluster view's outlier groups by key: click a group to select it (the first is
// selected), a label's key sets that group's new label, Enter retags the group (its form
// posts, as its button does). The keys are those of every retag page (data-key).
(function () {
  "use strict";
  var groups = Array.prototype.slice.call(document.querySelectorAll(".outlier-group"));
  if (!groups.length) return;
  var say = window.Retag.notice(document.getElementById("notice"));
  var selected = 0;
  var pickers = groups.map(function (g) { return window.Retag.labelKeys(g.querySelectorAll("select[name=label] option")); });

  function select(i) {
    selected = i;
    groups.forEach(function (g, j) { g.classList.toggle("selected", j === i); });
  }

  groups.forEach(function (g, i) {
    g.addEventListener("click", function () { select(i); });
  });

  document.addEventListener("keydown", function (ev) {
    if (window.Retag.typingIn(ev)) return;
    var form = groups[selected];
    if (ev.key === "Enter") { form.requestSubmit(); ev.preventDefault(); return; }
    var options = form.querySelectorAll("select[name=label] option");
    window.Retag.handleLabelKey(pickers[selected], ev, say, function (i) {
      form.querySelector("select[name=label]").value = options[i].value;
      say("pending", "The selected group will be retagged to " + options[i].dataset.labelName + ": press Enter (or Retag group).");
    });
  });
})();
