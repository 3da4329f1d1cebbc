// The dashboard's precision-recall curve and confidence histogram of one class, loaded
// from the quality API (/api/runs/<id>/pr-curves/?label=) after the page: the page's own
// render reads no prediction. Drawn with RetagCharts (static/charts.js).
(function () {
  "use strict";
  var box = document.getElementById("pr-curves");
  if (!box || !window.RetagCharts) return;
  var ui = window.Retag.parts(box);  // prLabel, histOf, prSummary, prChart, histChart, histNote, histLegend
  var COLORS = { correct: "#1f8a5b", wrong: "#d6675c" };
  var last = null;

  function sum(xs) { return xs.reduce(function (a, b) { return a + b; }, 0); }

  function drawHistogram() {
    if (!last) return;
    var h = last.histogram[ui.histOf.value];
    var series = [{ name: "correct", color: COLORS.correct, counts: h.correct },
                  { name: "wrong", color: COLORS.wrong, counts: h.wrong }];
    RetagCharts.legend(ui.histLegend, series);
    RetagCharts.bars(ui.histChart, { edges: last.edges, series: series, height: 170,
                                  label: "Confidence histogram", empty: "No prediction to count." });
    ui.histNote.textContent = sum(h.correct) + " correct, " + sum(h.wrong) + " wrong" +
      (ui.histOf.value === "predicted" ? " predicted " + last.label.name : "") + ", by confidence of the prediction.";
    ui.histNote.dataset.correct = sum(h.correct);
    ui.histNote.dataset.wrong = sum(h.wrong);
  }

  function draw(data) {
    last = data;
    var read = data.sampled
      ? "a seeded sample of " + data.n.toLocaleString() + " of the " + data.total.toLocaleString() + " " + data.split + " predictions"
      : "all " + data.n.toLocaleString() + " " + data.split + " predictions";
    if (data.average_precision == null) {
      ui.prSummary.textContent = "No " + data.split + " image is labelled " + data.label.name + ": no curve (" + read + ").";
      ui.prSummary.removeAttribute("data-ap");
    } else {
      ui.prSummary.textContent = "Average precision " + data.average_precision.toFixed(3) + " · " +
        data.positives.toLocaleString() + " " + data.label.name + " images · from " + read + ".";
      ui.prSummary.dataset.ap = data.average_precision;
    }
    var c = data.curve;
    RetagCharts.line(ui.prChart, {
      series: [{ name: data.label.name, color: "#3a5bd9",
                 points: c.recall.map(function (r, i) { return [r, c.precision[i], "recall " + r.toFixed(2) + ", threshold " + c.threshold[i].toFixed(2)]; }) }],
      xMin: 0, xMax: 1, yMin: 0, yMax: 1, height: 190, label: "Precision-recall curve of " + data.label.name,
      empty: "No curve: no image of this class.",
    });
    drawHistogram();
  }

  function load() {
    ui.prSummary.textContent = "Loading…";
    var url = box.dataset.api + "?label=" + encodeURIComponent(ui.prLabel.value) + "&split=" + encodeURIComponent(box.dataset.split);
    window.Retag.getJSON(url).then(draw)
      .catch(function (e) { ui.prSummary.textContent = "Could not load the curves: " + e.message; });
  }

  if (!ui.prLabel.options.length) { ui.prSummary.textContent = "No class to draw."; return; }
  ui.prLabel.addEventListener("change", load);
  ui.histOf.addEventListener("change", drawHistogram);
  load();
})();
