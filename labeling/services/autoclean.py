"""Automatic cleaning rounds in the app: exclude cluster outliers, retrain, repeat.

The app's twin of ``mlcore.clean.autoclean`` (the library loop), on the app's own objects so that
every step is visible and reversible::

    start_cleaning     check the run (done, with embeddings), create the CleaningRun (queued) and
                       send ``labeling.tasks.train_autoclean`` (the gpu queue: it trains)
    execute_cleaning   in that worker, round r = 1..rounds: cluster each class's train images in
                       the last run's embeddings (mlcore.clean.outliers, given labels of that
                       run's snapshot; each class cut where its core holds 1 - its estimated
                       rate of label errors, or at the configured cluster_threshold), exclude
                       the images outside their class's core
                       (TrainingExclusions with cleaning_run and round: the reversible mechanism
                       of the cluster view), retrain the last run on the task's labels now
                       (services.runs.retrain: a new snapshot, which leaves the excluded images
                       out) and train it here (services.runs.execute_run: lease, heartbeat,
                       progress as for any run). Stops after ``rounds``, or as soon as a round
                       finds no new outlier ("converged").

Each round's record (``CleaningRun.rounds``) holds its run, the exclusions it made per class, the
cut of each class that chose them and the run's test macro-F1 (the test split is never excluded: it is what the rounds are judged by).
Exclusions accumulate: an image left out is not in the next run's embeddings, so it stays out
until someone restores it (:func:`restore_cleaning`, or per class in the cluster view).

Calling :func:`execute_cleaning` again (a redelivered message, a worker that died) continues
from the last recorded round: a round whose run finished is not redone; a round whose run is
still queued is trained (execute_run returns at once when another live worker holds it).
"""
from __future__ import annotations

import logging

import numpy as np
from django.db import transaction
from django.db.models import Count
from django.utils import timezone

from mlcore import storage
from mlcore.config import Option, check_value

from ..models import CleaningRun, Label, Prediction, TrainingExclusion, TrainingRun
from . import runs as run_svc
from .enqueue import send
from .suspects import exclude_images, restore_exclusions

logger = logging.getLogger(__name__)
State = CleaningRun.State
MAX_ROUNDS = 10
DEFAULT_ROUNDS = 3


class CleaningError(ValueError):
    """Cleaning cannot start (run not done, no embeddings, bad number of rounds...)."""


# Checked as training options are (mlcore.config.check_value): an integer is an integer, not
# true or 1.5; the message names the field and the rule, never the value.
ROUNDS = Option("rounds", int, DEFAULT_ROUNDS, False, "cleaning rounds", 1, MAX_ROUNDS, None, None, ())
CUT = Option("cluster_threshold", float, None, True, "one cosine cut for every class", 0.0, 2.0, None, None, ())


def validate(config: dict | None) -> dict:
    given = dict(config or {})
    unknown = sorted(set(given) - {"rounds", "cluster_threshold"})
    if unknown:
        raise CleaningError(f"unknown field(s) {', '.join(unknown)}; known: cluster_threshold, rounds")
    out = {}
    for o in (ROUNDS, CUT):
        value = given.get(o.name)
        try:
            out[o.name] = o.default if value in (None, "") else check_value(o, value)
        except ValueError as e:
            raise CleaningError(f"{o.name} {e}") from None
    cut = out["cluster_threshold"]
    if cut is not None and not 0 < cut <= 2:  # also NaN
        raise CleaningError("cluster_threshold is a cosine distance in (0, 2]")
    return out


