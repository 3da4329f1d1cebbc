"""Training runs and their quality, for scientists (and admins): start a run, watch it
train, read its per-class metrics and confusion matrix, walk its false negatives and
false positives (and retag them from the grid), follow F1 over runs.

Annotators get the 403 page here: they retag from the image page and their queue; the
metrics are the scientists' (DESIGN.md: "Data scientists read F1 per class...").
Thin views: the numbers come from services.quality, the actions from services.runs.
"""
from __future__ import annotations

import functools

from django import forms
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect
from django.urls import reverse
from django.views.decorators.http import require_POST

from mlcore.config import BASIC_OPTIONS, OPTIONS

from ..models import Project, Split, Task, TrainingRun
from ..services import quality, runs
from ..services.labels import ordered_labels
from ..services.roles import SCIENTIST
from .common import local_next as _next, page, role_required

scientist_required = role_required(SCIENTIST)

# Classes under this F1 get a red dot in the dashboard's table.
WEAK_F1 = 0.5


def config_field(name: str, label: str, *, help_text: str = "", choices=None, widget=None) -> forms.Field:
    """The form field of TrainConfig option ``name``: its kind, bounds, choices, default and
    whether it may be empty come from mlcore.config; the label and looks are the page's."""
    o = OPTIONS[name]
    common = {"label": label, "help_text": help_text, "initial": o.default}
    if o.choices is not None:
        return forms.ChoiceField(choices=choices or [(c, c) for c in o.choices], **common)
    if o.kind is bool:
        return forms.BooleanField(required=False, **common)
    if o.kind in (int, float):
        kind = forms.IntegerField if o.kind is int else forms.FloatField
        return kind(required=not o.nullable, min_value=o.min, max_value=o.max, **common)
    return forms.CharField(required=not o.nullable, max_length=2048, widget=widget, **common)


