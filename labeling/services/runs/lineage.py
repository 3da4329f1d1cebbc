"""Where a run comes from and how it relates to the task's other runs: the code version
and worker it records, the task's main runs, the latest and active one, the run another is
compared with, the human retags between two runs, and how its test set moved since."""
from __future__ import annotations

import os
import re
import socket
import subprocess
from functools import lru_cache

from django.conf import settings
from django.db.models import F, Q

from ...models import HUMAN_SOURCES, LabelEvent, Split, Task, TrainingRun
from ..labels import ordered_labels

State = TrainingRun.State


@lru_cache(maxsize=1)
def code_version() -> str:
    """``git describe`` of the checkout when there is one, else $RETAG_VERSION, else the app's version."""
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty", "--tags"], cwd=settings.BASE_DIR,
                             capture_output=True, text=True, timeout=5)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()[:64]
    except (OSError, subprocess.SubprocessError):
        pass
    return (os.environ.get("RETAG_VERSION") or f"retag {settings.SPECTACULAR_SETTINGS.get('VERSION', '?')}")[:64]


def default_worker_id(node: str | None = None) -> str:
    """``<celery node> pid <pid> on <machine>``: the pid and machine let a worker on the same
    machine tell that a holder died (a killed pool process) without waiting for staleness."""
    return f"{node or 'local'} pid {os.getpid()} on {socket.gethostname()}"[:200]


_WORKER_RE = re.compile(r" pid (\d+) on (\S+)$")


def holder_dead(worker: str) -> bool:
    """True only when the holder is a process on this machine that no longer exists."""
    m = _WORKER_RE.search(worker or "")
    if not m or m.group(2) != socket.gethostname():
        return False
    pid = int(m.group(1))
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


# --------------------------------------------------------------------------- queries (lineage)
#
# A suspects run's K fold models are TrainingRuns (leases, progress, resume apply to them),
# but they are not training runs of the task: they train on part of the train split, often
# for fewer epochs. ``TrainingRun.fold_of`` marks them and ``TrainingRun.objects.main()``
# leaves them out, so a fold is never "the latest run", never a baseline to compare with,
# never in a run list or F1 over runs.

def main_runs(task: Task):
    """The task's own training runs (no fold models)."""
    return TrainingRun.objects.main().filter(task=task)


def latest_finished_run(task: Task) -> TrainingRun | None:
    """The task's most recent training run that finished successfully (the dashboard's default,
    the image page's predictions); never a suspects fold model."""
    return main_runs(task).filter(state=State.DONE).order_by(
        F("finished_at").desc(nulls_last=True), "-id").first()


def active_run(task: Task) -> TrainingRun | None:
    """A queued or running training run of the task, if any (newest; fold models are the
    suspects run's business and do not count)."""
    return main_runs(task).filter(state__in=TrainingRun.ACTIVE_STATES).order_by("-id").first()


def baseline_run(run: TrainingRun) -> TrainingRun | None:
    """The run ``run`` is compared with: the run it retrains (its parent) when that finished,
    else the previous finished training run of the task (started before it). Never a fold
    model, and None for a fold model itself (its numbers are about a part of the split)."""
    if run.fold_of_id is not None:
        return None
    parent = run.parent if run.parent_id else None
    if parent is not None and parent.fold_of_id is None and parent.state == State.DONE:
        return parent
    return (main_runs(run.task).filter(state=State.DONE)
            .filter(Q(created_at__lt=run.created_at) | Q(created_at=run.created_at, id__lt=run.id))
            .exclude(id=run.id).order_by("-created_at", "-id").first())


def retags_between(run_a: TrainingRun, run_b: TrainingRun) -> int:
    """Human retags (annotators, MTurk) of the task made between the two runs' snapshots,
    in either order of the arguments: what a retag round changed between two runs."""
    a, b = sorted([run_a.snapshot_at or run_a.created_at, run_b.snapshot_at or run_b.created_at])
    return LabelEvent.objects.filter(task_id=run_b.task_id, source__in=HUMAN_SOURCES,
                                     created_at__gt=a, created_at__lte=b).count()


def retags_since(run: TrainingRun) -> int:
    """Human retags of the run's task since its snapshot."""
    return LabelEvent.objects.filter(task_id=run.task_id, source__in=HUMAN_SOURCES,
                                     created_at__gt=run.snapshot_at or run.created_at).count()


def changed_test_labels(run: TrainingRun) -> dict:
    """How the run's test set moved since its snapshot: the test images whose label today is
    not the one they had then, and the net change of each label's count (a retag from the
    grids moves the next run's support: 100 -> 102 / 98).

    Read from the label events since the snapshot (any source: an import that relabels
    moves the test set too), never from the run's predictions: an image's label at the
    snapshot is the ``from`` of its first event since, its label today the ``to`` of its
    last one, so A -> B -> A is no change. Costs the events since the snapshot, nothing per
    test image. ``{"images": n, "labels": [{"name", "delta"}]}``, labels in the task's order.
    """
    first_from, last_to = {}, {}
    events = (LabelEvent.objects.filter(task_id=run.task_id, image__split=Split.TEST,
                                        created_at__gt=run.snapshot_at or run.created_at)
              .order_by("created_at", "id").values_list("image_id", "from_label_id", "to_label_id"))
    for image_id, from_id, to_id in events.iterator():
        first_from.setdefault(image_id, from_id)
        last_to[image_id] = to_id
    delta = {}
    changed = [i for i in last_to if last_to[i] != first_from[i]]
    for image_id in changed:
        delta[first_from[image_id]] = delta.get(first_from[image_id], 0) - 1
        delta[last_to[image_id]] = delta.get(last_to[image_id], 0) + 1
    labels = [{"name": lb.name, "delta": delta[lb.id]} for lb in ordered_labels(run.task) if delta.get(lb.id)]
    if delta.get(None):
        labels.append({"name": "no label", "delta": delta[None]})
    return {"images": len(changed), "labels": labels}