def start_cleaning(*, run: TrainingRun, by=None, config: dict | None = None, enqueue: bool = True) -> CleaningRun:
    config = validate(config)
    if run.state != TrainingRun.State.DONE:
        raise CleaningError(f"run {run.pk} is {run.state}; cleaning starts from a finished run")
    if not storage.exists(storage.join(run.output_uri, "embeddings.npz")):
        raise CleaningError(f"run {run.pk} has no embeddings.npz")
    active = CleaningRun.objects.filter(task_id=run.task_id, state__in=(State.QUEUED, State.RUNNING)).first()
    if active is not None:
        raise CleaningError(f"cleaning {active.pk} of this task is still {active.state}; one at a time")
    with transaction.atomic():
        job = CleaningRun.objects.create(project_id=run.project_id, task_id=run.task_id, run=run, config=config,
                                         created_by=by)
        if enqueue:
            transaction.on_commit(lambda: _send(job.pk))
    return job


def _send(job_id: int) -> None:
    send("train_autoclean", job_id, fail=lambda reason: _fail(job_id, reason))


def _fail(job_id: int, reason: str) -> None:
    CleaningRun.objects.filter(pk=job_id).exclude(state__in=CleaningRun.FINAL_STATES).update(
        state=State.FAILED, state_reason=reason[:2000], finished_at=timezone.now())


def outliers(run: TrainingRun, threshold: float | None = None) -> tuple[dict[int, int], dict[int, float]]:
    """The run's train images outside their class's core cluster, in the run's embeddings and
    with the labels of its snapshot: ({image_id: label id}, {label id: the class's cut}).

    ``threshold`` None: each class cut where its core holds 1 - its estimated rate of label
    errors (``mlcore.clean.outliers``); a number: that cosine cut for every class."""
    from mlcore.clean import outliers as core_outliers

    from .run_results import image_ids_for

    emb = storage.read_npz(storage.join(run.output_uri, "embeddings.npz"))
    ids = image_ids_for(run, emb["uri"])
    given = dict(Prediction.objects.filter(run=run, split="train", given_label__isnull=False)
                 .values_list("image_id", "given_label_id"))
    rows = [i for i, image_id in enumerate(ids.tolist()) if image_id in given]
    if len(rows) < 2:
        return {}, {}
    label_ids = sorted({given[int(ids[i])] for i in rows})
    index = {label_id: j for j, label_id in enumerate(label_ids)}
    labels = np.asarray([index[given[int(ids[i])]] for i in rows], dtype=np.int64)
    out, cuts = core_outliers(emb["emb"][rows], labels, threshold=threshold, num_classes=len(label_ids))
    return ({int(ids[rows[j]]): label_ids[labels[j]] for j in np.flatnonzero(out)},
            {label_id: float(cuts[j]) for label_id, j in index.items() if np.isfinite(cuts[j])})


def _round_record(r: int, run: TrainingRun, made: dict[int, int], total: int, names: dict,
                  cuts: dict[int, float] | None = None) -> dict:
    """``cuts``: the cut of each class that chose this round's exclusions (in the last run's embeddings)."""
    per = {}
    for label_id in made.values():
        per[names.get(label_id, str(label_id))] = per.get(names.get(label_id, str(label_id)), 0) + 1
    return {"round": r, "run": run.pk, "newly_excluded": len(made), "excluded": total, "excluded_per_class": per,
            "cuts": {names.get(k, str(k)): round(v, 4) for k, v in (cuts or {}).items()},
            "test_macro_f1": run.test_macro_f1, "state": run.state}


