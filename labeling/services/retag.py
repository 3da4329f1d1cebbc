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
from django.db.models import F
from django.utils import timezone

from ..models import HUMAN_SOURCES, Annotation, EventSource, Image, Label, LabelEvent, Task
from ..signals import human_retag
from .roles import role_of


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


@dataclass(frozen=True)
class SourceBadge:
    key: str  # the CSS class suffix: import, annotator, scientist, admin, mturk, rule
    text: str


def source_badge(event: LabelEvent) -> SourceBadge:
    """How the history names where a label event came from.

    A retag made in the app (its pages or its API) is recorded with the source
    ``annotator``: a person's choice, whoever made it, which is what the retrain counters
    and the suspect figures count (``HUMAN_SOURCES``). The badge names that person's
    role (annotator, scientist, admin; their role now: the event stores who, not the
    role they held then), so a scientist's retag is not shown as an annotator's. Every
    other source, or an app retag whose user is gone or has no role, shows its source.
    """
    if event.source == EventSource.ANNOTATOR and event.by_id:
        role = role_of(event.by)
        if role:
            return SourceBadge(role, role)
    return SourceBadge(event.source, event.get_source_display())


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


CHUNK = 5000  # ids per statement (SQLite takes at most 32,766 parameters)


@transaction.atomic
def relabel_images(*, task: Task, from_label: Label, to_label: Label, by=None, reference: str,
                   image_ids=None) -> int:
    """The bulk form of :func:`retag_image` for label edits (a merge and its undo): every
    image of ``task`` labelled ``from_label`` (only those of ``image_ids``, if given, that
    still are) gets ``to_label``, its version + 1 and one event of source ``rule``. The
    images are locked as :func:`retag_image` locks them, so a concurrent retag waits and
    then sees the new version (409), never overwrites. Returns how many moved."""
    if from_label.task_id != task.id or to_label.task_id != task.id:
        raise RetagError("both labels must belong to the task")
    qs = Annotation.objects.filter(task=task, label=from_label)
    if image_ids is not None:
        qs = qs.filter(image_id__in=list(image_ids))
    candidates = sorted(qs.values_list("image_id", flat=True))
    moved: list[int] = []
    now = timezone.now()
    for start in range(0, len(candidates), CHUNK):
        chunk = candidates[start:start + CHUNK]
        list(Image.objects.select_for_update().filter(pk__in=chunk).order_by("pk").values_list("pk", flat=True))
        # Re-read under the lock: a retag that committed meanwhile keeps its label.
        still = list(Annotation.objects.filter(task=task, label=from_label, image_id__in=chunk)
                     .values_list("image_id", flat=True))
        Annotation.objects.filter(task=task, image_id__in=still).update(
            label=to_label, version=F("version") + 1, updated_at=now, updated_by=by)
        moved += still
    LabelEvent.objects.bulk_create(
        [LabelEvent(image_id=i, task=task, from_label=from_label, to_label=to_label, by=by,
                    source=EventSource.RULE, reference=reference) for i in moved], batch_size=CHUNK)
    return len(moved)


MAX_BULK = 1000  # images per bulk retag request


@dataclass
class BulkResult:
    changed: list[dict]      # {"image", "version", "label"}: retagged (one event each)
    unchanged: list[dict]    # {"image", "version", "label"}: already had the label (marked verified)
    conflicts: list[dict]    # {"image", "seen", "version", "label"}: changed since the person saw it
    missing: list[int]       # image ids not in the task's project


def retag_many(*, task: Task, label: Label | None, items: list[tuple[int, int]], by=None,
               source: str = EventSource.ANNOTATOR) -> BulkResult:
    """Retag each ``(image id, version seen)`` in ``items`` to ``label``, each image in its
    own transaction through :func:`retag_image` (one event per image, the 409 rule per
    image): a conflict on one image is reported and the others still go through."""
    if len(items) > MAX_BULK:
        raise RetagError(f"at most {MAX_BULK} images per bulk retag, not {len(items)}")
    if label is not None and label.task_id != task.id:
        raise RetagError(f"label {label.name!r} is not a label of task {task.name!r}")
    return _each(task, items, lambda image, seen: retag_image(
        image=image, task=task, label=label, by=by, expected_version=seen, source=source))


UNDO_REFERENCE = "undo"  # the reference of the event an undo writes: the history says so


def undo_retags(*, task: Task, items: list[tuple[int, int]], by=None) -> BulkResult:
    """Take back the retags that gave each ``(image id, version)`` in ``items`` its label:
    ``version`` is what the retag returned. The image goes back to the label it had before
    that retag (the ``from`` of the event that made this version: every version has one),
    as a retag of its own (an event, reference ``undo``) sent with that version, so an image
    someone changed in between is a conflict, reported and left as it is, never overwritten.
    Images of one request may go back to different labels (the undo of a bulk retag)."""
    if len(items) > MAX_BULK:
        raise RetagError(f"at most {MAX_BULK} images per undo, not {len(items)}")
    if any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for _, v in items):
        raise RetagError("each version to undo is the one a retag returned: a whole number >= 1")

    @transaction.atomic
    def undo_one(image: Image, version: int) -> RetagResult:
        # Lock as retag_image does, so the event read is the one of the version it checks.
        list(Image.objects.select_for_update().filter(pk=image.pk).values_list("pk", flat=True))
        last = LabelEvent.objects.filter(image=image, task=task).select_related("from_label").order_by("-id").first()
        return retag_image(image=image, task=task, label=last.from_label if last else None, by=by,
                           expected_version=version, reference=UNDO_REFERENCE)

    return _each(task, items, undo_one)


def _each(task: Task, items: list[tuple[int, int]], retag) -> BulkResult:
    """``retag(image, version)`` for each ``(image id, version)`` of ``items`` (an image
    listed twice counts once, with its last version), each in its own transaction; what
    each did, or why not, goes into one :class:`BulkResult`."""
    images = Image.objects.in_bulk([i for i, _ in items])
    result = BulkResult([], [], [], [])
    for image_id, seen in dict(items).items():
        image = images.get(image_id)
        if image is None or image.project_id != task.project_id:
            result.missing.append(image_id)
            continue
        try:
            r = retag(image, seen)
        except RetagConflict as e:
            a = e.annotation
            result.conflicts.append({"image": image_id, "seen": seen, "version": a.version if a else 0,
                                     "label": a.label_id if a else None})
        else:
            (result.changed if r.event else result.unchanged).append(
                {"image": image_id, "version": r.annotation.version, "label": r.annotation.label_id})
    return result
