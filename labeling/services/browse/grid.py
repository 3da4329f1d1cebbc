"""Pages of the grid, by key (``id > after``), never by OFFSET: the next page of a
million-image project costs what the first one costs, given the indexes on Image
(project, status, split, id) and Annotation (task, label, image). In id order, or in
one of the sorts of :mod:`.sort`."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime

from django.db.models import F, FilteredRelation, Q

from ...models import Annotation, Image, Label, Project, Task
from .. import keyset
from ..labels import project_tasks
from .filter import GridFilter, int_or_none
from .sort import GridSort, SortUnavailable
from .summary import label_counts

PAGE_SIZE = 96

# A sorted page sorts the whole filtered set (no index orders images by these values: that
# would take (run, confidence, image) on predictions, (suspect_run, score, image) on suspects
# and (task, updated_at, image) on annotations). Measured on PostgreSQL (2 cores): 235-800 ms
# at 300,000 images, linear in the set; so a grid sorts only a set of at most SORT_LIMIT
# images (from the kept counts, the search aside) and says so otherwise.
SORT_LIMIT = 50_000


@dataclass
class GridCell:
    image: Image
    labels: list[tuple[Task, Label | None]] = field(default_factory=list)
    version: int = 0  # of the filter task's label (0: none yet): what a bulk retag sends
    sort_value: float | datetime | None = None  # what a sorted grid sorts the image by

    def label_for(self, task: Task | None) -> Label | None:
        return next((lb for t, lb in self.labels if task is not None and t.id == task.id), None)


@dataclass
class GridPage:
    cells: list[GridCell]
    next_after: int | str | None  # the ``after`` of the next page; None on the last page
    prev_before: int | str | None  # the ``before`` of the previous page; None on the first page
    note: str = ""  # why the grid is not in the order asked for


def grid_page(f: GridFilter, *, after: int | str | None = None, before: int | str | None = None,
              size: int | None = None) -> GridPage:
    """One page of the filter's images, by key: ``after`` (forward) or ``before``
    (backward) the edge of the page next to it. In id order (the edge is an image id), or
    in the filter's sort (the edge is ``value~id``). One query for the images (size + 1
    rows to know whether there is more), one for their current labels."""
    size = size or PAGE_SIZE  # read here, not bound at import, so a test can make pages small
    if f.sort is not None:
        try:
            return _sorted_page(f, after=after, before=before, size=size)
        except SortUnavailable as e:
            page = grid_page(GridFilter(**{**f.__dict__, "sort": None}), size=size)
            page.note = f"Not sorted: {e}."
            return page
    after, before = int_or_none(after), int_or_none(before)
    p = keyset.page(f.images(), ordering=("id",), size=size, after=None if after is None else (after,),
                    before=None if before is None else (before,))
    return GridPage(cells=_with_labels(f.project, p.rows, f.task), next_after=p.next[0] if p.next else None,
                    prev_before=p.prev[0] if p.prev else None)


def _with_labels(project: Project, images: list[Image], task: Task | None) -> list[GridCell]:
    tasks = list(project_tasks(project))
    current, versions = {}, {}
    for a in Annotation.objects.filter(image__in=[i.id for i in images]).select_related("label"):
        current[(a.image_id, a.task_id)] = a.label
        if task is not None and a.task_id == task.id:
            versions[a.image_id] = a.version
    return [GridCell(image=i, labels=[(t, current.get((i.id, t.id))) for t in tasks], version=versions.get(i.id, 0))
            for i in images]


def _sort_condition(f: GridFilter) -> Q:
    """Which row of the relation holds the image's value: the task's latest finished run's
    prediction, the latest finished suspects run's suspect, the task's annotation."""
    from ..runs import latest_finished_run
    from ..suspects import latest_done

    if f.task is None:
        raise SortUnavailable("the project has no task to sort by")
    if (shown := label_counts(f).shown) > SORT_LIMIT:
        raise SortUnavailable(f"{shown:,} images are more than the {SORT_LIMIT:,} a grid sorts; "
                              f"narrow the filter by label, split or status")
    name = f.sort.key.name
    if name == "confidence":
        run = latest_finished_run(f.task)
        if run is None:
            raise SortUnavailable(f"{f.task.name} has no finished training run to sort by confidence")
        return Q(predictions__run=run)
    if name == "suspect":
        sr = latest_done(f.task)
        if sr is None:
            raise SortUnavailable(f"{f.task.name} has no finished suspects run to sort by suspect score")
        return Q(suspects__suspect_run=sr)
    return Q(annotations__task=f.task)


def _cursor_value(sort: GridSort, raw: str):
    """``value~id`` of a sorted page's edge, back to (value, id); None when malformed."""
    value, sep, image_id = (raw or "").rpartition("~")
    if not sep or not image_id.isdigit():
        return None
    try:
        v = datetime.fromisoformat(value) if sort.key.name == "changed" else float(value)
    except ValueError:
        return None
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v, int(image_id)


def _cursor(key: tuple | None) -> str | None:
    """A sorted page's edge ``(value, id)`` as the ``value~id`` the links carry."""
    if key is None:
        return None
    v, image_id = key
    return f"{v.isoformat() if isinstance(v, datetime) else repr(v)}~{image_id}"


def _sorted_page(f: GridFilter, *, after, before, size: int) -> GridPage:
    """One page in the sort's order, by key on (value, id) (services.keyset): the images
    that have a value (a prediction, a suspect, an annotation); the others are not in a
    sorted grid."""
    sort = f.sort
    k = sort.key
    qs = (f.images().annotate(sort_row=FilteredRelation(k.relation, condition=_sort_condition(f)))
          .annotate(sort_value=F(f"sort_row__{k.field}")).filter(sort_value__isnull=False))
    ordering = ("-sort_value", "-id") if sort.descending else ("sort_value", "id")
    forward = before is None
    edge = _cursor_value(sort, after if forward else before)
    p = keyset.page(qs, ordering=ordering, size=size, after=edge if forward else None,
                    before=None if forward else edge)
    cells = _with_labels(f.project, p.rows, f.task)
    for cell, row in zip(cells, p.rows):
        cell.sort_value = row.sort_value
    return GridPage(cells=cells, next_after=_cursor(p.next), prev_before=_cursor(p.prev))


def problem_images(project: Project, status: str, *, after: int | None = None,
                   size: int = 200) -> tuple[list[Image], int | None]:
    """Corrupt or missing images of a project, by key (``after`` an id); and the next ``after``."""
    qs = Image.objects.filter(project=project, status=status).only(
        "id", "key", "uri", "split", "status", "status_reason", "updated_at")
    p = keyset.page(qs, ordering=("id",), size=size, after=None if after is None else (after,))
    return p.rows, (p.next[0] if p.next else None)
