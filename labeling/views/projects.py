"""Project pages: the home list, the filtered grid, the corrupt/missing list."""
from __future__ import annotations

from django.shortcuts import get_object_or_404

from ..models import ImageStatus, Project, Split
from ..services import browse
from ..services.labels import ordered_labels, project_tasks
from ..services.roles import SCIENTIST, has_role
from .common import browse_required, page


@browse_required
def home(request):
    return page(request, "labeling/home.html", {"summaries": browse.project_summaries()})


@browse_required
def project_grid(request, slug):
    project = get_object_or_404(Project, slug=slug)
    f = browse.parse_filter(project, request.GET)
    grid = browse.grid_page(f, after=request.GET.get("after"), before=request.GET.get("before"))
    counts = browse.label_counts(f)
    label_links = [(row, f.querystring(label=row.label.id if row.label else browse.UNLABELLED))
                   for row in counts.rows]
    return page(request, "labeling/grid.html", {
        "project": project,
        "f": f,
        "tasks": list(project_tasks(project)),
        "grid": grid,
        "counts": counts,
        "label_links": label_links,
        "qs": f.querystring(),
        "all_labels_qs": f.querystring(label=None),
        "splits": Split.choices,
        "statuses": ImageStatus.choices,
        "sorts": browse.SORT_CHOICES,
        "view_name": (request.GET.get("view") or "").strip()[:80],
        "summary": browse.project_summary(project),
        "task_labels": ordered_labels(f.task) if f.task else [],
    }, project=project)


@browse_required
def project_problems(request, slug):
    project = get_object_or_404(Project, slug=slug)
    corrupt, corrupt_next = browse.problem_images(
        project, ImageStatus.CORRUPT, after=browse.int_or_none(request.GET.get("corrupt_after")))
    missing, missing_next = browse.problem_images(
        project, ImageStatus.MISSING, after=browse.int_or_none(request.GET.get("missing_after")))
    return page(request, "labeling/problems.html", {
        "project": project,
        "summary": browse.project_summary(project),
        "corrupt": corrupt, "corrupt_next": corrupt_next,
        "missing": missing, "missing_next": missing_next,
        "show_uri": has_role(request.user, SCIENTIST),  # server paths: not for annotators (the image page too)
    }, project=project)
