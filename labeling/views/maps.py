"""The embeddings map page of a run (scientists and admins); its data and the bulk retag
come from the API (labeling/api/maps.py), drawn by static/embedding_map.js."""
from __future__ import annotations

from django.shortcuts import get_object_or_404, redirect

from ..models import TrainingRun
from ..services.labels import ordered_labels
from ..services.roles import SCIENTIST
from .common import page, role_required


@role_required(SCIENTIST)
def run_map(request, run_id):
    run = get_object_or_404(TrainingRun.objects.select_related("task", "project", "created_by", "parent"), id=run_id)
    if run.state != TrainingRun.State.DONE:
        return redirect("run_progress", run_id=run.id)
    labels = ordered_labels(run.task)
    return page(request, "runs/map.html", {"run": run, "project": run.project, "task": run.task,
                                           "labels": labels}, project=run.project)
