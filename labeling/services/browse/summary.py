"""The counts the pages show: each project's images by status, and the filter task's
labels with how many images carry each. Read from the tables the database keeps
(services.counts), never counted per request."""
from __future__ import annotations

from dataclasses import dataclass

from django.db.models import Count

from ...models import Label, Project, Task
from .. import counts as kept
from .filter import GridFilter


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
