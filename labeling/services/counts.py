"""The counts the pages show, read from the tables the database keeps (ImageCount,
LabelCount: see migration 0011), and rebuilt from the images when asked.

The triggers move the counts in the statement that changes an image or an annotation, so
every writer (imports, retags, MTurk, the demo, a bulk ``update()``, COPY) keeps them
right without calling anything here. :func:`recount` is for a database whose triggers were
off (a restore, a manual COPY with triggers disabled) or to check them.
"""
from __future__ import annotations

from django.db import connection, transaction
from django.db.models import Count, Sum

from ..models import Annotation, Image, ImageCount, LabelCount, Project


def image_counts(project_ids, *, by=("project_id", "status"), **where) -> dict[tuple, int]:
    """Images per ``by`` (fields of ImageCount) of these projects, narrowed by ``where``."""
    rows = (ImageCount.objects.filter(project_id__in=list(project_ids), **where)
            .values_list(*by).annotate(total=Sum("n")).order_by())
    return {tuple(row[:-1]): row[-1] for row in rows}


def image_total(project: Project, **where) -> int:
    """Images of the project, narrowed by ``split`` / ``status``."""
    return ImageCount.objects.filter(project=project, **where).aggregate(total=Sum("n"))["total"] or 0


def label_totals(task, **where) -> dict[int, int]:
    """label id -> images carrying it for ``task``, narrowed by ``split`` / ``status``."""
    return dict(LabelCount.objects.filter(task=task, **where).values_list("label_id")
                .annotate(total=Sum("n")).order_by())


def stored(project: Project) -> tuple[dict, dict]:
    """The kept counts of a project, zeros left out: ({(split, status): n},
    {(task, label, split, status): n})."""
    images = {(c.split, c.status): c.n for c in ImageCount.objects.filter(project=project) if c.n}
    labels = {(c.task_id, c.label_id, c.split, c.status): c.n
              for c in LabelCount.objects.filter(task__project=project) if c.n}
    return images, labels


def counted(project: Project) -> tuple[dict, dict]:
    """The same counts, counted from the images and annotations (a scan: for checks)."""
    images = {(s, st): n for s, st, n in Image.objects.filter(project=project).values_list("split", "status")
              .annotate(n=Count("id")).order_by()}
    labels = {(t, lb, s, st): n for t, lb, s, st, n in Annotation.objects.filter(
        task__project=project, label__isnull=False).values_list("task_id", "label_id", "image__split",
                                                                "image__status").annotate(n=Count("id")).order_by()}
    return images, labels


@transaction.atomic
def recount(project: Project) -> tuple[dict, dict]:
    """Rebuild the project's counts from its images and annotations; the new counts.

    On PostgreSQL the count tables are locked first (SHARE ROW EXCLUSIVE: writers' triggers
    wait), so every change is either in the count or applied after it, never lost or twice.
    """
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(f"LOCK TABLE {ImageCount._meta.db_table}, {LabelCount._meta.db_table} "
                           "IN SHARE ROW EXCLUSIVE MODE")
    images, labels = counted(project)
    ImageCount.objects.filter(project=project).delete()
    LabelCount.objects.filter(task__project=project).delete()
    ImageCount.objects.bulk_create([ImageCount(project=project, split=s, status=st, n=n)
                                    for (s, st), n in images.items()])
    LabelCount.objects.bulk_create([LabelCount(task_id=t, label_id=lb, split=s, status=st, n=n)
                                    for (t, lb, s, st), n in labels.items()])
    return images, labels
