"""Starting, retraining and cancelling runs: what the browser, the API and ``manage.py
train`` ask for. The worker's side is services.runs.execute."""
from __future__ import annotations

import logging
import time

from django.db import transaction
from django.utils import timezone

from ...models import Annotation, ImageStatus, Task, TrainingRun
from ..enqueue import send
from ..projects import project_storage_uri
from .config import RunConfigError, validate_config
from .lineage import code_version

logger = logging.getLogger(__name__)
State = TrainingRun.State
Trigger = TrainingRun.Trigger


class RunStateError(ValueError):
    """The run is not in a state that allows this (cancel a finished run...)."""


def start_training_run(*, task: Task, config: dict | None, by=None, parent: TrainingRun | None = None,
                       trigger: str = Trigger.MANUAL, enqueue: bool = True) -> TrainingRun:
    """Check the config, snapshot the task's labels, create the run and queue it on the gpu queue.

    Raises :class:`RunConfigError` (nothing created) for a bad config or a task without
    labelled training images. ``enqueue=False`` leaves the queued run for the caller to
    :func:`execute_run` itself (tests, ``manage.py train --here``).
    """
    from ..manifests import build_training_manifest

    config = validate_config(config, task=task)
    labels = list(task.labels.order_by("position", "id").values_list("id", "name"))
    if len(labels) < 2:
        raise RunConfigError({"task": f"task {task.name!r} needs at least two labels to train"})
    if not Annotation.objects.filter(task=task, label__isnull=False, image__split="train",
                                     image__status=ImageStatus.OK).exists():
        raise RunConfigError({"task": f"task {task.name!r} has no labelled, usable training images"})
    t0 = time.perf_counter()
    snapshot_at = timezone.now()
    manifest = build_training_manifest(task)
    ids_by_name = dict((name, i) for i, name in labels)
    missing = [n for n in manifest.labels if n not in ids_by_name]
    if missing:  # a label renamed between the two reads: rare, and the user can start again
        raise RunConfigError({"task": f"labels changed while the snapshot was taken ({missing}); try again"})
    with transaction.atomic():
        run = TrainingRun.objects.create(
            project_id=task.project_id, task=task, config=config, manifest_uri=manifest.uri,
            manifest_sha256=manifest.sha256, label_ids=[ids_by_name[n] for n in manifest.labels],
            label_names=list(manifest.labels), n_train=manifest.counts.get("train", 0),
            n_test=manifest.counts.get("test", 0), snapshot_at=snapshot_at, parent=parent, created_by=by,
            trigger=trigger, code_version=code_version(),
            timings={"snapshot_s": round(time.perf_counter() - t0, 3)})
        run.output_uri = project_storage_uri(task.project, "runs", str(run.id))
        run.save(update_fields=["output_uri"])
        if enqueue:
            transaction.on_commit(lambda: enqueue_run(run.id))
    logger.info("run %s queued: task %s, %s train / %s test images, snapshot %s", run.id, task, run.n_train,
                run.n_test, manifest.sha256[:12])
    return run


def enqueue_run(run_id: int) -> None:
    """Send the run to the gpu queue; a broker that cannot be reached fails the run with the reason."""
    send("train_run", run_id, fail=lambda reason: TrainingRun.objects.filter(pk=run_id, state=State.QUEUED).update(
        state=State.FAILED, state_reason=reason, finished_at=timezone.now()))


def retrain(run: TrainingRun, by=None, *, trigger: str = Trigger.RETRAIN, enqueue: bool = True) -> TrainingRun:
    """A new run with ``run``'s config on the task's current labels (a new snapshot); parent=run.
    A suspects fold model is not retrained: it is a part of its suspects run."""
    if run.fold_of_id is not None:
        raise RunStateError(f"run {run.pk} is a fold model of suspects run {run.fold_of_id}; retrain run "
                            f"{run.parent_id} instead")
    return start_training_run(task=run.task, config=run.config, by=by, parent=run, trigger=trigger,
                              enqueue=enqueue)


def cancel_run(run: TrainingRun, by=None) -> TrainingRun:
    """Cancel a run: a queued one at once, a running one at the worker's next step.

    Raises :class:`RunStateError` for a finished run.
    """
    who = getattr(by, "username", None) or "someone"
    with transaction.atomic():
        locked = TrainingRun.objects.select_for_update().get(pk=run.pk)
        if locked.state == State.QUEUED:
            locked.state, locked.finished_at = State.CANCELLED, timezone.now()
            locked.cancel_requested = True
            locked.state_reason = f"cancelled by {who} before it started"
            locked.save(update_fields=["state", "finished_at", "cancel_requested", "state_reason"])
        elif locked.state == State.RUNNING:
            locked.cancel_requested = True
            locked.state_reason = f"cancel requested by {who}"
            locked.save(update_fields=["cancel_requested", "state_reason"])
        else:
            raise RunStateError(f"run {run.pk} is {locked.state}; only queued or running runs can be cancelled")
    run.refresh_from_db()
    return run
