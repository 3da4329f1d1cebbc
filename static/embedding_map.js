// The embeddings map of a run: a canvas of up to 100,000 points (no build, no library).
// Hover shows the image; dragging a box selects images, which can then be retagged (and the
// retag undone) by static/bulk_select.js's retagger: each image with the label version it had.
(function () {
  "use strict";
  var canvas = document.getElementById("map");
  if (!canvas) return;
  var ctx = canvas.getContext("2d");
  // mapStatus, mapTip, mapLegend, mapColour, mapSelection, selCount, bulkLabel, bulkGo, bulkResult
  var ui = window.Retag.parts(document);
  var PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                 "#bcbd22", "#17becf", "#393b79", "#ad494a", "#637939", "#7b4173", "#e7969c", "#3182bd"];
  var d = null;              // the API's columns
  var view = { cx: 0, cy: 0, scale: 1 };
  var selected = [];         // indices into d's columns
  var drag = null;
  var bucket = null;         // screen-space hash for hover

  function px(i) { return (d.x[i] - view.cx) * view.scale * (canvas.width / 2 - 12) + canvas.width / 2; }
  function py(i) { return -(d.y[i] - view.cy) * view.scale * (canvas.height / 2 - 12) + canvas.height / 2; }

  function colourOf(i, mode) {
    if (mode === "suspect" || mode === "confidence") {
      var v = d[mode][i];
      if (v === null || v === undefined) return "rgba(150,150,150,0.35)";
      var t = Math.max(0, Math.min(1, v));
      return "rgb(" + Math.round(40 + 215 * t) + "," + Math.round(90 * (1 - t) + 40) + "," + Math.round(200 * (1 - t)) + ")";
    }
    var k = d[mode][i];
    return k < 0 ? "rgba(0,0,0,0.3)" : PALETTE[k % PALETTE.length];
  }

  function draw() {
    var mode = ui.mapColour.value;
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    var isSel = new Uint8Array(d.image.length);
    selected.forEach(function (i) { isSel[i] = 1; });
    bucket = {};
    var r = d.image.length > 20000 ? 1.5 : 2.5;
    for (var i = 0; i < d.image.length; i++) {
      var x = px(i), y = py(i);
      if (x < -4 || y < -4 || x > canvas.width + 4 || y > canvas.height + 4) continue;
      ctx.fillStyle = colourOf(i, mode);
      ctx.fillRect(x - r, y - r, 2 * r, 2 * r);
      var key = (x >> 4) + "," + (y >> 4);
      (bucket[key] = bucket[key] || []).push(i);
    }
    ctx.strokeStyle = "#000";
    selected.forEach(function (i) { ctx.strokeRect(px(i) - r - 1, py(i) - r - 1, 2 * r + 2, 2 * r + 2); });
    if (drag && drag.moved) {
      ctx.strokeStyle = "#333"; ctx.setLineDash([4, 3]);
      ctx.strokeRect(drag.x0, drag.y0, drag.x1 - drag.x0, drag.y1 - drag.y0);
      ctx.setLineDash([]);
    }
    drawLegend(mode);
  }

  function drawLegend(mode) {
    if (mode === "suspect" || mode === "confidence") {
      ui.mapLegend.innerHTML = "<div><span class='sw' style='background:rgb(40,130,200)'></span>low</div>" +
        "<div><span class='sw' style='background:rgb(255,40,0)'></span>high</div>" +
        "<div><span class='sw' style='background:rgba(150,150,150,.6)'></span>" +
        (mode === "suspect" ? "not a suspect" : "no prediction") + "</div>";
      return;
    }
    var counts = {};
    d[mode].forEach(function (k) { counts[k] = (counts[k] || 0) + 1; });
    ui.mapLegend.innerHTML = d.labels.map(function (lb, k) {
      return "<div data-label='" + escapeHtml(lb.name) + "'><span class='sw' style='background:" + PALETTE[k % PALETTE.length] +
        "'></span>" + escapeHtml(lb.name) + " <span class='muted'>" + (counts[k] || 0) + "</span></div>";
    }).join("") + (counts[-1] ? "<div><span class='sw' style='background:#888'></span>no label <span class='muted'>" + counts[-1] + "</span></div>" : "");
  }

  function escapeHtml(s) {
    return String(s).replace(/[&<>"']/g, function (c) { return "&#" + c.charCodeAt(0) + ";"; });
  }

  function pos(ev) {
    var box = canvas.getBoundingClientRect();
    return { x: (ev.clientX - box.left) * canvas.width / box.width, y: (ev.clientY - box.top) * canvas.height / box.height };
  }

  function nearest(p) {
    var best = -1, bestD = 64;
    for (var gx = (p.x >> 4) - 1; gx <= (p.x >> 4) + 1; gx++) {
      for (var gy = (p.y >> 4) - 1; gy <= (p.y >> 4) + 1; gy++) {
        (bucket[gx + "," + gy] || []).forEach(function (i) {
          var dd = Math.pow(px(i) - p.x, 2) + Math.pow(py(i) - p.y, 2);
          if (dd < bestD) { bestD = dd; best = i; }
        });
      }
    }
    return best;
  }

  function name(k) { return k >= 0 ? d.labels[k].name : "no label"; }

  canvas.addEventListener("mousemove", function (ev) {
    if (!d) return;
    var p = pos(ev);
    if (drag) {
      drag.x1 = p.x; drag.y1 = p.y;
      drag.moved = drag.moved || Math.abs(drag.x1 - drag.x0) + Math.abs(drag.y1 - drag.y0) > 4;
      draw();
      return;
    }
    var i = nearest(p);
    if (i < 0) { ui.mapTip.hidden = true; return; }
    ui.mapTip.hidden = false;
    ui.mapTip.style.left = Math.min(p.x + 12, canvas.width - 190) * canvas.getBoundingClientRect().width / canvas.width + "px";
    ui.mapTip.style.top = Math.min(p.y + 12, canvas.height - 190) * canvas.getBoundingClientRect().height / canvas.height + "px";
    ui.mapTip.querySelector("img").src = "/images/" + d.image[i] + "/thumb.jpg";
    ui.mapTip.querySelector("div").textContent = "given " + name(d.given[i]) + " · predicted " + name(d.predicted[i]) +
      (d.confidence[i] !== null ? " (" + Math.round(d.confidence[i] * 100) + "%)" : "") +
      (d.suspect[i] !== null ? " · suspect " + d.suspect[i].toFixed(2) : "");
    ui.mapTip.dataset.image = d.image[i];
  });
  canvas.addEventListener("mouseleave", function () { ui.mapTip.hidden = true; });
  canvas.addEventListener("mousedown", function (ev) {
    var p = pos(ev);
    drag = { x0: p.x, y0: p.y, x1: p.x, y1: p.y, moved: false };
  });
  window.addEventListener("mouseup", function () {
    if (!drag) return;
    var b = drag;
    drag = null;
    if (b.moved) {
      var x0 = Math.min(b.x0, b.x1), x1 = Math.max(b.x0, b.x1), y0 = Math.min(b.y0, b.y1), y1 = Math.max(b.y0, b.y1);
      selected = [];
      for (var i = 0; i < d.image.length; i++) {
        var x = px(i), y = py(i);
        if (x >= x0 && x <= x1 && y >= y0 && y <= y1) selected.push(i);
      }
      showSelection();
    } else if (ui.mapTip.dataset.image && !ui.mapTip.hidden) {
      window.location = "/images/" + ui.mapTip.dataset.image + "/";
    }
    draw();
  });
  canvas.addEventListener("wheel", function (ev) {
    if (!d) return;
    ev.preventDefault();
    var p = pos(ev);
    var f = ev.deltaY < 0 ? 1.25 : 0.8;
    // Keep the point under the cursor where it is.
    var wx = (p.x - canvas.width / 2) / (view.scale * (canvas.width / 2 - 12)) + view.cx;
    var wy = -(p.y - canvas.height / 2) / (view.scale * (canvas.height / 2 - 12)) + view.cy;
    view.scale = Math.max(1, Math.min(200, view.scale * f));
    view.cx = wx - (p.x - canvas.width / 2) / (view.scale * (canvas.width / 2 - 12));
    view.cy = wy + (p.y - canvas.height / 2) / (view.scale * (canvas.height / 2 - 12));
    draw();
  }, { passive: false });
  canvas.addEventListener("dblclick", function () { view = { cx: 0, cy: 0, scale: 1 }; draw(); });
  ui.mapColour.addEventListener("change", draw);

  var SHOW = 120;
  function showSelection(marks) {
    ui.mapSelection.hidden = selected.length === 0;
    ui.selCount.textContent = selected.length;
    document.getElementById("sel-shown").textContent = selected.length > SHOW ? "(the first " + SHOW + " shown)" : "";
    document.getElementById("sel-grid").innerHTML = selected.slice(0, SHOW).map(function (i) {
      var m = marks && marks[d.image[i]];
      return "<a href='/images/" + d.image[i] + "/' data-image='" + d.image[i] + "' class='" + (m || "") + "'>" +
        "<img loading='lazy' src='/images/" + d.image[i] + "/thumb.jpg' alt=''><span class='tag'>" +
        escapeHtml(name(d.current[i])) + "</span></a>";
    }).join("");
  }

  document.getElementById("sel-clear").addEventListener("click", function () {
    selected = []; showSelection(); draw();
  });

  // The selection's retag and its Undo: static/bulk_select.js, as on the grids. An answer
  // redraws the images it names (conflicts red, with the label someone set since).
  var labelNames = {};
  Array.prototype.forEach.call(ui.bulkLabel.options, function (o) { labelNames[o.value] = o.textContent; });
  var indexOf = {};          // image id -> index into d's columns
  var bulk = window.BulkSelect.retagger({
    task: Number(canvas.dataset.task), bulkUrl: canvas.dataset.bulk, undoUrl: canvas.dataset.undo,
    notice: ui.bulkResult, names: labelNames,
    apply: function (body) {
      var marks = {};
      function show(c, mark) {
        var i = indexOf[c.image];
        if (i === undefined) return;
        d.version[i] = c.version;
        d.current[i] = d.labels.findIndex(function (lb) { return lb.id === c.label; });
        marks[c.image] = mark;
      }
      body.changed.concat(body.unchanged).forEach(function (c) { show(c, "changed"); });
      body.conflicts.forEach(function (c) { show(c, "conflict"); });
      showSelection(marks);
      draw();
    }
  });
  ui.bulkGo.addEventListener("click", function () {
    bulk.retag(selected.map(function (i) { return { image: d.image[i], expected_version: d.version[i] }; }),
               Number(ui.bulkLabel.value));
  });

  window.Retag.getJSON(canvas.dataset.api).then(function (body) {
    d = body;
    d.image.forEach(function (id, i) { indexOf[id] = i; });
    ui.mapStatus.textContent = d.image.length + " images" + (d.sampled ? " (a sample of the run's images)" : "") +
      " · layout: " + d.method + (d.suspect_run ? " · suspect scores from suspects run " + d.suspect_run : "");
    ui.mapStatus.dataset.points = d.image.length;
    draw();
  }).catch(function (e) {
    ui.mapStatus.textContent = e.status ? e.detail || "The map could not be made." : "The map could not be loaded: " + e;
  });
})();
