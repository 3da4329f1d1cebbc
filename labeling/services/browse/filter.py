"""What the grid shows: the filter a page's GET parameters build, its images, and an
image's neighbours within it."""
from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlencode

from ...models import Image, ImageStatus, Label, Project, Split, Task
from .. import counts as kept
from ..labels import project_tasks
from .sort import GridSort, parse_sort

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


def neighbours(f: GridFilter, image: Image) -> tuple[int | None, int | None]:
    """(previous id, next id) of ``image`` within the filter, in grid order."""
    qs = f.images()
    prev_id = qs.filter(id__lt=image.id).order_by("-id").values_list("id", flat=True).first()
    next_id = qs.filter(id__gt=image.id).order_by("id").values_list("id", flat=True).first()
    return prev_id, next_id
