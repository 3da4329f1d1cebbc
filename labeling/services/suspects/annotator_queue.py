"""The annotators' keyboard queue of a suspects run: leases, resolving, counts.

Annotators lease the best open suspect (``select_for_update(skip_locked=True)`` and
``lease_until``), so several annotators never get the same image at the same time; an
expired lease frees the suspect. :func:`resolve` retags through services.retag with the
annotation version the page saw (409 rule). A skip settles nothing: the suspect stays open
for the others, and comes back to the one who skipped it once nothing else is left.

An open suspect is *current* while its image's label is the scored one and nobody confirmed
it since (:func:`queue`). The database keeps that on the suspect (``Suspect.current``,
migration 0015, moved by every annotation write), so counting a run's open suspects is an
indexed count of its suspects (:func:`open_counts`), whatever changed since it was scored.
"""
from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Count, Exists, OuterRef, Q
from django.utils import timezone

from ...models import Annotation, Image, Label, LabelEvent, Suspect, SuspectRun
from ..retag import RetagConflict, retag_image

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
    holds (or whose lease expired) and they did not skip last, else one they skipped; leased
    to them. Concurrent callers skip each other's rows."""
    now = now or timezone.now()
    until = now + timedelta(seconds=lease_seconds())
    with transaction.atomic():
        mine = queue(sr).filter(lease_holder=user, lease_until__gt=now).select_for_update(
            skip_locked=True).order_by("-score", "rank", "id").first()
        free = queue(sr).filter(Q(lease_until__isnull=True) | Q(lease_until__lte=now) | Q(lease_holder=user))
        for candidates in (free.exclude(skipped_by=user), free):
            if mine is None:
                mine = candidates.select_for_update(skip_locked=True).order_by("-score", "rank", "id").first()
        if mine is None:
            return None
        mine.lease_holder, mine.lease_until = user, until
        mine.save(update_fields=["lease_holder", "lease_until"])
    return Suspect.objects.select_related("image", "given_label", "suggested_label", "suspect_run").get(pk=mine.pk)


def release(suspect: Suspect, user) -> None:
    Suspect.objects.filter(pk=suspect.pk, lease_holder=user).update(lease_holder=None, lease_until=None)


ACTIONS = ("accept", "keep", "label", "skip")


def _lock_image_of(suspect: Suspect) -> None:
    """Lock the suspect's image before the suspect: a retag locks the image, then its
    annotation's write moves ``current`` on every suspect of the image (migration 0015's
    trigger), in whichever run; taking them in that order here too, two annotators resolving
    the same image in two runs queue up on the image instead of deadlocking."""
    list(Image.objects.select_for_update().filter(pk=suspect.image_id).values_list("pk", flat=True))


def resolve(suspect: Suspect, *, user, action: str, label: Label | None = None,
            expected_version: int | None) -> Suspect:
    """Accept the suggestion, keep the label (marks it verified), set another ``label``, or skip
    (the suspect stays open, unleased, and remembers who skipped it: not a decision).

    Raises :class:`~labeling.services.retag.RetagConflict` when the label changed since the
    page saw ``expected_version`` (nothing written), :class:`SuspectResolved` when someone
    resolved it already, ValueError for a bad action or label.
    """
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}; choose one of {', '.join(ACTIONS)}")
    with transaction.atomic():
        _lock_image_of(suspect)
        s = Suspect.objects.select_for_update().get(pk=suspect.pk)
        if s.status != Status.OPEN:
            raise SuspectResolved(Suspect.objects.select_related("resolved_by").get(pk=s.pk))
        if action == "skip":
            s.skipped_by, s.skipped_at, s.lease_holder, s.lease_until = user, timezone.now(), None, None
            s.save(update_fields=["skipped_by", "skipped_at", "lease_holder", "lease_until"])
            return s
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
        s.save(update_fields=["status", "resolved_label", "resolved_by", "resolved_at", "lease_holder", "lease_until",
                              "version"])
    return s


def throughput(sr: SuspectRun, user, since) -> dict:
    """What ``user`` resolved in this run since ``since`` (their session), and per minute; a skip
    resolves nothing."""
    n = Suspect.objects.filter(suspect_run=sr, resolved_by=user, resolved_at__gte=since).count()
    minutes = max((timezone.now() - since).total_seconds() / 60, 1 / 60)
    return {"done": n, "minutes": round(minutes, 2), "per_minute": round(n / minutes, 1) if n else 0.0}


def open_counts(runs) -> dict[int, dict]:
    """Per suspects run of ``runs``: ``{"open": n, "by_class": {label id: n}}``, the size of
    :func:`queue`: the figures stored when the run was scored less its settled suspects and
    its open ones no longer current (``Suspect.current``, kept by the database: migration
    0015), two index-only counts (``suspect_settled_idx``, ``suspect_stale_idx``) of what
    changed since scoring, whatever changed elsewhere."""
    runs = [sr for sr in runs if sr.scored_at is not None]
    out = {sr.pk: {"open": 0, "by_class": {int(k): f.get("suspects", 0) for k, f in (sr.class_figures or {}).items()}}
           for sr in runs}
    ids = list(out)
    settled = (Suspect.objects.filter(suspect_run_id__in=ids, status__in=Suspect.SETTLED)
               .values_list("suspect_run_id", "given_label_id").annotate(n=Count("*")).order_by())
    stale = (Suspect.objects.filter(suspect_run_id__in=ids, status=Status.OPEN, current=False)
             .values_list("suspect_run_id", "given_label_id").annotate(n=Count("*")).order_by())
    for run_id, given, n in [*settled, *stale]:
        by_class = out[run_id]["by_class"]
        if given in by_class:
            by_class[given] -= n
    for counts in out.values():
        counts["open"] = sum(counts["by_class"].values())
    return out


