"""Training exclusions: images left out of a task's next trainings (cluster outliers, automatic
cleaning), reversible, each remembering the class it was left out of."""
from __future__ import annotations

from django.db import transaction
from django.db.models import Count, Q
from django.utils import timezone

from ...models import ClusterMember, SuspectRun, TrainingExclusion
from .results import BULK


def exclude_outliers(sr: SuspectRun, *, label_id: int | None = None, by=None) -> int:
    """Leave the cluster outliers (of one class, or all) out of the task's next trainings;
    returns how many images are now excluded by this call. Each exclusion remembers the class
    it was made for, so that putting the class back finds it after a retag."""
    members = ClusterMember.objects.filter(cluster__suspect_run=sr, is_outlier=True)
    if label_id is not None:
        members = members.filter(cluster__label_id=label_id)
    classes = dict(members.values_list("image_id", "cluster__label_id"))
    return exclude_images(sr.task, classes, reason=f"cluster outlier (suspects {sr.pk})", by=by, suspect_run=sr)


def exclude_images(task, classes: dict[int, int], *, reason: str, by=None, **extra) -> int:
    """Exclude images ``{image_id: the class it is excluded from}`` from the task's trainings
    (re-activating earlier exclusions); returns how many became excluded. An image already
    excluded for another class (an earlier run, when it had another label) is now excluded from
    this one: putting this class back returns every image this call names. ``extra``:
    suspect_run, cleaning_run, round."""
    ids = set(classes)
    with transaction.atomic():
        existing = {i: (active, label_id) for i, active, label_id in TrainingExclusion.objects.filter(
            task_id=task.pk, image_id__in=ids).values_list("image_id", "active", "label_id")}
        again = [i for i, (active, _) in existing.items() if not active]
        moved = [i for i, (active, label_id) in existing.items() if active and label_id != classes[i]]
        for i in moved:
            TrainingExclusion.objects.filter(task_id=task.pk, image_id=i).update(label_id=classes[i],
                                                                                 updated_at=timezone.now())
        for i in again:
            TrainingExclusion.objects.filter(task_id=task.pk, image_id=i).update(
                active=True, reason=reason, created_by=by, label_id=classes[i], updated_at=timezone.now(),
                **{"suspect_run": None, "cleaning_run": None, "round": None, **extra})
        TrainingExclusion.objects.bulk_create([
            TrainingExclusion(task_id=task.pk, image_id=i, reason=reason, created_by=by, label_id=classes[i], **extra)
            for i in ids - set(existing)], batch_size=BULK)
    return len(again) + len(ids - set(existing))


def restore_exclusions(task, *, label_id: int | None = None, image_ids=None, cleaning_run=None) -> int:
    """Put excluded images back into training: all, those excluded from class ``label_id`` (the
    class they were left out of, whatever their label is now; exclusions made before that was
    recorded: by their current label), some images, or those of a cleaning run."""
    qs = TrainingExclusion.objects.filter(task=task, active=True)
    if label_id is not None:
        qs = qs.filter(Q(label_id=label_id) | Q(label__isnull=True, image__annotations__task=task,
                                                  image__annotations__label_id=label_id))
    if image_ids is not None:
        qs = qs.filter(image_id__in=list(image_ids))
    if cleaning_run is not None:
        qs = qs.filter(cleaning_run=cleaning_run)
    return TrainingExclusion.objects.filter(pk__in=list(qs.values_list("pk", flat=True))).update(
        active=False, updated_at=timezone.now())


def exclusion_summary(task) -> dict:
    """Active exclusions of the task, per class they were left out of (the one "put back" restores)."""
    recorded = dict(TrainingExclusion.objects.filter(task=task, active=True, label__isnull=False)
                    .values_list("label__name").annotate(n=Count("id")).order_by())
    legacy = (TrainingExclusion.objects.filter(task=task, active=True, label__isnull=True,
                                               image__annotations__task=task)
              .values_list("image__annotations__label__name").annotate(n=Count("id")).order_by())
    for name, n in legacy:
        recorded[name] = recorded.get(name, 0) + n
    per = [{"label": name, "n": n} for name, n in sorted(recorded.items(), key=lambda kv: str(kv[0]))]
    return {"total": sum(r["n"] for r in per), "by_label": per}

