// Drag and drop for the label order page: dropping posts the task's whole new order.
// The up/down buttons work without this file.
(function () {
  "use strict";
  var dragged = null;
  document.querySelectorAll(".order-list").forEach(function (list) {
    var form = list.closest("form");
    list.addEventListener("dragstart", function (ev) {
      dragged = ev.target.closest("li");
      if (!dragged) return;
      dragged.classList.add("dragging");
      ev.dataTransfer.effectAllowed = "move";
      ev.dataTransfer.setData("text/plain", dragged.dataset.label);
    });
    list.addEventListener("dragover", function (ev) {
      var over = ev.target.closest("li");
      if (!dragged || !over || over === dragged || over.parentNode !== list) return;
      ev.preventDefault();
      var box = over.getBoundingClientRect();
      list.insertBefore(dragged, ev.clientY > box.top + box.height / 2 ? over.nextSibling : over);
    });
    list.addEventListener("drop", function (ev) { ev.preventDefault(); });
    list.addEventListener("dragend", function () {
      if (!dragged) return;
      dragged.classList.remove("dragging");
      dragged = null;
      var ids = Array.prototype.map.call(list.children, function (li) { return li.dataset.label; });
      form.querySelector("input[name=order]").value = ids.join(",");
      form.submit();
    });
  });
})();