class RunForm(forms.Form):
    """What a person picks to start a run: the task and mlcore's basic training options
    (``config()`` has their TrainConfig names; services.runs checks them again)."""

    task = forms.ModelChoiceField(queryset=Task.objects.none(), empty_label=None)
    arch = config_field("arch", "Architecture")
    weights = config_field("weights", "Pretrained weights",
                           widget=forms.TextInput(attrs={"placeholder": "IMAGENET1K_V1, file:///… or s3://…/model.pt",
                                                         "spellcheck": "false"}),
                           help_text="A torchvision weights name in the hub cache, or a state_dict URI. "
                                     "Empty: train from scratch.")
    epochs = config_field("epochs", "Epochs")
    batch_size = config_field("batch_size", "Batch size")
    lr = config_field("lr", "Learning rate", help_text="Empty: SGD 0.1 × batch / 256.")
    class_weights = config_field("class_weights", "Class weighting",
                                 choices=[("inverse", "inverse frequency"), ("none", "none")])
    freeze_backbone = config_field("freeze_backbone", "Freeze backbone (train the head only)")
    image_size = config_field("image_size", "Image size")
    small_input = config_field("small_input", "Small input stem (28–64 px images)")

    def __init__(self, project: Project, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["task"].queryset = project.tasks.order_by("name")

    def groups(self) -> list[tuple[str, list]]:
        """The fields as the page lays them out: what to train, numbers side by side, switches."""
        def pick(*names):
            return [self[n] for n in names]
        return [("main", pick("task", "arch", "weights")),
                ("numbers", pick("epochs", "batch_size", "lr", "image_size", "class_weights")),
                ("checks", pick("freeze_backbone", "small_input"))]

    def config(self) -> dict:
        out = {name: self.cleaned_data.get(name) for name in BASIC_OPTIONS}
        out["weights"] = (out["weights"] or "").strip() or None
        return out


def _task_of(project: Project, value) -> Task | None:
    tasks = list(project.tasks.order_by("name"))
    try:
        wanted = int(value)
    except (TypeError, ValueError):
        wanted = None
    return next((t for t in tasks if t.id == wanted), tasks[0] if tasks else None)


def _run(run_id) -> TrainingRun:
    return get_object_or_404(TrainingRun.objects.select_related("task", "project", "created_by", "parent"),
                             id=run_id)


def _split(request) -> str:
    split = request.GET.get("split") or Split.TEST
    if split not in Split.values:
        raise Http404("unknown split")
    return split


def _finished_run_page(view):
    """A page of a finished run: ``view(request, run, split)``. A run not done yet sends the
    browser to its progress page instead."""
    @functools.wraps(view)
    def wrapper(request, run_id):
        run = _run(run_id)
        if run.state != TrainingRun.State.DONE:
            return redirect("run_progress", run_id=run.id)
        return view(request, run, _split(request))
    return wrapper


# --- the run list, starting runs ----------------------------------------------------------

@scientist_required
def run_list(request, slug):
    """The runs of one task of the project (``?task=``), newest first."""
    project = get_object_or_404(Project, slug=slug)
    task = _task_of(project, request.GET.get("task"))
    listed = quality.task_runs(task) if task else []
    return page(request, "runs/list.html", {
        "project": project,
        "task": task,
        "tasks": list(project.tasks.order_by("name")),
        "runs": [(r, quality.duration_s(r)) for r in listed],
    }, project=project)


@scientist_required
def run_new(request, slug):
    """The form that starts a run (services.runs.start_training_run); its errors stay on the form."""
    project = get_object_or_404(Project, slug=slug)
    from ..services.runs import RunConfigError, default_config, start_training_run

    task = _task_of(project, request.GET.get("task"))
    initial = {**(default_config(task) if task else {}), "task": task}
    form = RunForm(project, request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        try:
            run = start_training_run(task=form.cleaned_data["task"], config=form.config(), by=request.user)
        except RunConfigError as e:
            for field, msg in e.errors.items():
                form.add_error(field if field in form.fields else None, msg)
        except ValueError as e:
            form.add_error(None, str(e))
        else:
            messages.success(request, f"Run {run.id} queued on {run.task.name}.")
            return redirect("run_progress", run_id=run.id)
    return page(request, "runs/new.html", {"project": project, "form": form}, project=project)


@scientist_required
@require_POST
def run_cancel(request, run_id):
    from ..services.runs import cancel_run

    run = _run(run_id)
    try:
        cancel_run(run, by=request.user)
    except (ValueError, ValidationError) as e:
        messages.error(request, f"Run {run.id} cannot be cancelled: {_message(e)}")
    else:
        messages.success(request, f"Cancelling run {run.id}: it stops at its next step.")
    return redirect(_next(request) or reverse("run_progress", args=[run.id]))


@scientist_required
@require_POST
def run_retrain(request, run_id):
    """Retrain: same task and config, the labels as they are now."""
    from ..services.runs import retrain

    run = _run(run_id)
    try:
        new = retrain(run, by=request.user)
    except (ValueError, ValidationError) as e:
        messages.error(request, f"Run {run.id} cannot be retrained: {_message(e)}")
        return redirect(_next(request) or reverse("run_dashboard", args=[run.id]))
    messages.success(request, f"Run {new.id} retrains run {run.id} on the current labels.")
    return redirect("run_progress", run_id=new.id)


def _message(e: Exception) -> str:
    return "; ".join(e.messages) if isinstance(e, ValidationError) else str(e)


# --- one run: progress, dashboard, confusion, grids ----------------------------------------------

def _run_page(request, template, run, context):
    return page(request, template, {"run": run, "project": run.project, "task": run.task, **context},
                project=run.project)


@scientist_required
def run_progress(request, run_id):
    run = _run(run_id)
    return _run_page(request, "runs/progress.html", run, {"status": quality.run_status(run)})


@scientist_required
@_finished_run_page
def run_dashboard(request, run, split):
    board = quality.dashboard(run)
    table = board["splits"][split]
    # False negatives / positives per class come from the confusion matrix (no prediction scan).
    errors = quality.class_errors(quality.confusion(run, split))
    rows = [{**c, "fn": errors.get(c["label"], (0, 0))[0], "fp": errors.get(c["label"], (0, 0))[1]}
            for c in table["classes"]]
    return _run_page(request, "runs/dashboard.html", run, {
        "board": board,
        "split": split,
        "table": table,
        "rows": rows,
        "weak": WEAK_F1,
        "splits": [Split.TEST, Split.TRAIN],
        "previous": quality.previous_finished_run(run),
        "test_changes": runs.changed_test_labels(run),
    })


@scientist_required
@_finished_run_page
def run_confusion(request, run, split):
    cm = quality.confusion(run, split)
    rows = []
    for i, lb in enumerate(cm["labels"]):
        cells = [{"given": lb, "predicted": cm["labels"][j], "count": c, "share": cm["shares"][i][j],
                  "diagonal": i == j} for j, c in enumerate(cm["matrix"][i])]
        rows.append({"label": lb, "cells": cells, "total": cm["row_totals"][i]})
    return _run_page(request, "runs/confusion.html", run, {
        "cm": cm, "rows": rows, "split": split, "splits": [Split.TEST, Split.TRAIN],
        "accuracy": (cm["correct"] / cm["total"]) if cm["total"] else None,
    })


@scientist_required
def run_grid(request, run_id):
    """False negatives (``kind=fn&label=``), false positives (``kind=fp&label=``) or one
    confusion cell (``kind=cell&given=&predicted=``), most confident first, by keyset.
    Each thumbnail retags with the keyboard (static/runs_grid.js)."""
    run = _run(run_id)
    kind = request.GET.get("kind") or quality.FN
    try:
        q = quality.grid_query(run, kind=kind,
                               label_id=request.GET.get("given" if kind == quality.CELL else "label"),
                               predicted_id=request.GET.get("predicted"), split=request.GET.get("split"))
        grid = quality.grid_page(q, after=request.GET.get("after"), before=request.GET.get("before"))
    except quality.QualityError as e:
        raise Http404(str(e)) from None
    from urllib.parse import urlencode

    labels = quality.run_labels(run)
    return _run_page(request, "runs/grid.html", run, {
        "q": q,
        "grid": grid,
        "qs": urlencode(q.params()),
        "labels": labels,
        # Each label's key (services.labels.label_key) picks it, in the task's order, as on the image page.
        "task_labels": ordered_labels(run.task),
        "fn_qs": urlencode({"kind": quality.FN, "label": q.label.id, "split": q.split}),
        "fp_qs": urlencode({"kind": quality.FP, "label": q.label.id, "split": q.split}),
    })


# --- F1 over runs --------------------------------------------------------

@scientist_required
def task_f1(request, slug):
    project = get_object_or_404(Project, slug=slug)
    task = _task_of(project, request.GET.get("task"))
    split = _split(request)
    series = quality.f1_series(task, split) if task else None
    return page(request, "runs/f1.html", {
        "project": project, "task": task, "tasks": list(project.tasks.order_by("name")),
        "series": series, "split": split, "splits": [Split.TEST, Split.TRAIN],
    }, project=project)

