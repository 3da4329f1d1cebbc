"""The near-duplicates page of a suspects run (annotators and up): pairs of one kind, most
similar first, a page at a time, with how they were found and the calibrated cuts.
Thin: services.duplicates finds and reads the pairs."""
from __future__ import annotations

from django.shortcuts import get_object_or_404

from ..models import NearDuplicate, SuspectRun
from ..services import duplicates as svc
from .common import browse_required, page

HINTS = {
    NearDuplicate.Kind.CROSS_SPLIT: "A test image with a copy in train inflates the test figures (leakage).",
    NearDuplicate.Kind.LABEL_CONFLICT: "Two copies of one picture with different labels: at least one is wrong.",
    NearDuplicate.Kind.DUPLICATE: "Copies in the same split with the same label: harmless, but they weigh twice.",
}


@browse_required
def near_duplicates(request, sr_id):
    sr = get_object_or_404(SuspectRun.objects.select_related("project", "task", "run"), pk=sr_id)
    counts = svc.kind_counts(sr)
    kind = request.GET.get("kind")
    if kind not in NearDuplicate.Kind.values:  # the first kind that has pairs, leakage first
        kind = next((k for k in NearDuplicate.Kind.values if counts[k]), NearDuplicate.Kind.CROSS_SPLIT)
    number = request.GET.get("page", "1")
    result = svc.pairs_page(sr, kind=kind, page=int(number) if number.isdigit() else 1)
    return page(request, "duplicates/pairs.html", {
        "sr": sr, "project": sr.project, "task": sr.task, "kind": kind, "hint": HINTS[kind], "result": result,
        "kinds": [(v, name, counts[v]) for v, name in NearDuplicate.Kind.choices],
        "stats": sr.duplicate_stats or {},
    }, project=sr.project)