def stale_open(sr: SuspectRun) -> list[tuple]:
    """``(image id, given label id, reasons, label id now, verified)`` of the run's open
    suspects that are no longer current (their label changed or was confirmed since scoring,
    or their annotation went): ``suspect_stale_idx``, as many rows as there are such suspects.
    Their annotations in a second query: a subquery per row would make the planner, which
    cannot tell this run's few stale suspects from another run's many, cost it high enough to
    compile it (JIT, ~30 ms for nothing)."""
    rows = list(Suspect.objects.filter(suspect_run=sr, status=Status.OPEN, current=False)
                .values_list("image_id", "given_label_id", "reasons").order_by())
    now = {i: (lab, v) for i, lab, v in Annotation.objects.filter(
        task_id=sr.task_id, image_id__in=[r[0] for r in rows]).values_list("image_id", "label_id", "verified")} \
        if rows else {}
    return [(i, given, reasons, *now.get(i, (None, False))) for i, given, reasons in rows]


def open_count(sr: SuspectRun) -> int:
    """How many suspects :func:`queue` holds (0 before the run is scored)."""
    return open_counts([sr]).get(sr.pk, {"open": 0})["open"]


def queue_counts(sr: SuspectRun) -> dict:
    """Open (current), settled per status, and how many of the open ones someone skipped."""
    by = dict(Suspect.objects.filter(suspect_run=sr, status__in=Suspect.SETTLED).values_list("status")
              .annotate(n=Count("*")).order_by())  # suspect_rank_idx alone (index-only)
    skipped = Suspect.objects.filter(suspect_run=sr, skipped_at__isnull=False, status=Status.OPEN).count()
    return {"open": open_count(sr), **{s: by.get(s, 0) for s in Suspect.SETTLED}, "skipped": skipped}



def last_decision(sr: SuspectRun, user) -> Suspect | None:
    """The suspect ``user`` settled last in this run (what the queue's Undo takes back)."""
    if not getattr(user, "is_authenticated", False):
        return None
    return (Suspect.objects.filter(suspect_run=sr, resolved_by=user).select_related("image", "resolved_label")
            .order_by("-resolved_at", "-id").first())


class ChangedSinceDecision(RetagConflict):
    """The label changed after the decision: an undo would overwrite that change (409)."""

    def __init__(self, annotation):
        super().__init__(annotation, annotation.version if annotation else 0)
        self.args = ("the label changed after your decision (it is now "
                     f"{annotation.label.name if annotation and annotation.label_id else 'no label'!r}): "
                     "nothing was undone, nothing was overwritten",)


def undo_decision(suspect: Suspect, *, user) -> Suspect:
    """Take back ``user``'s decision on ``suspect``: a retag goes back to the label it
    replaced, as an event of its own (services.retag.undo_retags: if someone changed the
    label since, :class:`RetagConflict` and nothing is written); a keep just reopens. The
    suspect is open again and leased to ``user``, so the queue shows it next."""
    from ..retag import undo_retags

    with transaction.atomic():
        _lock_image_of(suspect)
        s = Suspect.objects.select_for_update().select_related("image", "task").get(pk=suspect.pk)
        if s.status == Status.OPEN:
            raise ValueError("this suspect is open: there is no decision to undo")
        if s.resolved_by_id != user.pk:
            raise ValueError("only the person who decided can undo it here (the image page can retag it)")
        if s.status == Status.RETAGGED:
            ann = Annotation.objects.filter(image_id=s.image_id, task_id=s.task_id).select_related("label").first()
            last = LabelEvent.objects.filter(image_id=s.image_id, task_id=s.task_id).order_by("-id").first()
            # The label's latest change must be this decision: a later one (someone else's) stays.
            if ann is None or last is None or last.by_id != user.pk or last.reference != f"suspects {s.suspect_run_id}":
                raise ChangedSinceDecision(ann)
            version = ann.version
            result = undo_retags(task=s.task, items=[(s.image_id, version)], by=user)
            if result.conflicts:
                raise ChangedSinceDecision(Annotation.objects.filter(image_id=s.image_id, task_id=s.task_id)
                                           .select_related("label").first())
        # Back to the state the decision found: the label unconfirmed (a keep confirmed it; the
        # undo's own retag would too), and the suspect current at the label's version now.
        Annotation.objects.filter(image_id=s.image_id, task_id=s.task_id).update(verified=False)
        s.version = Annotation.objects.filter(image_id=s.image_id, task_id=s.task_id).values_list(
            "version", flat=True).first() or 0
        s.status, s.resolved_label, s.resolved_by, s.resolved_at = Status.OPEN, None, None, None
        # The queue shows this one next: the suspect the person was shown meanwhile goes back.
        Suspect.objects.filter(suspect_run_id=s.suspect_run_id, status=Status.OPEN, lease_holder=user).exclude(
            pk=s.pk).update(lease_holder=None, lease_until=None)
        s.lease_holder, s.lease_until = user, timezone.now() + timedelta(seconds=lease_seconds())
        s.save(update_fields=["status", "resolved_label", "resolved_by", "resolved_at", "lease_holder", "lease_until",
                              "version"])
    return s
