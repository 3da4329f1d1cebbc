"""One image as its page shows it: its facets (each task's labels and the current one)
and its history."""
from __future__ import annotations

from dataclasses import dataclass

from ...models import Annotation, Image, Label, LabelEvent, Task
from ..labels import project_tasks
from ..retag import source_badge


@dataclass
class Facet:
    task: Task
    labels: list[Label]  # in the task's order; key 1 picks labels[0]
    current: Label | None
    version: int  # 0: no annotation yet
    verified: bool


def facets(image: Image) -> list[Facet]:
    """Each task of the image's project with its ordered labels and the image's current label."""
    tasks = list(project_tasks(image.project).prefetch_related("labels"))
    notes = {a.task_id: a for a in Annotation.objects.filter(image=image).select_related("label")}
    out = []
    for t in tasks:
        a = notes.get(t.id)
        labels = sorted(t.labels.all(), key=lambda lb: (lb.position, lb.id))
        out.append(Facet(task=t, labels=labels, current=a.label if a else None,
                         version=a.version if a else 0, verified=bool(a and a.verified)))
    return out


def history(image: Image, limit: int = 500) -> list[LabelEvent]:
    """The image's label events, newest first, with who/from/to ready to show."""
    return list(LabelEvent.objects.filter(image=image, task__truth_of__isnull=True)  # truth tasks: hidden
                .select_related("task", "from_label", "to_label", "by")
                .prefetch_related("by__groups")  # the source badge names the retagger's role
                .order_by("-created_at", "-id")[:limit])


def event_row(e: LabelEvent) -> dict:
    """A history row as plain data (for the JSON the image page reads after a retag)."""
    badge = source_badge(e)
    return {
        "id": e.id,
        "task": e.task.name,
        "from": e.from_label.name if e.from_label_id else None,
        "to": e.to_label.name if e.to_label_id else None,
        "by": e.by.get_username() if e.by_id else None,
        "source": badge.text,
        "source_key": badge.key,
        "reference": e.reference,
        "when": e.created_at.isoformat(),
    }
