"""The requester web UI's way: a batch as an input CSV plus an HTML layout, and the
results CSV it gives back.

Input CSV: one row per planned HIT, columns ``hit``, ``item_id_<n>`` and ``image_url_<n>``;
the layout (templates/mturk/hit.html in layout mode) uses ``${image_url_<n>}`` and
``${item_id_<n>}`` and names its answers ``label_<n>``, so results come back as
``Input.hit``, ``Input.item_id_<n>`` and ``Answer.label_<n>``. The decisions go back the
same way: the results file with its ``Approve`` / ``Reject`` columns filled.
"""
from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timedelta, timezone as dt_timezone

from django.db import transaction
from django.utils import timezone

from ...models import MTurkAssignment, MTurkBatch, MTurkHIT, MTurkItem
from .batches import hit_html
from .errors import BatchError
from .images import image_url, refuse_unservable, url_lifetime
from .sync import compute_consensus, decide, record_assignment

RESULT_REQUIRED = ("HITId", "AssignmentId", "WorkerId", "AssignmentStatus", "Input.hit")
# Time zones the requester UI writes times in ("Wed Nov 25 07:30:00 PST 2026").
TZ_OFFSETS = {"UTC": 0, "GMT": 0, "PST": -8, "PDT": -7, "MST": -7, "MDT": -6, "CST": -6, "CDT": -5,
              "EST": -5, "EDT": -4}


def slots_per_hit(batch: MTurkBatch) -> int:
    return max((len(ids) for ids in batch.hits.values_list("item_ids", flat=True)), default=batch.images_per_hit)


def layout_html(batch: MTurkBatch) -> str:
    n = slots_per_hit(batch)
    return hit_html(batch, [{"n": k, "item": f"${{item_id_{k}}}", "url": f"${{image_url_{k}}}"}
                            for k in range(1, n + 1)], layout=True)


def export_csv(batch: MTurkBatch, base_url: str | None = None) -> str:
    """The input CSV (image URLs valid for the batch's lifetime: presigned S3, or signed Retag
    links under RETAG_PUBLIC_URL or ``base_url`` for images that are not on S3); marks the
    batch exported."""
    if batch.state not in (MTurkBatch.State.DRAFT, MTurkBatch.State.EXPORTED):
        raise BatchError(f"batch {batch.id} is {batch.get_state_display()}; only a draft can be exported")
    refuse_unservable(batch, base_url)
    n = slots_per_hit(batch)
    items = MTurkItem.objects.select_related("image").in_bulk(
        [i for ids in batch.hits.values_list("item_ids", flat=True) for i in ids])
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["hit"] + [f"{c}_{k}" for k in range(1, n + 1) for c in ("item_id", "image_url")])
    expires = url_lifetime(batch)
    for hit in batch.hits.order_by("position"):
        row = [hit.position]
        for k in range(n):
            if k < len(hit.item_ids):
                item = items[hit.item_ids[k]]
                row += [item.id, image_url(batch, item.image, expires, base_url)]
            else:
                row += ["", ""]
        w.writerow(row)
    if batch.state == MTurkBatch.State.DRAFT:
        batch.state, batch.sent_at, batch.error = MTurkBatch.State.EXPORTED, timezone.now(), ""
        batch.save(update_fields=["state", "sent_at", "error"])
    return out.getvalue()


def parse_time(text: str) -> datetime | None:
    text = (text or "").strip()
    if not text:
        return None
    parts = text.split()
    if len(parts) == 6 and parts[4] in TZ_OFFSETS:  # "Wed Nov 25 07:30:00 PST 2026"
        naive = datetime.strptime(" ".join(parts[:4] + parts[5:]), "%a %b %d %H:%M:%S %Y")
        return naive.replace(tzinfo=dt_timezone(timedelta(hours=TZ_OFFSETS[parts[4]])))
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise BatchError(f"cannot read the time {text!r}") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt_timezone.utc)


