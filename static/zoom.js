// Zoom and pan of an image in its box, for fine facets (a neckline, a collar): the wheel
// zooms around the pointer, + / - zoom around the centre, z fits the image again, a drag
// pans while zoomed, a double click zooms in there (or fits again). The image keeps its
// box; only its CSS transform changes. Retag.zoom(img) -> {key(k) -> handled?, scale()}.
(function () {
  "use strict";
  var MAX = 8, STEP = 1.25;

  function zoom(img) {
    if (!img) return null;
    var box = img.parentElement;
    var level = box.parentElement.querySelector("[data-zoom-level]");
    var s = 1, tx = 0, ty = 0, drag = null;

    function clamp() {
      var w = box.clientWidth, h = box.clientHeight;
      tx = Math.min(0, Math.max(w - w * s, tx));
      ty = Math.min(0, Math.max(h - h * s, ty));
    }

    function draw() {
      clamp();
      img.style.transform = s === 1 ? "" : "translate(" + tx + "px," + ty + "px) scale(" + s + ")";
      box.classList.toggle("zoomed", s > 1);
      box.dataset.scale = s.toFixed(2);
      if (level) level.textContent = Math.round(s * 100) + " %";
    }

    // Zoom to scale `to`, keeping the point (x, y) of the box (default: its centre) in place.
    function zoomTo(to, x, y) {
      to = Math.min(MAX, Math.max(1, to));
      if (x == null) { x = box.clientWidth / 2; y = box.clientHeight / 2; }
      tx = x - (x - tx) * (to / s);
      ty = y - (y - ty) * (to / s);
      s = to;
      draw();
    }

    function at(ev) {
      var r = box.getBoundingClientRect();
      return [ev.clientX - r.left, ev.clientY - r.top];
    }

    box.addEventListener("wheel", function (ev) {
      ev.preventDefault();
      var p = at(ev);
      zoomTo(s * Math.exp(-ev.deltaY * 0.002), p[0], p[1]);
    }, { passive: false });

    box.addEventListener("dblclick", function (ev) {
      var p = at(ev);
      if (s > 1) zoomTo(1); else zoomTo(2.5, p[0], p[1]);
    });

    box.addEventListener("pointerdown", function (ev) {
      if (s === 1 || ev.button !== 0) return;
      drag = { x: ev.clientX, y: ev.clientY, tx: tx, ty: ty };
      box.setPointerCapture(ev.pointerId);
      box.classList.add("panning");
      ev.preventDefault();
    });
    box.addEventListener("pointermove", function (ev) {
      if (!drag) return;
      tx = drag.tx + ev.clientX - drag.x;
      ty = drag.ty + ev.clientY - drag.y;
      draw();
    });
    function stop() { drag = null; box.classList.remove("panning"); }
    box.addEventListener("pointerup", stop);
    box.addEventListener("pointercancel", stop);
    img.addEventListener("dragstart", function (ev) { ev.preventDefault(); });

    box.parentElement.querySelectorAll("[data-zoom]").forEach(function (b) {
      b.addEventListener("click", function () { key(b.dataset.zoom); });
    });

    function key(k) {
      if (k === "+" || k === "=") { zoomTo(s * STEP); return true; }
      if (k === "-" || k === "_") { zoomTo(s / STEP); return true; }
      if (k === "z") { zoomTo(1); return true; }
      return false;
    }

    window.addEventListener("resize", draw);
    draw();
    return { key: key, scale: function () { return s; } };
  }

  window.Retag.zoom = zoom;
})();
