"""Imports (admin): start one, watch it run."""
from __future__ import annotations

from django.db import transaction
from django.shortcuts import get_object_or_404, redirect

from ..api.serializers import ImportJobSerializer
from ..models import ImportJob, Project
from ..services.imports import MANIFEST_COLUMNS, OUTCOMES, ImportRefused, start_import
from ..services.projects import create_project
from .common import admin_required, page
from .forms import NEW_PROJECT, ImportForm

RECENT_JOBS = 30


@admin_required
def import_list(request):
    """The form to start an import, and the latest jobs."""
    form = ImportForm(request.POST or None, initial={"project": request.GET.get("project")})
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        if data["project"] == NEW_PROJECT:
            project = None
        else:
            project = get_object_or_404(Project, id=int(data["project"]))
        options = {"task": data["task"].strip()} if data.get("task") else {}
        try:
            # A refused source leaves no empty new project behind.
            with transaction.atomic():
                if project is None:
                    project = create_project(name=data["new_project"].strip())
                job = start_import(project=project, kind=data["kind"], source_uri=data["source_uri"].strip(),
                                   options=options, by=request.user)
        except ImportRefused as e:
            form.add_error("source_uri", f"Refused: {getattr(e, 'reason', None) or e}")
        except ValueError as e:
            form.add_error(None, str(e))
        else:
            return redirect("import_job", job_id=job.id)
    jobs = ImportJob.objects.select_related("project", "created_by")[:RECENT_JOBS]
    return page(request, "labeling/imports.html", {"form": form, "jobs": jobs,
                                                   "manifest_columns": MANIFEST_COLUMNS})


@admin_required
def import_job(request, job_id):
    job = get_object_or_404(ImportJob.objects.select_related("project", "created_by"), id=job_id)
    # What the page's script polls (GET /api/imports/{id}/), drawn first by the server.
    return page(request, "labeling/import_job.html", {"job": job, "status": ImportJobSerializer(job).data},
                project=job.project)

