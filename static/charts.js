// Small SVG line charts and histograms, no library. RetagCharts.line(element, options)
// (and RetagCharts.bars, below) draws into element (replacing what it held) and returns the <svg>.
//
// options: {
//   series: [{name, color, points: [[x, y], ...], dots: bool}],  // y null breaks the line
//   height: 220, yMin, yMax (default: from the data; 0..1 with unit: true),
//   xTicks: [[x, "label"], ...] (default: about 6 numbers), yFormat: fn, xFormat: fn,
//   clip: true draws values outside yMin..yMax on the edge (a clipped axis),
//   empty: "text when there is nothing to draw"
// }
// Every text node is set with textContent (names come from users).
(function () {
  "use strict";

  var NS = "http://www.w3.org/2000/svg";
  var PALETTE = ["#3a5bd9", "#d6675c", "#1f8a5b", "#b7791f", "#8e44ad", "#16a2b8", "#e67e22",
                 "#2c3e50", "#c0392b", "#27ae60", "#7f8c8d", "#d35400"];

  function el(name, attrs, parent) {
    var node = document.createElementNS(NS, name);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (parent) parent.appendChild(node);
    return node;
  }

  function niceStep(span, count) {
    var raw = span / Math.max(1, count);
    var mag = Math.pow(10, Math.floor(Math.log10(raw || 1)));
    var norm = raw / mag;
    return (norm < 1.5 ? 1 : norm < 3 ? 2 : norm < 7 ? 5 : 10) * mag;
  }

  function ticks(lo, hi, count) {
    if (hi <= lo) return [lo];
    var step = niceStep(hi - lo, count), out = [];
    for (var v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(+v.toFixed(10));
    return out;
  }

  // The empty <svg> a chart draws in, replacing what container held: its size (o.width,
  // o.height or height), the padding of the axes, and o.label as its aria-label.
  function frame(container, o, height) {
    var W = o.width || container.clientWidth || 600, H = o.height || height;
    container.textContent = "";
    var svg = el("svg", { "class": "chart", viewBox: "0 0 " + W + " " + H, width: W, height: H, role: "img" });
    if (o.label) svg.setAttribute("aria-label", o.label);
    container.appendChild(svg);
    return { W: W, H: H, pad: { l: 44, r: 14, t: 10, b: 24 }, svg: svg };
  }

  function line(container, options) {
    var o = options || {};
    var series = (o.series || []).map(function (s, i) {
      return { name: s.name, color: s.color || PALETTE[i % PALETTE.length], points: s.points || [],
               dots: s.dots, width: s.width };
    });
    var f = frame(container, o, 220), W = f.W, H = f.H, pad = f.pad, svg = f.svg;

    var xs = [], ys = [];
    series.forEach(function (s) {
      s.points.forEach(function (p) {
        if (p[1] == null || isNaN(p[1])) return;
        xs.push(p[0]); ys.push(p[1]);
      });
    });
    if (!xs.length) {
      var t = el("text", { x: W / 2, y: H / 2, "text-anchor": "middle", "class": "empty-text" }, svg);
      t.textContent = o.empty || "No data yet.";
      return svg;
    }
    var x0 = o.xMin != null ? o.xMin : Math.min.apply(null, xs);
    var x1 = o.xMax != null ? o.xMax : Math.max.apply(null, xs);
    if (x1 === x0) { x0 -= 0.5; x1 += 0.5; }
    var y0 = o.yMin != null ? o.yMin : Math.min.apply(null, ys);
    var y1 = o.yMax != null ? o.yMax : Math.max.apply(null, ys);
    if (o.yMin == null && o.zero !== false) y0 = Math.min(0, y0);
    if (y1 === y0) { y1 = y0 + 1; }
    if (o.yMax == null) y1 = y1 + (y1 - y0) * 0.05;
    var sx = function (x) { return pad.l + (x - x0) / (x1 - x0) * (W - pad.l - pad.r); };
    var sy = function (y) {
      if (o.clip) y = Math.max(y0, Math.min(y1, y));
      return H - pad.b - (y - y0) / (y1 - y0) * (H - pad.t - pad.b);
    };
    var yFormat = o.yFormat || function (v) { return Math.abs(v) >= 100 ? v.toFixed(0) : v.toFixed(v % 1 ? 2 : 0); };
    var xFormat = o.xFormat || function (v) { return String(+v.toFixed(2)); };

    var yt = ticks(y0, y1, o.yTickCount || 4);
    yt.forEach(function (v) {
      el("line", { x1: pad.l, x2: W - pad.r, y1: sy(v), y2: sy(v), "class": "gridline" }, svg);
      var t = el("text", { x: pad.l - 6, y: sy(v) + 3.5, "text-anchor": "end", "class": "tick" }, svg);
      t.textContent = yFormat(v);
    });
    var xt = o.xTicks || ticks(x0, x1, o.xTickCount || 6).map(function (v) { return [v, xFormat(v)]; });
    xt.forEach(function (tk) {
      var t = el("text", { x: sx(tk[0]), y: H - pad.b + 15, "text-anchor": "middle", "class": "tick" }, svg);
      t.textContent = tk[1];
    });
    el("line", { x1: pad.l, x2: W - pad.r, y1: H - pad.b, y2: H - pad.b, "class": "axis" }, svg);
    el("line", { x1: pad.l, x2: pad.l, y1: pad.t, y2: H - pad.b, "class": "axis" }, svg);

    series.forEach(function (s) {
      var segments = [[]];
      s.points.forEach(function (p) {
        if (p[1] == null || isNaN(p[1])) { if (segments[segments.length - 1].length) segments.push([]); return; }
        segments[segments.length - 1].push(sx(p[0]).toFixed(1) + "," + sy(p[1]).toFixed(1));
      });
      var g = el("g", { "data-series": s.name || "" }, svg);
      segments.forEach(function (seg) {
        if (seg.length > 1) el("polyline", { points: seg.join(" "), "class": "series", stroke: s.color,
                                             "stroke-width": s.width || 1.8 }, g);
      });
      var dots = s.dots != null ? s.dots : s.points.length <= 40;
      if (dots) {
        s.points.forEach(function (p) {
          if (p[1] == null || isNaN(p[1])) return;
          var c = el("circle", { cx: sx(p[0]), cy: sy(p[1]), r: 3, fill: s.color, "class": "dot" }, g);
          var tip = el("title", {}, c);
          tip.textContent = (s.name ? s.name + ": " : "") + yFormat(p[1]) + " (" + (p[2] || xFormat(p[0])) + ")";
        });
      }
    });
    return svg;
  }

  function legend(container, series) {
    container.textContent = "";
    series.forEach(function (s, i) {
      var item = document.createElement("span");
      var sw = document.createElement("i");
      sw.style.background = s.color || PALETTE[i % PALETTE.length];
      item.appendChild(sw);
      item.appendChild(document.createTextNode(s.name));
      container.appendChild(item);
    });
  }

  // Bars of a histogram: options {edges: [e0, ..., en], series: [{name, color, counts: [n]}]}:
  // the series of one bin side by side. Each bar carries data-series, data-bin and
  // data-count, and a <title> with its numbers.
  function bars(container, options) {
    var o = options || {}, edges = o.edges || [], series = o.series || [];
    var f = frame(container, o, 200), W = f.W, H = f.H, pad = f.pad, svg = f.svg;
    var top = 0;
    series.forEach(function (s) { s.counts.forEach(function (n) { top = Math.max(top, n); }); });
    if (!top || edges.length < 2) {
      var t = el("text", { x: W / 2, y: H / 2, "text-anchor": "middle", "class": "empty-text" }, svg);
      t.textContent = o.empty || "No data yet.";
      return svg;
    }
    var x0 = edges[0], x1 = edges[edges.length - 1];
    var sx = function (x) { return pad.l + (x - x0) / (x1 - x0) * (W - pad.l - pad.r); };
    var sy = function (y) { return H - pad.b - y / top * (H - pad.t - pad.b); };
    ticks(0, top, 4).filter(function (v) { return v % 1 === 0; }).forEach(function (v) {  // counts: whole numbers
      el("line", { x1: pad.l, x2: W - pad.r, y1: sy(v), y2: sy(v), "class": "gridline" }, svg);
      var t = el("text", { x: pad.l - 6, y: sy(v) + 3.5, "text-anchor": "end", "class": "tick" }, svg);
      t.textContent = String(v);
    });
    ticks(x0, x1, 5).forEach(function (v) {
      var t = el("text", { x: sx(v), y: H - pad.b + 15, "text-anchor": "middle", "class": "tick" }, svg);
      t.textContent = String(+v.toFixed(2));
    });
    el("line", { x1: pad.l, x2: W - pad.r, y1: H - pad.b, y2: H - pad.b, "class": "axis" }, svg);
    series.forEach(function (s, k) {
      var g = el("g", { "data-series": s.name || "" }, svg);
      s.counts.forEach(function (n, i) {
        var left = sx(edges[i]), w = (sx(edges[i + 1]) - left - 1) / series.length;
        var r = el("rect", { x: left + 0.5 + k * w, y: sy(n), width: Math.max(0.5, w), height: sy(0) - sy(n),
                             fill: s.color || PALETTE[k % PALETTE.length], "class": "bar",
                             "data-series": s.name || "", "data-bin": i, "data-count": n }, g);
        var tip = el("title", {}, r);
        tip.textContent = (s.name ? s.name + ": " : "") + n + " (" + edges[i] + "–" + edges[i + 1] + ")";
      });
    });
    return svg;
  }

  window.RetagCharts = { line: line, bars: bars, legend: legend, palette: PALETTE };
})();
