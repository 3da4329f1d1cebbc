"""The annotators' keyboard queue of a suspects run: leases, resolving, counts.

Annotators lease the best open suspect (``select_for_update(skip_locked=True)`` and
``lease_until``), so several annotators never get the same image at the same time; an
expired lease frees the suspect. :func:`resolve` retags through services.retag with the
annotation version the page saw (409 rule).
"""
from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Count, Exists, OuterRef, Q
from django.utils import timezone

from ...models import Annotation, Label, Suspect, SuspectRun
from ..retag import retag_image

Status = Suspect.Status


def lease_seconds() -> float:
    """How long an annotator holds a suspect they were shown (SUSPECT_LEASE_S, default 5 minutes)."""
    return settings.SUSPECT_LEASE_S



class SuspectResolved(Exception):
    """The suspect was already resolved (by someone else, or a second keypress)."""

    def __init__(self, suspect: Suspect):
        self.suspect = suspect
        who = suspect.resolved_by.get_username() if suspect.resolved_by_id else "someone"
        super().__init__(f"this suspect was already {suspect.status} by {who}")



def queue(sr: SuspectRun):
    """Open suspects still current: the label is the scored one and nobody confirmed it since."""
    current = Annotation.objects.filter(image_id=OuterRef("image_id"), task_id=OuterRef("task_id"),
                                        version=OuterRef("version"), verified=False)
    return Suspect.objects.filter(suspect_run=sr, status=Status.OPEN).filter(Exists(current))


def lease_next(sr: SuspectRun, user, *, now=None) -> Suspect | None:
    """The suspect ``user`` should look at now: the one they hold, else the best one nobody
    holds (or whose lease expired), leased to them. Concurrent callers skip each other's rows."""
    now = now or timezone.now()
    until = now + timedelta(seconds=lease_seconds())
    with transaction.atomic():
        mine = queue(sr).filter(lease_holder=user, lease_until__gt=now).select_for_update(
            skip_locked=True).order_by("-score", "rank", "id").first()
        if mine is None:
            mine = queue(sr).filter(Q(lease_until__isnull=True) | Q(lease_until__lte=now) | Q(lease_holder=user)) \
                .select_for_update(skip_locked=True).order_by("-score", "rank", "id").first()
        if mine is None:
            return None
        mine.lease_holder, mine.lease_until = user, until
        mine.save(update_fields=["lease_holder", "lease_until"])
    return Suspect.objects.select_related("image", "given_label", "suggested_label", "suspect_run").get(pk=mine.pk)


def release(suspect: Suspect, user) -> None:
    Suspect.objects.filter(pk=suspect.pk, lease_holder=user).update(lease_holder=None, lease_until=None)


ACTIONS = ("accept", "keep", "label", "skip")


def resolve(suspect: Suspect, *, user, action: str, label: Label | None = None,
            expected_version: int | None) -> Suspect:
    """Accept the suggestion, keep the label (marks it verified), set another ``label``, or skip.

    Raises :class:`~labeling.services.retag.RetagConflict` when the label changed since the
    page saw ``expected_version`` (nothing written), :class:`SuspectResolved` when someone
    resolved it already, ValueError for a bad action or label.
    """
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}; choose one of {', '.join(ACTIONS)}")
    with transaction.atomic():
        s = Suspect.objects.select_for_update().get(pk=suspect.pk)
        if s.status != Status.OPEN:
            raise SuspectResolved(Suspect.objects.select_related("resolved_by").get(pk=s.pk))
        if action == "skip":
            s.status = Status.SKIPPED
        else:
            if action == "accept":
                target = s.suggested_label
            elif action == "keep":
                ann = Annotation.objects.filter(image_id=s.image_id, task_id=s.task_id).select_related("label").first()
                target = ann.label if ann else s.given_label
            else:
                if label is None or label.task_id != s.task_id:
                    raise ValueError("pick a label of the suspect's task")
                target = label
            result = retag_image(image=s.image, task=s.task, label=target, by=user, expected_version=expected_version,
                                 reference=f"suspects {s.suspect_run_id}")
            s.status = Status.RETAGGED if result.event is not None else Status.KEPT
            s.resolved_label = target
        s.resolved_by, s.resolved_at = user, timezone.now()
        s.lease_holder, s.lease_until = None, None
        s.save(update_fields=["status", "resolved_label", "resolved_by", "resolved_at", "lease_holder", "lease_until"])
    return s


def throughput(sr: SuspectRun, user, since) -> dict:
    """What ``user`` resolved in this run since ``since`` (their session), and per minute."""
    n = Suspect.objects.filter(suspect_run=sr, resolved_by=user, resolved_at__gte=since).count()
    minutes = max((timezone.now() - since).total_seconds() / 60, 1 / 60)
    return {"done": n, "minutes": round(minutes, 2), "per_minute": round(n / minutes, 1) if n else 0.0}


def queue_counts(sr: SuspectRun) -> dict:
    by = dict(Suspect.objects.filter(suspect_run=sr).values_list("status").annotate(n=Count("id")))
    return {"open": queue(sr).count(), **{s: by.get(s, 0) for s in Status.values}}

