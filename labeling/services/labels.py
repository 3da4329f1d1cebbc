"""Tasks and their ordered labels."""
from __future__ import annotations

import uuid
from dataclasses import dataclass

from django.db import transaction
from django.db.models import Count, Max

from ..models import EventSource, Label, LabelEvent, Project, Task
from .retag import relabel_images


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


# --- editing labels: add, rename, merge (and take a merge back) -------------------------------

MERGE_PREFIX = "label merge "  # LabelEvent.reference of a merge's events: "label merge <token>: A -> B"
UNDO_PREFIX = "undo of "


class LabelError(ValueError):
    """A label edit that cannot be done, with the reason (the page says it; the API answers 400)."""


def _clean_name(task: Task, name, *, except_id: int | None = None) -> str:
    name = (name or "").strip() if isinstance(name, str) else ""
    if not name:
        raise LabelError("a label needs a name")
    if len(name) > Label._meta.get_field("name").max_length:
        raise LabelError(f"a label name has at most {Label._meta.get_field('name').max_length} characters")
    if "\x00" in name or any(ord(ch) < 32 for ch in name):
        raise LabelError("a label name has no control characters")
    clash = Label.objects.filter(task=task, name__iexact=name).exclude(id=except_id).first()
    if clash is not None:
        raise LabelError(f"task {task.name!r} already has a label {clash.name!r}")
    return name


def add_label(task: Task, name: str) -> Label:
    """A new label at the end of the task's order."""
    name = _clean_name(task, name)
    with transaction.atomic():
        position = (Label.objects.filter(task=task).aggregate(m=Max("position"))["m"] or 0) + 1
        return Label.objects.create(task=task, name=name, position=position)


def rename_label(label: Label, name: str) -> Label:
    """A new name for the same label: its images, events and runs keep pointing at it.
    (Runs already trained keep the names of their snapshot.)"""
    label.name = _clean_name(label.task, name, except_id=label.id)
    label.save(update_fields=["name"])
    return label


@dataclass
class MergeResult:
    reference: str
    moved: int                   # images whose label changed
    skipped: int = 0             # (undo only) images changed again since the merge: left as they are


def merge_labels(*, source: Label, target: Label, by=None) -> MergeResult:
    """Retag every image labelled ``source`` to ``target``, one event per image (source
    ``rule``, reference ``label merge <token>: A -> B``), in one transaction. ``source``
    stays, empty, so that :func:`undo_merge` can put the images back."""
    if source.task_id != target.task_id:
        raise LabelError("both labels must belong to the same task")
    if source.id == target.id:
        raise LabelError("a label cannot be merged into itself")
    reference = f"{MERGE_PREFIX}{uuid.uuid4().hex[:12]}: {source.name} -> {target.name}"[:200]
    moved = relabel_images(task=source.task, from_label=source, to_label=target, by=by, reference=reference)
    return MergeResult(reference, moved)


def merges(task: Task, limit: int = 10) -> list[dict]:
    """The task's latest merges, newest first: reference, when, by whom, how many images,
    and whether they were taken back."""
    rows = (LabelEvent.objects.filter(task=task, source=EventSource.RULE, reference__startswith=MERGE_PREFIX)
            .values("reference").annotate(n=Count("id"), at=Max("created_at"), by=Max("by__username"))
            .order_by("-at")[:limit])
    undone = set(LabelEvent.objects.filter(task=task, source=EventSource.RULE,
                                           reference__in=[UNDO_PREFIX + r["reference"] for r in rows])
                 .values_list("reference", flat=True).distinct())
    return [dict(r, undone=UNDO_PREFIX + r["reference"] in undone) for r in rows]


def undo_merge(*, task: Task, reference: str, by=None) -> MergeResult:
    """Put back the images a merge moved, each as an event of its own. An image retagged
    again since the merge keeps its newer label (counted in ``skipped``): nothing a person
    did after the merge is overwritten."""
    if not isinstance(reference, str) or not reference.startswith(MERGE_PREFIX):
        raise LabelError("not a label merge")
    undo_ref = (UNDO_PREFIX + reference)[:200]
    with transaction.atomic():
        events = list(LabelEvent.objects.select_for_update().filter(task=task, source=EventSource.RULE,
                                                                      reference=reference))
        if not events:
            raise LabelError("no such merge in this task")
        if LabelEvent.objects.filter(task=task, reference=undo_ref).exists():
            raise LabelError("this merge was already taken back")
        source_id, target_id = events[0].from_label_id, events[0].to_label_id
        last = max(e.id for e in events)
        changed_since = set(LabelEvent.objects.filter(task=task, image_id__in=[e.image_id for e in events], id__gt=last)
                            .values_list("image_id", flat=True))
        back = [e.image_id for e in events if e.image_id not in changed_since]
        moved = relabel_images(task=task, from_label=Label.objects.get(id=target_id),
                               to_label=Label.objects.get(id=source_id), by=by, reference=undo_ref,
                               image_ids=back)
    return MergeResult(undo_ref, moved, skipped=len(events) - moved)


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
