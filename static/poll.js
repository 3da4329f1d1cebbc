// The one poller of the pages that watch work run (an import, a training run, a suspects
// run, a cleaning run): GET a DRF endpoint every `every` ms (default 1000) and hand the
// answer to update(data); stop when update returns true (the work is over). A failed
// request (network, 5xx, an expired session) is retried after `retry` ms (default 3000).
//   window.RetagPoll(url, { every: 1000, update: function (data) { ...; return data.finished; } })
(function () {
  "use strict";
  window.RetagPoll = function (url, opts) {
    var every = opts.every || 1000, retry = opts.retry || 3000;
    function tick() {
      window.Retag.getJSON(url).then(function (data) {
        if (!opts.update(data)) setTimeout(tick, every);
      }).catch(function () { setTimeout(tick, retry); });
    }
    setTimeout(tick, every);
  };
})();
