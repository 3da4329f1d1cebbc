"""Training runs: start one on a label snapshot, run it in a worker, load what it found.

The life of a run::

    start_training_run  validate the config, write the label snapshot (services.manifests),
                        create the run (queued), queue ``labeling.tasks.train_run`` (gpu queue)
    execute_run         in the worker: claim the run, train it in a child process of its own
                        (mlcore.train.train there; services.run_process says why), load the
                        results (services.run_results), mark it done / failed / cancelled
    cancel_run          queued: cancelled at once; running: the worker stops at its next step
    retrain             the same config on the current labels (a new snapshot), parent=run
    check_stale_runs    periodic: a run whose worker stopped beating is resumed or failed

The modules, one seam each: ``config`` (the config check, on mlcore.config's schema),
``lineage`` (code version, worker ids, which run is latest, baseline, retags between
runs), ``start`` (start, retrain, cancel), ``lease`` (the worker's claim, heartbeats and
the stale-run check; its docstring gives the protocol), ``execute`` (the training process
and the results), ``retraining`` (automatic retraining after human retags). Callers use
the names below as ``runs.X``; a test that replaces a function patches the module that
looks it up (``runs.lease.enqueue_run``).
"""
from .config import ARCHS, KNOWN, RunConfigError, default_config, validate_config
from .execute import execute_run, train_config
from .lease import LeaseLost, RunSession, check_stale_runs, claim_run, max_attempts, stale_after_s
from .lineage import (active_run, baseline_run, changed_test_labels, code_version, default_worker_id,
                      latest_finished_run, retags_between)
from .retraining import maybe_auto_retrain, schedule_auto_retrain
from .start import RunStateError, cancel_run, enqueue_run, retrain, start_training_run

__all__ = [
    "ARCHS", "KNOWN", "LeaseLost", "RunConfigError", "RunSession", "RunStateError", "active_run", "baseline_run",
    "cancel_run", "changed_test_labels", "check_stale_runs", "claim_run", "code_version", "default_config", "default_worker_id",
    "enqueue_run", "execute_run", "latest_finished_run", "max_attempts", "maybe_auto_retrain", "retags_between",
    "retrain", "schedule_auto_retrain", "stale_after_s", "start_training_run", "train_config", "validate_config",
]
