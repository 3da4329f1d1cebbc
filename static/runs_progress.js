// The run progress page: polls GET /api/runs/{id}/progress/ every second (static/poll.js)
// until the run is done, failed or cancelled, and redraws the counters and the loss curve
// without reloading.
(function () {
  "use strict";
  var root = document.getElementById("run-progress");
  if (!root) return;
  var url = root.dataset.statusUrl;
  var fmt = new Intl.NumberFormat("en-US");

  function set(id, text) { document.getElementById(id).textContent = text; }

  function duration(s) {
    if (s == null || isNaN(s)) return "—";
    s = Math.max(0, Math.round(s));
    if (s < 60) return s + " s";
    if (s < 3600) return Math.floor(s / 60) + " min " + String(s % 60).padStart(2, "0") + " s";
    return Math.floor(s / 3600) + " h " + String(Math.floor((s % 3600) / 60)).padStart(2, "0") + " min";
  }

  // The whole run's share and ETA come from the server (services.quality.overall_progress):
  // every phase weighed by its images, so the bar only grows, reaches 100 % when the run is
  // done, and the ETA does not drop to a phase's "5 s" during evaluation.
  function share(s) {
    if (s.state === "done") return 100;
    return 100 * Math.max(0, Math.min(1, (s.overall && s.overall.share) || 0));
  }

  function render(s) {
    var p = s.progress || {};
    var t = p.phase === "train" ? p : (s.last_train || {});  // training numbers stay after training
    var state = document.getElementById("run-state");
    state.textContent = s.state;
    state.className = "state state-" + s.state;
    // What the share counts (the whole run, not the training alone) and the phase in words:
    // services.quality.share_label.
    var label = s.share_label || {};
    set("run-covers", label.covers || "");
    set("run-phase", s.finished ? s.state : (label.phase || p.phase || s.state) + (s.cancel_requested ? " · cancel requested" : ""));
    set("p-epoch", t.epoch != null ? t.epoch + (t.epochs ? " / " + t.epochs : "") : "—");
    set("p-step", t.step != null ? fmt.format(t.step) + (t.steps ? " / " + fmt.format(t.steps) : "") : "—");
    set("p-loss", t.loss != null ? Number(t.loss).toFixed(4) : "—");
    set("p-speed", p.images_per_s != null ? fmt.format(Math.round(p.images_per_s)) :
                   t.images_per_s != null ? fmt.format(Math.round(t.images_per_s)) : "—");
    set("p-eta", s.finished || !s.overall || s.overall.eta_s == null ? "—" : duration(s.overall.eta_s));
    set("p-elapsed", duration(s.duration_s));
    var pct = share(s);
    var bar = document.getElementById("run-bar");
    bar.style.width = pct.toFixed(1) + "%";
    bar.dataset.share = pct.toFixed(1);
    set("run-share", Math.floor(pct) + " %");
    set("run-heartbeat", s.device ? "on " + s.device : "");

    var failure = document.getElementById("failure");
    failure.hidden = !(s.state === "failed" || s.state === "cancelled");
    if (!failure.hidden) {
      set("failure-title", s.state === "cancelled" ? "Cancelled" : "Failed");
      set("failure-reason", s.state_reason || "No reason was recorded.");
    }
    if (s.finished) {  // the run head was drawn while it ran: no cancelling a finished run
      var cancel = document.querySelector("[data-testid=cancel-run]");
      if (cancel) cancel.closest("form").hidden = true;
    }
    var done = document.getElementById("done-banner");
    done.hidden = s.state !== "done";
    var f1 = document.getElementById("done-f1");
    if (f1 && s.test_macro_f1 != null) f1.textContent = Number(s.test_macro_f1).toFixed(3);
    drawLoss(s.loss_curve || {}, t, s.validation || {});
  }

  function drawLoss(curve, progress, validation) {
    var train = (curve.train || []).map(function (c) { return [c.x, c.loss, "epoch " + c.x.toFixed(2)]; });
    var val = (curve.val || []).map(function (c) { return [c.x, c.loss, "end of epoch " + c.x]; });
    var series = [{ name: "training loss", points: train, dots: train.length <= 30 }];
    // Without a val split the per-epoch "validation" loss is measured on the test split: say so.
    var valName = validation.is_test ? "test-split loss (no validation split)" : "validation loss" +
      (validation.source ? " (" + validation.source + ")" : "");
    if (val.length) series.push({ name: valName, points: val, color: "#d6675c", dots: true });
    var notes = [];
    if (val.length && validation.is_test) notes.push("There is no validation split: the per-epoch curve is the test split's loss, so it is not an unseen check of the epochs.");
    if (curve.clipped) notes.push("Axis clipped at " + Number(curve.y_max).toFixed(3) + ": the first epoch reached " + Number(curve.max_loss).toFixed(2) + " (points above are drawn on the top edge).");
    var note = document.getElementById("loss-note");
    note.textContent = notes.join(" ");
    note.hidden = !notes.length;
    var epochs = progress.epochs || (val.length ? val[val.length - 1][0] : null);
    window.RetagCharts.line(document.getElementById("loss-chart"), {
      series: series, height: 240, label: "Training loss by epoch", xMin: 0, xMax: epochs || undefined,
      yMax: curve.clipped ? curve.y_max : undefined, clip: !!curve.clipped,
      empty: "The loss curve appears with the first training steps.",
      yFormat: function (v) { return v.toFixed(v < 1 ? 3 : 2); }
    });
    window.RetagCharts.legend(document.getElementById("loss-legend"), series);
  }

  var first = JSON.parse(document.getElementById("run-status").textContent);
  render(first);
  if (!first.finished) window.RetagPoll(url, { update: function (s) { render(s); return s.finished; } });
})();
