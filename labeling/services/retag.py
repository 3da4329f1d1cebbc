"""Changing a label: the one way annotations change, always with a LabelEvent.

Retags are optimistic: the caller says which annotation version it saw. If someone
changed the label in between, :class:`RetagConflict` is raised (the API and pages
answer 409) and nothing is written. A person's retag (annotator, Mechanical Turk)
always carries that version: the service refuses one without it, so no page, API
route or task can overwrite a concurrent retag by forgetting to send it.
"""
from __future__ import annotations

from dataclasses import dataclass

from django.db import transaction

from ..models import HUMAN_SOURCES, Annotation, EventSource, Image, Label, LabelEvent, Task
from ..signals import human_retag


class RetagError(ValueError):
    """The retag asks for something impossible (a label of another task...)."""


class RetagConflict(Exception):
    """The annotation changed since the caller saw it."""

    def __init__(self, annotation: Annotation | None, expected_version: int):
        self.annotation = annotation
        self.expected_version = expected_version
        current = annotation.version if annotation else 0
        label = annotation.label.name if annotation and annotation.label_id else None
        super().__init__(
            f"the label changed since you saw it (you saw version {expected_version}, "
            f"it is now version {current}: {label!r})")


# Sources that may retag without a version: they sync a label from elsewhere (an import
# that already compares with what it set last, a rule) and are not a person's choice.
UNVERSIONED_SOURCES = frozenset({EventSource.IMPORT, EventSource.RULE})


@dataclass
class RetagResult:
    annotation: Annotation
    event: LabelEvent | None  # None when the label was already the asked one


def current_version(image: Image, task: Task) -> int:
    """0 when the image has no annotation for the task yet."""
    return Annotation.objects.filter(image=image, task=task).values_list("version", flat=True).first() or 0


@transaction.atomic
def retag_image(*, image: Image, task: Task, label: Label | None, by=None,
                expected_version: int | None, source: str = EventSource.ANNOTATOR,
                reference: str = "") -> RetagResult:
    """Set ``image``'s label for ``task`` and record who did it.

    ``expected_version`` is the annotation version the caller saw (0 for "no label
    yet"). ``None`` skips the check and is accepted only from the sources in
    :data:`UNVERSIONED_SOURCES` (imports, rules); a person's retag without it raises
    :class:`RetagError`. Setting the label it already has records nothing but marks it
    verified when a person did it.
    """
    if expected_version is None:
        if source not in UNVERSIONED_SOURCES:
            raise RetagError(f"a retag from {getattr(source, 'value', source)!r} needs the version of the label it saw (expected_version)")
    elif isinstance(expected_version, bool) or not isinstance(expected_version, int) or expected_version < 0:
        raise RetagError(f"expected_version is a whole number >= 0, not {expected_version!r}")
    if task.project_id != image.project_id:
        raise RetagError(f"task {task.name!r} belongs to another project")
    if label is not None and label.task_id != task.id:
        raise RetagError(f"label {label.name!r} is not a label of task {task.name!r}")

    # Lock the image row: concurrent retags of one image (even its first label) queue up.
    list(Image.objects.select_for_update().filter(pk=image.pk).values_list("pk", flat=True))
    annotation = Annotation.objects.select_related("label").filter(image=image, task=task).first()
    seen = annotation.version if annotation else 0
    if expected_version is not None and expected_version != seen:
        raise RetagConflict(annotation, expected_version)

    human = source in HUMAN_SOURCES
    if annotation and annotation.label_id == (label.id if label else None):
        if human and not annotation.verified:
            annotation.verified = True
            annotation.updated_by = by
            annotation.save(update_fields=["verified", "updated_by", "updated_at"])
        return RetagResult(annotation, None)

    from_label = annotation.label if annotation else None
    if annotation is None:
        annotation = Annotation(image=image, task=task, version=0)
    annotation.label = label
    annotation.version += 1
    annotation.verified = human
    annotation.updated_by = by
    annotation.save()
    event = LabelEvent.objects.create(
        image=image, task=task, from_label=from_label, to_label=label, by=by,
        source=source, reference=reference)
    if human:
        human_retag.send(sender=retag_image, task=task)  # automatic retraining listens (labeling.signals)
    return RetagResult(annotation, event)
