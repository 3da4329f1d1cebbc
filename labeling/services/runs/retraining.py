"""Automatic retraining: a task is retrained on its latest finished run's config when
its project asks for it (``Project.auto_retrain_after`` human retags since the last run)."""
from __future__ import annotations

import logging

from django.db import transaction

from ...models import Project, Task, TrainingRun
from ..enqueue import send_on_commit
from .config import RunConfigError
from .lineage import active_run, latest_finished_run, main_runs, retags_since
from .start import retrain

logger = logging.getLogger(__name__)
Trigger = TrainingRun.Trigger


def maybe_auto_retrain(task: Task, *, enqueue: bool = True) -> TrainingRun | None:
    """Retrain ``task`` when its project asks for it (``Project.auto_retrain_after`` = N) and N
    human retags were made since the task's latest run; returns the new run or None.

    Reuses the config of the latest run that finished (a task never trained successfully is
    not trained automatically). Never piles runs up: nothing starts while a run of the task
    is queued or running, N more retags are needed after any run (a failed one included, so
    that a failing config is not retried on every retag), and the task row is locked so that
    two concurrent retags start one run, not two.
    Call it after retags commit (see :func:`schedule_auto_retrain`).
    """
    n = Project.objects.filter(pk=task.project_id).values_list("auto_retrain_after", flat=True).first()
    if not n:
        return None
    with transaction.atomic():
        Task.objects.select_for_update().filter(pk=task.pk).first()
        if active_run(task) is not None:
            return None
        latest = main_runs(task).order_by("-created_at", "-id").first()
        base = latest_finished_run(task)
        if base is None or retags_since(latest) < n:
            return None
        try:
            run = retrain(base, by=None, trigger=Trigger.AUTO, enqueue=enqueue)
        except RunConfigError as e:
            logger.warning("task %s: automatic retrain not started: %s", task.pk, e)
            return None
    logger.info("task %s: %s retags since run %s; automatic retrain %s", task.pk, n, base.pk, run.pk)
    return run


def schedule_auto_retrain(task: Task) -> None:
    """Cheap hook for after a human retag: when the project retrains automatically, check (in the
    worker, after the retag commits) whether it is time. Does nothing otherwise."""
    if not Project.objects.filter(pk=task.project_id, auto_retrain_after__isnull=False).exists():
        return
    # The retag is saved whatever happens here: a broker that is down only delays the
    # check (the next retag schedules it again), so there is no job to fail.
    send_on_commit("auto_retrain", task.pk)