@transaction.atomic
def import_results_csv(batch: MTurkBatch, text: str, *, final: bool = False) -> dict:
    """Store the answers of a requester-UI results CSV, decide each new assignment and
    recompute consensus. Importing the same file twice adds nothing. ``final``: the
    batch is over on MTurk, HITs short of answers count as expired."""
    if batch.state not in (MTurkBatch.State.EXPORTED, MTurkBatch.State.APPLIED):
        raise BatchError("only a batch exported as CSV takes a results file")
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    missing = [c for c in RESULT_REQUIRED if c not in (reader.fieldnames or [])]
    if missing:
        raise BatchError(f"the results file lacks the columns {', '.join(missing)}")
    hits = {h.position: h for h in batch.hits.all()}
    new = approved = rejected = 0
    for line, row in enumerate(reader, start=2):
        try:
            hit = hits[int(row["Input.hit"])]
        except (KeyError, ValueError):
            raise BatchError(f"line {line}: Input.hit {row.get('Input.hit')!r} is not a HIT of this batch") from None
        for k, item_id in enumerate(hit.item_ids, start=1):
            given = (row.get(f"Input.item_id_{k}") or "").strip()
            if given and given != str(item_id):
                raise BatchError(f"line {line}: Input.item_id_{k} is {given}, the batch has {item_id} there")
        if not hit.hit_id:
            hit.hit_id = row["HITId"]
            hit.save(update_fields=["hit_id"])
        elif hit.hit_id != row["HITId"]:
            raise BatchError(f"line {line}: HIT {hit.position} is {hit.hit_id} in Retag, {row['HITId']} in the file")
        work = row.get("WorkTimeInSeconds")
        assignment, created = record_assignment(
            hit, assignment_id=row["AssignmentId"], worker_id=row["WorkerId"], status=row["AssignmentStatus"],
            answers={k[len("Answer."):]: v for k, v in row.items() if k and k.startswith("Answer.")},
            accept_time=parse_time(row.get("AcceptTime")), submit_time=parse_time(row.get("SubmitTime")),
            work_seconds=float(work) if work not in (None, "") else None, raw=json.dumps(row))
        if created:
            new += 1
            decision = decide(assignment)
            approved += decision == MTurkAssignment.Decision.APPROVE
            rejected += decision == MTurkAssignment.Decision.REJECT
    for hit in hits.values():
        if hit.status == MTurkHIT.Status.OPEN and hit.hit_id:
            if hit.assignments.count() >= hit.max_assignments:
                hit.status = MTurkHIT.Status.COMPLETE
            elif final:
                hit.status = MTurkHIT.Status.EXPIRED
            hit.save(update_fields=["status"])
    if final:  # HITs no worker ever took never appear in the file
        batch.hits.filter(status=MTurkHIT.Status.OPEN, hit_id="").update(status=MTurkHIT.Status.EXPIRED)
    compute_consensus(batch)
    batch.synced_at = timezone.now()
    batch.save(update_fields=["synced_at"])
    return {"new_assignments": new, "approved": approved, "rejected": rejected}


def decisions_csv(batch: MTurkBatch) -> str:
    """The results file back, ``Approve`` ("x") or ``Reject`` (the reason) filled, for the
    requester UI's "upload CSV" on the batch's results page."""
    rows = [json.loads(a.raw_answer) | {"Approve": "x" if a.decision == "approve" else "",
                                        "Reject": a.decision_reason if a.decision == "reject" else ""}
            for a in MTurkAssignment.objects.filter(hit__batch=batch, mturk_status="Submitted")
            .exclude(decision=MTurkAssignment.Decision.PENDING).order_by("id")]
    out = io.StringIO()
    if rows:
        fields = list(dict.fromkeys(k for r in rows for k in r))
        w = csv.DictWriter(out, fieldnames=fields, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    return out.getvalue()
