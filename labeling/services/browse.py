"""Reading a project the way the pages show it: counts, the filtered grid, an image's
facets and history, its neighbours within a filter.

The grid pages by key (``id > after``), never by OFFSET: the next page of a
million-image project costs what the first one costs, given the indexes on
Image (project, status, split, id) and Annotation (task, label, image). The counts are
read from the tables the database keeps (services.counts), never counted per request.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import urlencode

from django.db.models import Count, F, FilteredRelation, Q

from ..models import Annotation, Image, ImageStatus, Label, LabelEvent, Project, Split, Task
from . import counts as kept
from . import keyset
from .labels import project_tasks
from .retag import source_badge

PAGE_SIZE = 96
UNLABELLED = "none"
SEARCH_MAX = 200  # characters of a key search; longer is cut (a key is a path, rarely longer)


def search_keys(qs, text: str):
    """Images whose key (folder and file name) contains ``text``, in any case: the one rule
    of the grid's search box and the API's ``search``. PostgreSQL serves it from the
    trigram index on UPPER(key) (migration 0011), which is what ``icontains`` compiles to.
    A NUL is in no key (PostgreSQL text cannot hold one), so it is dropped, not sent."""
    text = (text or "").replace("\x00", "")
    return qs.filter(key__icontains=text) if text else qs


@dataclass
class ProjectSummary:
    project: Project
    ok: int = 0
    corrupt: int = 0
    missing: int = 0
    tasks: int = 0

    @property
    def images(self) -> int:
        return self.ok + self.corrupt + self.missing


def project_summaries(projects=None) -> list[ProjectSummary]:
    """Every project with its image counts by status (kept counts) and its number of tasks
    (two small queries)."""
    projects = list(projects if projects is not None else Project.objects.all())
    by_id = {p.id: ProjectSummary(p) for p in projects}
    for (project_id, status), n in kept.image_counts(by_id).items():
        setattr(by_id[project_id], status, n)
    for row in Task.objects.filter(project__in=by_id).values("project_id").annotate(n=Count("id")).order_by():
        by_id[row["project_id"]].tasks = row["n"]
    return list(by_id.values())


def project_summary(project: Project) -> ProjectSummary:
    return project_summaries([project])[0]


# --- the grid ----------------------------------------------------------------------

@dataclass
class GridFilter:
    """What the grid shows: one project, optionally narrowed by task/label, split, status.

    Built from a page's GET parameters by :func:`parse_filter`; ``querystring()`` gives
    them back so the image page can walk the same selection.
    """

    project: Project
    task: Task | None = None
    label: Label | None = None
    unlabelled: bool = False
    split: str = ""
    status: str = ""
    search: str = ""  # part of the key (see search_keys)
    sort: GridSort | None = None  # None: id order

    def images(self):
        qs = search_keys(Image.objects.filter(project=self.project), self.search)
        if self.split:
            qs = qs.filter(split=self.split)
        if self.status:
            qs = qs.filter(status=self.status)
        if self.label is not None:
            qs = qs.filter(annotations__task=self.label.task_id, annotations__label=self.label)
        elif self.unlabelled and self.task is not None:
            if self.unlabelled_count() == 0:
                return qs.none()  # every image is labelled: nothing to ask
            qs = qs.filter(kept.unlabelled(self.task))
        return qs

    def unlabelled_count(self) -> int:
        """Images of the split/status without a label for the task, from the kept counts."""
        where = {k: v for k, v in (("split", self.split), ("status", self.status)) if v}
        return kept.image_total(self.project, **where) - sum(kept.label_totals(self.task, **where).values())

    def params(self) -> dict[str, str]:
        out = {}
        if self.task is not None:
            out["task"] = str(self.task.id)
        if self.label is not None:
            out["label"] = str(self.label.id)
        elif self.unlabelled:
            out["label"] = UNLABELLED
        if self.split:
            out["split"] = self.split
        if self.status:
            out["status"] = self.status
        if self.search:
            out["q"] = self.search
        if self.sort is not None:
            out["sort"] = self.sort.param
        return out

    def querystring(self, **changes) -> str:
        """The filter as GET parameters, with ``changes`` applied (a None value drops one)."""
        params = {**self.params(), **{k: str(v) for k, v in changes.items() if v is not None}}
        for k, v in changes.items():
            if v is None:
                params.pop(k, None)
        return urlencode(params)


def int_or_none(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def parse_filter(project: Project, params) -> GridFilter:
    """A filter from GET parameters; unknown or foreign ids are ignored, not trusted.

    Without a ``task`` parameter the project's first task (in the project's task order:
    labels.project_tasks) is chosen, so the grid always has a facet to count and filter by.
    """
    tasks = list(project_tasks(project))
    task_id = int_or_none(params.get("task"))
    task = next((t for t in tasks if t.id == task_id), tasks[0] if tasks else None)
    f = GridFilter(project=project, task=task)
    raw_label = params.get("label", "")
    if task is not None and raw_label == UNLABELLED:
        f.unlabelled = True
    elif task is not None and (label_id := int_or_none(raw_label)) is not None:
        f.label = Label.objects.filter(task=task, id=label_id).first()
    if params.get("split") in Split.values:
        f.split = params["split"]
    if params.get("status") in ImageStatus.values:
        f.status = params["status"]
    f.search = (params.get("q") or "").strip()[:SEARCH_MAX]
    f.sort = parse_sort(params.get("sort") or "")
    return f


# --- sorting the grid --------------------------------------------------------------

# A sorted page sorts the whole filtered set (no index orders images by these values: that
# would take (run, confidence, image) on predictions, (suspect_run, score, image) on suspects
# and (task, updated_at, image) on annotations). Measured on PostgreSQL (2 cores): 235-800 ms
# at 300,000 images, linear in the set; so a grid sorts only a set of at most SORT_LIMIT
# images (from the kept counts, the search aside) and says so otherwise.
SORT_LIMIT = 50_000


@dataclass(frozen=True)
class SortKey:
    name: str  # the ``sort`` parameter, without the leading "-" of descending
    title: str
    relation: str  # the Image relation that holds the value (one row per image once narrowed)
    field: str
    high: str = "highest"  # how the page says "descending" ...
    low: str = "lowest"  # ... and "ascending"


SORT_KEYS = {k.name: k for k in (
    SortKey("confidence", "confidence", "predictions", "confidence"),
    SortKey("suspect", "suspect score", "suspects", "score"),
    SortKey("changed", "last change", "annotations", "updated_at", "newest", "oldest"),
)}


@dataclass(frozen=True)
class GridSort:
    key: SortKey
    descending: bool

    @property
    def param(self) -> str:
        return ("-" if self.descending else "") + self.key.name

    @property
    def title(self) -> str:
        return f"{self.key.title}, {self.key.high if self.descending else self.key.low} first"


SORT_CHOICES = [(s.param, s.title) for k in SORT_KEYS.values() for s in (GridSort(k, True), GridSort(k, False))]


def parse_sort(raw: str) -> GridSort | None:
    """``confidence``, ``-suspect``, ``changed`` ...; anything else is id order."""
    key = SORT_KEYS.get(raw.lstrip("-"))
    return GridSort(key, raw.startswith("-")) if key else None


class SortUnavailable(Exception):
    """The sort has nothing to sort by (no task, no finished run): the grid says so."""


def _sort_condition(f: GridFilter) -> Q:
    """Which row of the relation holds the image's value: the task's latest finished run's
    prediction, the latest finished suspects run's suspect, the task's annotation."""
    from .runs import latest_finished_run
    from .suspects import latest_done

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


@dataclass
class LabelCount:
    label: Label | None  # None: no label yet
    count: int


@dataclass
class LabelCounts:
    rows: list[LabelCount]  # the task's labels in order, then the "no label" row
    total: int  # images of the split/status, whatever their label
    shown: int  # images the whole filter selects (label included)


def label_counts(f: GridFilter) -> LabelCounts:
    """The filter task's labels in their custom order, each with how many images of the
    current split/status carry it, plus an "unlabelled" row; and the totals. Read from
    the kept counts: a few rows, whatever the size of the project."""
    where = {k: v for k, v in (("split", f.split), ("status", f.status)) if v}
    total = kept.image_total(f.project, **where)
    if f.task is None:
        return LabelCounts([], total, total)
    counts = kept.label_totals(f.task, **where)
    rows = [LabelCount(lb, counts.get(lb.id, 0)) for lb in f.task.labels.order_by("position", "id")]
    rows.append(LabelCount(None, total - sum(counts.values())))
    if f.label is not None:
        shown = counts.get(f.label.id, 0)
    elif f.unlabelled:
        shown = rows[-1].count
    else:
        shown = total
    return LabelCounts(rows, total, shown)


# --- one image -----------------------------------------------------------------------

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


def neighbours(f: GridFilter, image: Image) -> tuple[int | None, int | None]:
    """(previous id, next id) of ``image`` within the filter, in grid order."""
    qs = f.images()
    prev_id = qs.filter(id__lt=image.id).order_by("-id").values_list("id", flat=True).first()
    next_id = qs.filter(id__gt=image.id).order_by("id").values_list("id", flat=True).first()
    return prev_id, next_id


def problem_images(project: Project, status: str, *, after: int | None = None,
                   size: int = 200) -> tuple[list[Image], int | None]:
    """Corrupt or missing images of a project, by key (``after`` an id); and the next ``after``."""
    qs = Image.objects.filter(project=project, status=status).only(
        "id", "key", "uri", "split", "status", "status_reason", "updated_at")
    p = keyset.page(qs, ordering=("id",), size=size, after=None if after is None else (after,))
    return p.rows, (p.next[0] if p.next else None)

