"""Suspects pages: the runs of a project, starting one from a training run (scientists), the
keyboard queue (annotators), the cluster view per class with group retags and automatic
cleaning (exclusions). Thin: services.suspects does the work. (Near duplicates: views.duplicates.)"""
from __future__ import annotations

from datetime import datetime

from django.contrib import messages
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST

from ..models import CleaningRun, Label, Project, SuspectRun, TrainingRun
from ..services import autoclean
from ..services import suspect_quality as quality
from ..services import suspects as svc
from ..services.labels import ordered_labels
from ..services.roles import SCIENTIST, has_role
from .common import browse_required, int_or_none, local_next as _next, page, role_required

scientist_required = role_required(SCIENTIST)


def _sr(sr_id) -> SuspectRun:
    return get_object_or_404(SuspectRun.objects.select_related("project", "task", "run", "created_by"), pk=sr_id)


def _page(request, template, sr, context=None):
    return page(request, template, {"sr": sr, "project": sr.project, "task": sr.task, **(context or {})},
                project=sr.project)


@browse_required
def suspect_runs(request, slug):
    project = get_object_or_404(Project, slug=slug)
    runs = list(SuspectRun.objects.filter(project=project).select_related("task", "run", "created_by")[:100])
    open_now = svc.open_counts([sr for sr in runs if sr.state == SuspectRun.State.DONE])
    for sr in runs:
        sr.open_count = open_now[sr.pk]["open"] if sr.pk in open_now else None
    finished = (TrainingRun.objects.filter(project=project, state=TrainingRun.State.DONE)
                .exclude(pk__in=[i for sr in SuspectRun.objects.filter(project=project)
                                 for i in sr.fold_run_ids]).select_related("task")[:20])
    return page(request, "suspects/runs.html", {"project": project, "runs": runs, "finished": finished,
                                                 "can_start": has_role(request.user, SCIENTIST)}, project=project)


@scientist_required
def suspect_start(request, run_id):
    run = get_object_or_404(TrainingRun.objects.select_related("project", "task"), pk=run_id)
    error = None
    values = {**svc.DEFAULTS, **{k: request.POST.get(k) for k in ("k", "fold_epochs") if request.method == "POST"}}
    if request.method == "POST":
        try:
            sr = svc.start_suspect_run(run=run, by=request.user,
                                       config={k: request.POST.get(k) or None for k in ("k", "fold_epochs")
                                               if request.POST.get(k)})
        except svc.SuspectError as e:
            error = str(e)
        else:
            messages.success(request, f"Suspects run {sr.pk} queued: {sr.config['k']} fold models, then scoring.")
            return redirect("suspect_run", sr_id=sr.pk)
    return page(request, "suspects/start.html", {
        "run": run, "project": run.project, "error": error, "values": values,
        **_estimate(run, values)}, project=run.project)


def _estimate(run, values) -> dict:
    """The start form's estimate for its K and epochs ({estimate} or {estimate_error}): the
    fields checked as a start would check them (svc.validate_config), so the figure never
    stands for values the form would refuse."""
    try:
        config = svc.validate_config({k: values.get(k) for k in ("k", "fold_epochs")})
    except svc.SuspectError as e:
        return {"estimate": None, "estimate_error": str(e)}
    return {"estimate": quality.estimate(run, k=config["k"], fold_epochs=config["fold_epochs"]),
            "estimate_error": None}


@scientist_required
def suspect_estimate(request, run_id):
    """The start form's estimate for ?k=&fold_epochs= as it is typed (static/suspects_start.js):
    the fragment the form shows, so the rule and its wording live once."""
    run = get_object_or_404(TrainingRun.objects.select_related("project", "task"), pk=run_id)
    values = {**svc.DEFAULTS, **{k: request.GET.get(k) for k in ("k", "fold_epochs") if k in request.GET}}
    return render(request, "suspects/_estimate.html", {"run": run, **_estimate(run, values)})


@browse_required
def suspect_run(request, sr_id):
    sr = _sr(sr_id)
    return _page(request, "suspects/run.html", sr, {
        "status": svc.status(sr), "queue": svc.queue_counts(sr), "quality": quality.quality(sr),
        # Models' scores are for scientists (as the quality API): annotators see the folds' progress only.
        "metrics": has_role(request.user, SCIENTIST),
        "classes": svc.class_summary(sr) if sr.state == "done" else [],
        "cleanings": CleaningRun.objects.filter(run=sr.run)[:10]})


def _since(request, sr: SuspectRun) -> datetime:
    key = f"suspects-{sr.pk}-since"
    if key not in request.session:
        request.session[key] = timezone.now().isoformat()
    return datetime.fromisoformat(request.session[key])


@browse_required
def suspect_queue(request, sr_id):
    """The next suspect for this annotator (leased to them), large, with the keys to settle it."""
    sr = _sr(sr_id)
    suspect = svc.lease_next(sr, request.user) if sr.state == SuspectRun.State.DONE else None
    context = {"suspect": suspect, "throughput": svc.throughput(sr, request.user, _since(request, sr)),
               "remaining": svc.open_count(sr), "labels": ordered_labels(sr.task),
               "evidence": quality.fold_health(sr), "last": svc.last_decision(sr, request.user)}
    if suspect is not None:
        ann = suspect.image.annotations.filter(task=sr.task).select_related("label").first()
        context.update(current=ann.label if ann else None, version=ann.version if ann else 0,
                       typical_given=svc.typical_images(sr, suspect.given_label_id),
                       typical_suggested=svc.typical_images(sr, suspect.suggested_label_id))
    return _page(request, "suspects/queue.html", sr, context)


