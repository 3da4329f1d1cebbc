// The dashboard's precision-recall curve and confidence histogram of one class, loaded
// from the quality API (/api/runs/<id>/pr-curves/?label=) after the page: the page's own
// render reads no prediction. Drawn with RetagCharts (static/charts.js).
(function () {
  "use strict";
  var box = document.getElementById("pr-curves");
  if (!box || !window.RetagCharts) return;
  var pick = box.querySelector("[data-testid=pr-label]");
  var histOf = box.querySelector("[data-testid=hist-of]");
  var summary = box.querySelector("[data-testid=pr-summary]");
  var prChart = box.querySelector("[data-testid=pr-chart]");
  var histChart = box.querySelector("[data-testid=hist-chart]");
  var histNote = box.querySelector("[data-testid=hist-note]");
  var COLORS = { correct: "#1f8a5b", wrong: "#d6675c" };
  var last = null;

  function sum(xs) { return xs.reduce(function (a, b) { return a + b; }, 0); }

  function drawHistogram() {
    if (!last) return;
    var h = last.histogram[histOf.value];
    var series = [{ name: "correct", color: COLORS.correct, counts: h.correct },
                  { name: "wrong", color: COLORS.wrong, counts: h.wrong }];
    RetagCharts.legend(box.querySelector("[data-testid=hist-legend]"), series);
    RetagCharts.bars(histChart, { edges: last.edges, series: series, height: 170,
                                  label: "Confidence histogram", empty: "No prediction to count." });
    histNote.textContent = sum(h.correct) + " correct, " + sum(h.wrong) + " wrong" +
      (histOf.value === "predicted" ? " predicted " + last.label.name : "") + ", by confidence of the prediction.";
    histNote.dataset.correct = sum(h.correct);
    histNote.dataset.wrong = sum(h.wrong);
  }

  function draw(data) {
    last = data;
    var read = data.sampled
      ? "a seeded sample of " + data.n.toLocaleString() + " of the " + data.total.toLocaleString() + " " + data.split + " predictions"
      : "all " + data.n.toLocaleString() + " " + data.split + " predictions";
    if (data.average_precision == null) {
      summary.textContent = "No " + data.split + " image is labelled " + data.label.name + ": no curve (" + read + ").";
      summary.removeAttribute("data-ap");
    } else {
      summary.textContent = "Average precision " + data.average_precision.toFixed(3) + " · " +
        data.positives.toLocaleString() + " " + data.label.name + " images · from " + read + ".";
      summary.dataset.ap = data.average_precision;
    }
    var c = data.curve;
    RetagCharts.line(prChart, {
      series: [{ name: data.label.name, color: "#3a5bd9",
                 points: c.recall.map(function (r, i) { return [r, c.precision[i], "recall " + r.toFixed(2) + ", threshold " + c.threshold[i].toFixed(2)]; }) }],
      xMin: 0, xMax: 1, yMin: 0, yMax: 1, height: 190, label: "Precision-recall curve of " + data.label.name,
      empty: "No curve: no image of this class.",
    });
    drawHistogram();
  }

  function load() {
    summary.textContent = "Loading…";
    var url = box.dataset.api + "?label=" + encodeURIComponent(pick.value) + "&split=" + encodeURIComponent(box.dataset.split);
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) {
        return r.json().then(function (body) {
          if (!r.ok) throw new Error(body.detail || ("HTTP " + r.status));
          return body;
        });
      })
      .then(draw)
      .catch(function (e) { summary.textContent = "Could not load the curves: " + e.message; });
  }

  if (!pick.options.length) { summary.textContent = "No class to draw."; return; }
  pick.addEventListener("change", load);
  histOf.addEventListener("change", drawHistogram);
  load();
})();
