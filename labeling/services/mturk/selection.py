"""Which images a batch sends: small pluggable selectors.

A selector takes the project, the task and its own parameters and returns image ids in
the order they should be sent. ``filter`` and ``images`` exist now; the suspects queue,
false-negative grids and clusters register theirs with :func:`selector` when they land::

    @selector("suspects")
    def suspects(project, task, *, run_id, limit=None): ...
"""
from __future__ import annotations

from typing import Callable

from ...models import Annotation, Image, ImageStatus, Label, Project, Task

SELECTORS: dict[str, Callable] = {}


class SelectionError(ValueError):
    pass


def selector(name: str):
    def register(fn):
        SELECTORS[name] = fn
        return fn

    return register


def select(project: Project, task: Task, kind: str, params: dict) -> list[int]:
    """Image ids of ``project`` chosen by the selector ``kind``; corrupt/missing images never."""
    fn = SELECTORS.get(kind)
    if fn is None:
        raise SelectionError(f"unknown selection {kind!r}; choose one of {', '.join(sorted(SELECTORS))}")
    ids = list(dict.fromkeys(fn(project, task, **params)))
    ok = set(Image.objects.filter(project=project, id__in=ids, status=ImageStatus.OK).values_list("id", flat=True))
    return [i for i in ids if i in ok]


def describe(kind: str, params: dict) -> str:
    parts = [f"{k}={v}" for k, v in sorted(params.items()) if v not in (None, "", [])]
    if kind == "images" and params.get("image_ids"):
        parts = [f"{len(params['image_ids'])} chosen images"]
    return f"{kind}: {', '.join(parts) or 'all images'}"


@selector("filter")
def by_filter(project: Project, task: Task, *, label: int | str | None = None, split: str = "",
              status: str = ImageStatus.OK, unlabelled: bool = False, limit: int | None = None) -> list[int]:
    """Images of the project by split and status, optionally those with ``label`` for ``task``
    (a label id or name) or those with no label yet."""
    qs = Image.objects.filter(project=project)
    if split:
        qs = qs.filter(split=split)
    if status:
        qs = qs.filter(status=status)
    if label not in (None, ""):
        lookup = {"id": int(label)} if str(label).isdigit() else {"name": label}
        found = Label.objects.filter(task=task, **lookup).first()
        if found is None:
            raise SelectionError(f"task {task.name!r} has no label {label!r}")
        qs = qs.filter(annotations__task=task, annotations__label=found)
    elif unlabelled:
        qs = qs.exclude(id__in=Annotation.objects.filter(task=task, label__isnull=False).values("image_id"))
    qs = qs.order_by("id").values_list("id", flat=True)
    return list(qs[: int(limit)] if limit else qs)


@selector("images")
def by_ids(project: Project, task: Task, *, image_ids) -> list[int]:
    """An explicit list of image ids (from a grid selection, a suspects page...)."""
    try:
        wanted = [int(i) for i in image_ids]
    except (TypeError, ValueError):
        raise SelectionError("image_ids must be a list of integers") from None
    found = set(Image.objects.filter(project=project, id__in=wanted).values_list("id", flat=True))
    unknown = [i for i in wanted if i not in found]
    if unknown:
        raise SelectionError(f"images not in project {project.name!r}: {unknown[:10]}")
    return wanted


@selector("suspects")
def open_suspects(project: Project, task: Task, *, suspect_run: int | None = None, run_id: int | None = None,
                  limit: int | None = None) -> list[int]:
    """Open suspects of a suspects run (``suspect_run``; default the task's latest), best first."""
    from ...models import SuspectRun
    from ..suspects import latest_done, queue

    sr_id = suspect_run or run_id
    sr = (SuspectRun.objects.filter(pk=int(sr_id), project=project, task=task).first() if sr_id
          else latest_done(task))
    if sr is None:
        raise SelectionError(f"no suspects run {sr_id or ''} for task {task.name!r}".replace("  ", " "))
    ids = queue(sr).order_by("-score", "rank", "id").values_list("image_id", flat=True)
    return list(ids[: int(limit)] if limit else ids)
