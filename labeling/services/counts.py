"""The counts the pages show, read from the tables the database keeps (ImageCount,
LabelCount: see migration 0011), and rebuilt from the images when asked.

The triggers move the counts in the statement that changes an image or an annotation, so
every writer (imports, retags, MTurk, the demo, a bulk ``update()``, COPY) keeps them
right without calling anything here. So are the images without a label per task
(Unlabelled, migration 0014), which the grid's "no label" filter reads. :func:`recount` is for a database whose triggers were
off (a restore, a manual COPY with triggers disabled) or to check them.
"""
from __future__ import annotations

from django.db import connection, transaction
from django.db.models import Count, Exists, OuterRef, Sum

from ..models import Annotation, Image, ImageCount, LabelCount, Project, Task, Unlabelled


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


def unlabelled(task) -> Exists:
    """The condition on Image "has no label for ``task``", from the kept Unlabelled rows: a
    semi-join the planner can start from either side, walking the images in the grid's order
    when most lack a label or the task's few unlabelled rows (the (task, image) index) when
    few do; so a page costs what it costs for any other filter, whatever the share."""
    return Exists(Unlabelled.objects.filter(task=task, image_id=OuterRef("id")))


def unlabelled_stored(project: Project) -> set[tuple[int, int]]:
    """The kept (task, image) pairs without a label of the project's tasks."""
    return set(Unlabelled.objects.filter(task__project=project).values_list("task_id", "image_id"))


def unlabelled_counted(project: Project) -> set[tuple[int, int]]:
    """The same pairs, found from the images and annotations (a scan: for checks)."""
    return {(t, i) for t in Task.objects.filter(project=project).values_list("id", flat=True)
            for i in Image.objects.filter(project=project).exclude(Exists(Annotation.objects.filter(
                image_id=OuterRef("id"), task_id=t, label__isnull=False))).values_list("id", flat=True)}


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

    The Unlabelled rows are rebuilt too. On PostgreSQL the count tables are locked first (SHARE ROW EXCLUSIVE: writers' triggers
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
    recount_unlabelled(project)
    return images, labels


def recount_unlabelled(project: Project) -> int:
    """Rebuild the project's Unlabelled rows (SHARE ROW EXCLUSIVE on PostgreSQL, as above);
    how many there are."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(f"LOCK TABLE {Unlabelled._meta.db_table} IN SHARE ROW EXCLUSIVE MODE")
    Unlabelled.objects.filter(task__project=project).delete()
    with connection.cursor() as cursor:  # in the database: a million pairs never come to Python
        cursor.execute(
            f"INSERT INTO {Unlabelled._meta.db_table} (task_id, image_id) SELECT t.id, i.id "
            f"FROM {Task._meta.db_table} t JOIN {Image._meta.db_table} i ON i.project_id = t.project_id "
            f"WHERE t.project_id = %s AND NOT EXISTS (SELECT 1 FROM {Annotation._meta.db_table} x "
            f"WHERE x.image_id = i.id AND x.task_id = t.id AND x.label_id IS NOT NULL) ORDER BY t.id, i.id",
            [project.id])
        return cursor.rowcount
