"""Mechanical Turk pages (admins only): batches, a new batch, a batch's review, workers."""
from __future__ import annotations

from decimal import Decimal

from django import forms
from django.contrib import messages
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.views.decorators.http import require_GET, require_POST

from ..models import ImageStatus, MTurkAssignment, MTurkBatch, MTurkHIT, Split, Task
from ..services import mturk
from ..services.enqueue import send
from ..services.mturk import client as mt
from .common import admin_required, page


def _ids(text: str) -> list[int]:
    try:
        return [int(t) for t in text.replace(",", " ").split()]
    except ValueError:
        raise forms.ValidationError("image ids are whole numbers, separated by spaces or commas") from None


class BatchForm(forms.Form):
    task = forms.ModelChoiceField(queryset=Task.objects.select_related("project"), empty_label=None)
    name = forms.CharField(required=False, max_length=200)
    selection = forms.ChoiceField(choices=[("filter", "a filter of images"), ("images", "a list of image ids")],
                                  initial="filter")
    label = forms.CharField(required=False, help_text="Images with this label (name or id) for the task.")
    split = forms.ChoiceField(required=False, choices=[("", "any split"), *Split.choices])
    status = forms.ChoiceField(required=False, initial=ImageStatus.OK, choices=[(ImageStatus.OK, "ok")])
    limit = forms.IntegerField(required=False, min_value=1)
    image_ids = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}),
                                help_text="For a list: image ids separated by spaces or commas.")
    gold_image_ids = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}),
                                     help_text="Images whose current label is known right; one goes in each HIT.")
    assignments_per_image = forms.IntegerField(initial=3, min_value=1, max_value=100)
    reward = forms.DecimalField(initial=Decimal("0.05"), min_value=Decimal("0.01"), decimal_places=2,
                                help_text="Dollars per assignment.")
    images_per_hit = forms.IntegerField(initial=1, min_value=1, max_value=50)
    lifetime_hours = forms.IntegerField(initial=72, min_value=1, max_value=167)
    assignment_minutes = forms.IntegerField(initial=10, min_value=1, max_value=600)
    auto_approval_hours = forms.IntegerField(initial=72, min_value=0, max_value=720)
    min_approval_rate = forms.IntegerField(required=False, initial=95, min_value=0, max_value=100,
                                           help_text="Percent of a worker's past assignments approved.")
    qualification_type_id = forms.CharField(required=False, max_length=64,
                                            help_text="A custom qualification test (its type id).")
    qualification_min_score = forms.IntegerField(initial=1, min_value=0)
    agreement_threshold = forms.FloatField(initial=0.6, min_value=0.01, max_value=1)
    min_seconds_per_image = forms.FloatField(initial=2.0, min_value=0)
    production = forms.BooleanField(required=False, help_text="Needs MTURK_PRODUCTION=true.")

    def clean(self):
        data = super().clean()
        if data.get("selection") == "images":
            data["image_ids_list"] = _ids(data.get("image_ids") or "")
            if not data["image_ids_list"]:
                self.add_error("image_ids", "list at least one image id")
        data["gold_ids_list"] = _ids(data.get("gold_image_ids") or "")
        if data.get("production") and not mt.production_allowed():
            self.add_error("production", "production needs MTURK_PRODUCTION=true in the environment")
        return data

    def selection_params(self) -> tuple[str, dict]:
        d = self.cleaned_data
        if d["selection"] == "images":
            return "images", {"image_ids": d["image_ids_list"]}
        return "filter", {k: d[k] for k in ("label", "split", "status", "limit") if d.get(k)}

    def options(self) -> mturk.BatchOptions:
        d = self.cleaned_data
        return mturk.BatchOptions(
            assignments_per_image=d["assignments_per_image"], reward=d["reward"], images_per_hit=d["images_per_hit"],
            lifetime_seconds=d["lifetime_hours"] * 3600, assignment_duration_seconds=d["assignment_minutes"] * 60,
            auto_approval_delay_seconds=d["auto_approval_hours"] * 3600, min_approval_rate=d["min_approval_rate"],
            qualification_type_id=d["qualification_type_id"] or "",
            qualification_min_score=d["qualification_min_score"], agreement_threshold=d["agreement_threshold"],
            min_seconds_per_image=d["min_seconds_per_image"])


