"""Tasks and their ordered labels."""
from __future__ import annotations

from django.db import transaction
from django.db.models import Max

from ..models import Label, Project, Task


def project_tasks(project: Project):
    """The tasks people see in a project, in the project's task order: the order they were
    created in (a manifest's columns, the demo's list), which the grid's first task and the
    image page's facets follow. Truth tasks are hidden (services.suspect_quality)."""
    return project.tasks.filter(truth_of__isnull=True).order_by("id")


def get_or_create_task(project: Project, name: str) -> Task:
    name = name.strip()
    if not name:
        raise ValueError("a task needs a name")
    task, _ = Task.objects.get_or_create(project=project, name=name)
    return task


def ensure_labels(task: Task, names) -> dict[str, Label]:
    """Labels by name, creating missing ones at the end of the task's order."""
    wanted = list(dict.fromkeys(n.strip() for n in names if n and n.strip()))
    found = {lb.name: lb for lb in Label.objects.filter(task=task, name__in=wanted)}
    missing = [n for n in wanted if n not in found]
    if missing:
        with transaction.atomic():
            start = (Label.objects.filter(task=task).aggregate(m=Max("position"))["m"] or 0) + 1
            for i, name in enumerate(missing):
                found[name], _ = Label.objects.get_or_create(task=task, name=name,
                                                             defaults={"position": start + i})
    return found


@transaction.atomic
def reorder_labels(task: Task, label_ids: list[int]) -> list[Label]:
    """Set the task's label order; ``label_ids`` must name each of its labels once."""
    labels = {lb.id: lb for lb in Label.objects.select_for_update().filter(task=task)}
    if sorted(label_ids) != sorted(labels):
        raise ValueError("the new order must list every label of the task exactly once")
    for position, label_id in enumerate(label_ids, start=1):
        labels[label_id].position = position
    Label.objects.bulk_update(labels.values(), ["position"])
    return [labels[i] for i in label_ids]


def ordered_labels(task: Task) -> list[Label]:
    return list(Label.objects.filter(task=task).order_by("position", "id"))


# --- the key that picks each label ------------------------------------------------------
# Every page that retags by key (the image page, the prediction grids, the suspects queue,
# the cluster view) shows and reads these, in the task's label order: 1..9, 0, then the
# letters that none of those pages uses for anything else (their shortcuts are a g h j k l
# n o p s t z, and T, ?, + - =), then the same run again behind one more ";" per round
# (";1", ";2" ... ";;1"): no key is the start of another, so a chord is never ambiguous.
SINGLE_KEYS = tuple("1234567890bcdefimqruvwxy")
CHORD_PREFIX = ";"


def label_key(index: int) -> str:
    """The key of the label at ``index`` (0-based) in its task's order."""
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise ValueError(f"a label index is a whole number >= 0, not {index!r}")
    rounds, i = divmod(index, len(SINGLE_KEYS))
    return CHORD_PREFIX * rounds + SINGLE_KEYS[i]