def execute_cleaning(job_id: int, *, worker: str | None = None) -> CleaningRun | None:
    """Run (or continue) the rounds here; see the module docstring."""
    with transaction.atomic():
        job = CleaningRun.objects.select_for_update().select_related("run", "task").filter(pk=job_id).first()
        if job is None or job.state in CleaningRun.FINAL_STATES:
            return job
        if job.state == State.QUEUED:
            job.state, job.started_at = State.RUNNING, timezone.now()
            job.save(update_fields=["state", "started_at"])
    names = dict(Label.objects.filter(task_id=job.task_id).values_list("pk", "name"))
    try:
        if not job.rounds:
            job.rounds = [_round_record(0, job.run, {}, 0, names)]
            job.save(update_fields=["rounds"])
        while True:
            last = job.rounds[-1]
            run = TrainingRun.objects.get(pk=last["run"])
            if run.state in TrainingRun.ACTIVE_STATES:
                run = run_svc.execute_run(run.pk, worker=worker) or run
                run.refresh_from_db()
            if run.state != TrainingRun.State.DONE:
                if run.state in TrainingRun.ACTIVE_STATES:  # another worker holds it: it will call us again
                    return job
                _fail(job.pk, f"round {last['round']}: run {run.pk} {run.state}: {run.state_reason}")
                break
            last.update(test_macro_f1=run.test_macro_f1, state=run.state)
            job.save(update_fields=["rounds"])
            if last["round"] >= job.config["rounds"]:
                _finish(job, "rounds")
                break
            r = last["round"] + 1
            found, cuts = outliers(run, job.config.get("cluster_threshold"))
            already = set(TrainingExclusion.objects.filter(task_id=job.task_id, active=True, image_id__in=list(found))
                          .values_list("image_id", flat=True))
            new = {i: c for i, c in found.items() if i not in already}
            if not new:
                _finish(job, "converged")
                break
            exclude_images(job.task, new, reason=f"cleaning {job.pk} round {r}", by=job.created_by,
                           cleaning_run=job, round=r)
            nxt = run_svc.retrain(run, by=job.created_by, enqueue=False)
            total = TrainingExclusion.objects.filter(cleaning_run=job, active=True).count()
            job.rounds = [*job.rounds, _round_record(r, nxt, new, total, names, cuts)]
            job.save(update_fields=["rounds"])
            logger.info("cleaning %s round %s: %s outliers left out, run %s", job.pk, r, len(new), nxt.pk)
    except Exception as e:  # noqa: BLE001 - every failure is shown on the cleaning page
        logger.exception("cleaning %s failed", job_id)
        _fail(job.pk, f"{type(e).__name__}: {e}")
    job.refresh_from_db()
    return job


def _finish(job: CleaningRun, stopped: str) -> None:
    job.state, job.stopped, job.finished_at = State.DONE, stopped, timezone.now()
    job.save(update_fields=["state", "stopped", "finished_at"])


def restore_cleaning(job: CleaningRun, *, round: int | None = None) -> int:
    """Put back the images a cleaning run left out (all rounds, or one of its rounds 1..N)."""
    made = [r["round"] for r in job.rounds if r["round"] >= 1]
    if round is not None and round not in made:
        raise CleaningError(f"cleaning {job.pk} has no round {round} that left images out"
                            + (f"; its rounds: {', '.join(map(str, made))}" if made else ""))
    qs_ids = TrainingExclusion.objects.filter(cleaning_run=job, active=True)
    if round is not None:
        qs_ids = qs_ids.filter(round=round)
    return restore_exclusions(job.task, image_ids=list(qs_ids.values_list("image_id", flat=True)))


def summary(job: CleaningRun) -> dict:
    """The page's table: rounds with their exclusions still active per round."""
    active = dict(TrainingExclusion.objects.filter(cleaning_run=job, active=True).values_list("round")
                  .annotate(n=Count("id")).order_by())
    live = dict(TrainingRun.objects.filter(pk__in=[r["run"] for r in job.rounds]).values_list("pk", "state"))
    rows = [{**r, "state": live.get(r["run"], r.get("state")), "still_excluded": active.get(r["round"], 0)}
            for r in job.rounds]  # a round's run state as it is now, not as it was when the round began
    scored = [r for r in rows if r.get("test_macro_f1") is not None]
    best = max(scored, key=lambda r: r["test_macro_f1"])["round"] if len(scored) > 1 else None
    return {"id": job.pk, "state": job.state, "state_reason": job.state_reason, "stopped": job.stopped,
            "config": job.config, "run": job.run_id, "rounds": rows, "best_round": best,
            "still_excluded": sum(active.values()), "finished": job.state in CleaningRun.FINAL_STATES}