@browse_required
def suspect_clusters(request, sr_id):
    sr = _sr(sr_id)
    classes = svc.class_summary(sr)
    label_id = request.GET.get("label")
    selected = next((c["label"] for c in classes if str(c["label"].pk) == label_id),
                    classes[0]["label"] if classes else None)
    page_number = int_or_none(request.GET.get("page")) or 1
    view = svc.class_clusters(sr, selected.pk, page=page_number) if selected else None
    exclusions = svc.exclusion_summary(sr.task)
    return _page(request, "suspects/clusters.html", sr, {
        "classes": classes, "selected": selected, "view": view, "labels": ordered_labels(sr.task),
        "cut": svc.cut_shown(sr, selected.pk) if selected else None,
        "exclusions": exclusions, "can_clean": has_role(request.user, SCIENTIST),
        "put_back": next((r["n"] for r in exclusions["by_label"] if selected and r["label"] == selected.name), 0),
        "max_rounds": autoclean.MAX_ROUNDS, "default_rounds": autoclean.DEFAULT_ROUNDS})


@require_POST
@browse_required
def cluster_retag(request, sr_id):
    """Retag an outlier group in one action (one LabelEvent per image, each with the version seen).

    The form sends ``v_<image id>`` = the version the page showed for every image of the
    group, and ``image`` for the ticked ones (none ticked: the whole group). A ticked
    image without its version is refused and named, never retagged blind.
    """
    sr = _sr(sr_id)
    back = _next(request) or reverse("suspect_clusters", args=[sr.pk])
    label_id = int_or_none(request.POST.get("label"))
    label = Label.objects.filter(pk=label_id, task_id=sr.task_id).first() if label_id else None
    if label is None:
        messages.error(request, "Pick a label of this task to retag the group with.")
        return redirect(back)
    versions = {}
    for k, v in request.POST.items():
        image_id, version = int_or_none(k[2:]) if k.startswith("v_") else None, int_or_none(v)
        if image_id is not None and version is not None and version >= 0:
            versions[image_id] = version
    chosen = {i for i in map(int_or_none, request.POST.getlist("image")) if i is not None}
    if chosen:
        missing = sorted(chosen - set(versions))
        if missing:
            messages.error(request, f"Nothing retagged: no version was sent for image(s) "
                                    f"{', '.join(map(str, missing[:20]))}; reload the page and try again.")
            return redirect(back)
        versions = {k: v for k, v in versions.items() if k in chosen}
    out = svc.retag_group(sr, versions=versions, label=label, by=request.user)
    text = f"{len(out['changed'])} image(s) set to {label.name}"
    if out["unchanged"]:
        text += f", {len(out['unchanged'])} already were"
    if out["conflicts"]:
        messages.warning(request, text + f"; {len(out['conflicts'])} changed by someone else meanwhile and were "
                                         "left as they are.")
    else:
        messages.success(request, text + ".")
    return redirect(back)


@require_POST
@scientist_required
def exclude(request, sr_id):
    sr = _sr(sr_id)
    n = svc.exclude_outliers(sr, label_id=int_or_none(request.POST.get("label")), by=request.user)
    messages.success(request, f"{n} outlier(s) will be left out of the next training of {sr.task.name} "
                              "(train split only; restore them any time).")
    return redirect(_next(request) or reverse("suspect_clusters", args=[sr.pk]))


@require_POST
@scientist_required
def restore(request, sr_id):
    sr = _sr(sr_id)
    n = svc.restore_exclusions(sr.task, label_id=int_or_none(request.POST.get("label")))
    messages.success(request, f"{n} image(s) are back in training.")
    return redirect(_next(request) or reverse("suspect_clusters", args=[sr.pk]))


# --------------------------------------------------------------------------- automatic cleaning

@require_POST
@scientist_required
def cleaning_start(request, run_id):
    run = get_object_or_404(TrainingRun.objects.select_related("project", "task"), pk=run_id)
    config = {k: request.POST.get(k) for k in ("rounds", "cluster_threshold") if request.POST.get(k)}
    try:
        job = autoclean.start_cleaning(run=run, by=request.user, config=config)
    except autoclean.CleaningError as e:
        messages.error(request, f"Cleaning not started: {e}.")
        return redirect(_next(request) or reverse("suspect_runs", args=[run.project.slug]))
    messages.success(request, f"Cleaning {job.pk} queued: {job.config['rounds']} round(s) from run {run.pk}.")
    return redirect("cleaning_run", job_id=job.pk)


def _job(job_id) -> CleaningRun:
    return get_object_or_404(CleaningRun.objects.select_related("project", "task", "run", "created_by"), pk=job_id)


@browse_required
def cleaning_run(request, job_id):
    job = _job(job_id)
    return page(request, "suspects/cleaning.html", {
        "job": job, "project": job.project, "task": job.task, "summary": autoclean.summary(job),
        "can_clean": has_role(request.user, SCIENTIST)}, project=job.project)


@require_POST
@scientist_required
def cleaning_restore(request, job_id):
    job = _job(job_id)
    r = request.POST.get("round", "")
    try:
        n = autoclean.restore_cleaning(job, round=int(r) if r.isdigit() else None)
    except autoclean.CleaningError as e:
        messages.error(request, f"Nothing put back: {e}")
        return redirect("cleaning_run", job_id=job.pk)
    messages.success(request, f"{n} image(s) are back in training.")
    return redirect("cleaning_run", job_id=job.pk)