def _balance(production: bool, *, exportable: bool = True) -> tuple[dict | None, str]:
    """The account balance, or why it cannot be read, in words an admin can act on
    (``exportable``: the batch can still be exported, so the CSV is offered as the way around)."""
    from ..services.mturk.errors import explain

    try:
        return mt.account_balance(mt.make_client(production)), ""
    except Exception as exc:  # noqa: BLE001 - the page still works without it
        return None, explain(exc, production=production, exportable=exportable)


def _base_url(request) -> str:
    """Retag's address as the admin reaches it: the base of signed image links in a CSV export
    when RETAG_PUBLIC_URL is not set (the page warns when workers could not reach it)."""
    return request.build_absolute_uri("/").rstrip("/")


@admin_required
def batch_list(request):
    batches = MTurkBatch.objects.select_related("project", "task", "created_by")[:200]
    return page(request, "mturk/batches.html", {"batches": batches})


@admin_required
def batch_new(request):
    form = BatchForm(request.POST or None)
    preview = None
    if request.method == "POST" and form.is_valid():
        task = form.cleaned_data["task"]
        kind, params = form.selection_params()
        options = form.options()
        try:
            options.validate()
            if request.POST.get("action") == "create":
                batch = mturk.build_batch(
                    project=task.project, task=task, selection_kind=kind, selection_params=params,
                    by=request.user, options=options, gold_image_ids=form.cleaned_data["gold_ids_list"],
                    name=form.cleaned_data["name"], production=form.cleaned_data["production"])
                messages.success(request, f"Batch {batch.name!r} built: check the cost, then send or export it.")
                return redirect("mturk_batch", batch.id)
            gold = set(form.cleaned_data["gold_ids_list"])
            ids = [i for i in mturk.select(task.project, task, kind, params) if i not in gold]
            hits = -(-len(ids) // options.images_per_hit)
            preview = {"images": len(ids), "gold": len(gold),
                       "cost": mturk.estimate_cost(hits=hits, assignments_per_hit=options.assignments_per_image,
                                                   reward=options.reward)}
            preview["balance"], preview["balance_error"] = _balance(form.cleaned_data["production"])
        except (mturk.BatchError, mturk.SelectionError) as exc:
            form.add_error(None, str(exc))
    return page(request, "mturk/batch_new.html", {"form": form, "preview": preview,
                                                  "production_allowed": mt.production_allowed(),
                                                  "fee_rule": mturk.fee_rule(),
                                                  "how_images": mturk.images.HOW_IMAGES_REACH_WORKERS})


@admin_required
def batch_detail(request, batch_id):
    batch = get_object_or_404(MTurkBatch.objects.select_related("project", "task"), pk=batch_id)
    hits = list(batch.hits.all())
    context = {
        "batch": batch, "hits": hits, "cost": mturk.batch_cost(batch),
        "hits_created": sum(1 for h in hits if h.hit_id),
        "hits_done": sum(1 for h in hits if h.status != MTurkHIT.Status.OPEN),
        "assignments": MTurkAssignment.objects.filter(hit__batch=batch).count(),
        "summary": mturk.review_summary(batch),
        "worker_site": mturk.batches.worker_site(batch),
        "can_apply": batch.items.filter(status="agreed", applied_at__isnull=True).exists(),
        "hosting": mturk.batches.hosting(batch, _base_url(request)),
    }
    if batch.state in mturk.SENDABLE:
        context["balance"], context["balance_error"] = _balance(
            batch.production, exportable=batch.state == MTurkBatch.State.DRAFT)
    return page(request, "mturk/batch_detail.html", context, project=batch.project)


@admin_required
@require_POST
def batch_send(request, batch_id):
    batch = get_object_or_404(MTurkBatch, pk=batch_id)
    if batch.state not in mturk.SENDABLE:
        messages.error(request, f"This batch is {batch.get_state_display()}; only a draft can be sent.")
        return redirect("mturk_batch", batch.id)
    # What can be known here is said here, not left to the worker's log: images workers
    # could not see, no credentials. (MTurk's own answers come back on this page from the worker.)
    problem = mturk.batches.preflight(batch)
    if problem:
        mturk.batches.record_failure(batch, problem)
        messages.error(request, f"Not sent: {problem}")
        return redirect("mturk_batch", batch.id)
    MTurkBatch.objects.filter(pk=batch.pk).update(state=MTurkBatch.State.SENDING, error="")
    why = send("mturk_send_batch", batch.id, fail=lambda reason: mturk.batches.record_failure(
        batch, f"{reason}; is the worker's broker running?"))
    if why:
        messages.error(request, f"Not sent: {why}; is the worker's broker running?")
    else:
        messages.success(request, "Sending in the background: this page shows when the HITs are created, "
                                  "or why they could not be.")
    return redirect("mturk_batch", batch.id)


@admin_required
@require_POST
def batch_sync(request, batch_id):
    batch = get_object_or_404(MTurkBatch, pk=batch_id)
    if batch.state not in mturk.SYNCABLE:
        messages.error(request, "Only a batch sent to MTurk syncs; a CSV batch takes its results file.")
    elif why := send("mturk_sync_batch", batch.id):
        messages.error(request, f"Sync not started: {why}")
    else:
        messages.success(request, "Sync started: new answers appear here when it is done.")
    return redirect("mturk_batch", batch.id)


@admin_required
@require_POST
def batch_apply(request, batch_id):
    batch = get_object_or_404(MTurkBatch, pk=batch_id)
    if not request.POST.get("reviewed"):
        messages.error(request, "Tick “I have reviewed the summary” to apply.")
        return redirect("mturk_batch", batch.id)
    r = mturk.apply_batch(batch, by=request.user)
    messages.success(request, f"Applied: {r['changed']} labels changed, {r['unchanged']} confirmed, "
                              f"{len(r['conflicts'])} conflicts left alone.")
    return redirect("mturk_batch", batch.id)


def _download(text: str, filename: str, content_type: str) -> HttpResponse:
    response = HttpResponse(text, content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


@admin_required
def batch_export(request, batch_id):
    batch = get_object_or_404(MTurkBatch, pk=batch_id)
    if request.GET.get("what") == "layout":
        return _download(mturk.layout_html(batch), f"retag-batch-{batch.id}-layout.html", "text/html")
    if request.GET.get("what") == "decisions":
        return _download(mturk.decisions_csv(batch), f"retag-batch-{batch.id}-decisions.csv", "text/csv")
    try:
        text = mturk.export_csv(batch, base_url=_base_url(request))
    except mturk.BatchError as exc:
        messages.error(request, str(exc))
        return redirect("mturk_batch", batch.id)
    return _download(text, f"retag-batch-{batch.id}.csv", "text/csv")


@admin_required
@require_POST
def batch_import(request, batch_id):
    batch = get_object_or_404(MTurkBatch, pk=batch_id)
    upload = request.FILES.get("results")
    if upload is None:
        messages.error(request, "Choose the results CSV downloaded from the requester site.")
        return redirect("mturk_batch", batch.id)
    try:
        r = mturk.import_results_csv(batch, upload.read().decode("utf-8-sig"), final=bool(request.POST.get("final")))
        messages.success(request, f"Imported {r['new_assignments']} new assignments "
                                  f"({r['approved']} approved, {r['rejected']} rejected).")
    except (mturk.BatchError, UnicodeDecodeError) as exc:
        messages.error(request, f"Import refused: {exc}")
    return redirect("mturk_batch", batch.id)


@require_GET
def signed_image(request, token):
    """An image of a batch for MTurk workers, who have no Retag login: the link is signed and
    expires with the batch's HITs (services.mturk.batches.signed_image_url). Its thumbnail only."""
    from ..services.thumbnails import NoThumbnail, thumbnail_bytes

    try:
        image = mturk.batches.image_for_token(token)
        data = thumbnail_bytes(image)
    except (mturk.BatchError, NoThumbnail) as exc:
        raise Http404(str(exc)) from None
    response = HttpResponse(data, content_type="image/jpeg")
    response["Cache-Control"] = "public, max-age=3600"
    response["Content-Security-Policy"] = "default-src 'none'; sandbox"
    response["X-Content-Type-Options"] = "nosniff"
    return response


@admin_required
def workers(request):
    if request.method == "POST":
        worker_id = request.POST.get("worker_id", "").strip()
        try:
            if request.POST.get("action") == "unblock":
                mturk.unblock_worker(worker_id)
                messages.success(request, f"{worker_id} unblocked.")
            else:
                mturk.block_worker(worker_id, reason=request.POST.get("reason", ""))
                messages.success(request, f"{worker_id} blocked: they see none of our HITs any more.")
        except Exception as exc:  # noqa: BLE001 - MTurk or validation: say why on the page
            messages.error(request, f"Could not change {worker_id}: {mt.error_message(exc)}")
        return redirect("mturk_workers")
    return page(request, "mturk/workers.html", {"workers": mturk.workers_overview(),
                                                "history": mturk.worker_history()})
