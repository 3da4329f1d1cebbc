"""Bringing answers back: assignments, approve/reject rules, consensus per image.

Everything here is idempotent: an assignment is stored once (its MTurk id is unique),
a decision is sent once, and consensus is recomputed only for images not yet applied.
"""
from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db import transaction
from django.utils import timezone

from ...models import MTurkAnswer, MTurkAssignment, MTurkBatch, MTurkHIT, MTurkItem, MTurkWorker
from . import client as mt
from .batches import CANT_TELL, NONE, choices, client_for

log = logging.getLogger(__name__)
OPEN_ITEM_STATES = (MTurkItem.Status.PENDING, MTurkItem.Status.AGREED, MTurkItem.Status.INHOUSE)
SYNCABLE = (MTurkBatch.State.SENT, MTurkBatch.State.APPLIED)
APPROVE_FEEDBACK = "Thank you."


@dataclass
class SyncResult:
    new_assignments: int = 0
    approved: int = 0
    rejected: int = 0
    decisions_sent: int = 0
    hits_complete: int = 0
    hits_expired: int = 0
    errors: list[str] = field(default_factory=list)


def parse_answer(xml_text: str) -> dict[str, str]:
    """QuestionFormAnswers XML -> {QuestionIdentifier: FreeText}."""
    if not xml_text:
        return {}
    root = ET.fromstring(xml_text)
    out = {}
    for answer in root.iter():
        if answer.tag.rsplit("}", 1)[-1] != "Answer":
            continue
        qid = next((c.text for c in answer if c.tag.endswith("QuestionIdentifier")), None)
        text = next((c.text for c in answer if c.tag.endswith("FreeText")), None)
        if qid:
            out[qid] = (text or "").strip()
    return out


@transaction.atomic
def record_assignment(hit: MTurkHIT, *, assignment_id: str, worker_id: str, status: str,
                      answers: dict[str, str], accept_time: datetime | None = None,
                      submit_time: datetime | None = None, work_seconds: float | None = None,
                      raw: str = "") -> tuple[MTurkAssignment, bool]:
    """Store one submission and its answers (``label_<n>`` -> choice); (assignment, created).

    Seen before: only MTurk's status is refreshed (an auto-approval, a decision made on
    the requester site), the answers stay as first stored.
    """
    existing = MTurkAssignment.objects.select_for_update().filter(assignment_id=assignment_id).first()
    if existing is not None:
        if existing.mturk_status != status:
            existing.mturk_status = status
            if existing.decision == MTurkAssignment.Decision.PENDING and status in ("Approved", "Rejected"):
                existing.decision = "approve" if status == "Approved" else "reject"
                existing.decision_reason, existing.decision_sent_at = f"{status.lower()} on MTurk", timezone.now()
            existing.save()
        return existing, False
    if work_seconds is None and accept_time and submit_time:
        work_seconds = (submit_time - accept_time).total_seconds()
    assignment = MTurkAssignment.objects.create(
        hit=hit, assignment_id=assignment_id, worker_id=worker_id, mturk_status=status,
        accept_time=accept_time, submit_time=submit_time, work_seconds=work_seconds, raw_answer=raw)
    if status in ("Approved", "Rejected"):  # decided on MTurk before we saw it
        assignment.decision = "approve" if status == "Approved" else "reject"
        assignment.decision_reason, assignment.decision_sent_at = f"{status.lower()} on MTurk", timezone.now()
        assignment.save()
    MTurkWorker.objects.get_or_create(worker_id=worker_id)
    valid = {value for value, _ in choices(hit.batch.task)}
    MTurkAnswer.objects.bulk_create([
        MTurkAnswer(assignment=assignment, item_id=item_id, worker_id=worker_id, submitted_at=submit_time,
                    choice=value if (value := answers.get(f"label_{n}", "")) in valid else "")
        for n, item_id in enumerate(hit.item_ids, start=1)])
    return assignment, True


def decide(assignment: MTurkAssignment) -> str:
    """Approve or reject a submitted assignment by the batch's rules; returns the decision."""
    if assignment.decision != MTurkAssignment.Decision.PENDING or assignment.mturk_status != "Submitted":
        return assignment.decision
    batch = assignment.hit.batch
    answers = list(assignment.answers.select_related("item"))
    reason = ""
    failed_gold = [a for a in answers if a.item.is_gold and a.choice != str(a.item.gold_label_id)]
    if batch.reject_failed_gold and failed_gold:
        reason = f"Wrong answer on {len(failed_gold)} picture(s) whose answer is known."
    elif assignment.work_seconds is not None and batch.min_seconds_per_image:
        minimum = batch.min_seconds_per_image * len(answers)
        if assignment.work_seconds < minimum:
            reason = (f"Submitted in {assignment.work_seconds:.0f} s, under the {minimum:.0f} s "
                      f"the {len(answers)} picture(s) need.")
    assignment.decision = MTurkAssignment.Decision.REJECT if reason else MTurkAssignment.Decision.APPROVE
    assignment.decision_reason = reason
    assignment.save(update_fields=["decision", "decision_reason"])
    return assignment.decision


def send_decisions(batch: MTurkBatch, client, result: SyncResult) -> None:
    """ApproveAssignment / RejectAssignment for every decision not yet told to MTurk."""
    from botocore.exceptions import ClientError

    todo = (MTurkAssignment.objects.filter(hit__batch=batch, decision_sent_at__isnull=True)
            .exclude(decision=MTurkAssignment.Decision.PENDING).order_by("id"))
    for a in todo:
        try:
            if a.decision == MTurkAssignment.Decision.APPROVE:
                mt.call(client, "approve_assignment", AssignmentId=a.assignment_id, RequesterFeedback=APPROVE_FEEDBACK)
                a.mturk_status = "Approved"
            else:
                mt.call(client, "reject_assignment", AssignmentId=a.assignment_id, RequesterFeedback=a.decision_reason)
                a.mturk_status = "Rejected"
            result.decisions_sent += 1
        except ClientError as exc:
            # MTurk refuses (already auto-approved, HIT gone...): keep why and do not ask again.
            a.decision_error = f"{mt.error_code(exc)}: {mt.error_message(exc)}"
            result.errors.append(f"assignment {a.assignment_id}: {a.decision_error}")
        a.decision_sent_at = timezone.now()
        a.save(update_fields=["mturk_status", "decision_sent_at", "decision_error"])


def refresh_hit_status(hit: MTurkHIT, now: datetime) -> None:
    """Complete when every assignment is in; expired once its lifetime (plus the time an
    accepted assignment may still take) is over."""
    if hit.status != MTurkHIT.Status.OPEN:
        return
    if hit.assignments.count() >= hit.max_assignments:
        hit.status = MTurkHIT.Status.COMPLETE
    elif hit.expires_at and now > hit.expires_at + timedelta(seconds=hit.batch.assignment_duration_seconds):
        hit.status = MTurkHIT.Status.EXPIRED
    else:
        return
    hit.save(update_fields=["status"])


def sync_batch(batch: MTurkBatch, client=None, *, now: datetime | None = None) -> SyncResult:
    """Fetch new submissions of every open HIT, decide, tell MTurk, recompute consensus."""
    from botocore.exceptions import ClientError

    if batch.state not in SYNCABLE:
        raise mt.MTurkError(f"batch {batch.id} is {batch.get_state_display()}; only sent batches sync")
    client = client_for(batch, client)
    now = now or timezone.now()
    result = SyncResult()
    for hit in batch.hits.filter(status=MTurkHIT.Status.OPEN).exclude(hit_id="").order_by("position"):
        try:
            listed = list(mt.paginate(client, "list_assignments_for_hit", "Assignments", HITId=hit.hit_id,
                                      MaxResults=100, AssignmentStatuses=["Submitted", "Approved", "Rejected"]))
        except ClientError as exc:
            if mt.error_code(exc) != "RequestError":
                raise
            # MTurk no longer knows the HIT (disposed long after it expired): keep what we have.
            hit.status, hit.error = MTurkHIT.Status.GONE, mt.error_message(exc)
            hit.save(update_fields=["status", "error"])
            result.errors.append(f"HIT {hit.hit_id}: {hit.error}")
            continue
        for a in listed:
            assignment, created = record_assignment(
                hit, assignment_id=a["AssignmentId"], worker_id=a["WorkerId"], status=a["AssignmentStatus"],
                answers=parse_answer(a.get("Answer", "")), accept_time=a.get("AcceptTime"),
                submit_time=a.get("SubmitTime"), raw=a.get("Answer", ""))
            if created:
                result.new_assignments += 1
                decision = decide(assignment)
                result.approved += decision == MTurkAssignment.Decision.APPROVE
                result.rejected += decision == MTurkAssignment.Decision.REJECT
        refresh_hit_status(hit, now)
        result.hits_complete += hit.status == MTurkHIT.Status.COMPLETE
        result.hits_expired += hit.status == MTurkHIT.Status.EXPIRED
    send_decisions(batch, client, result)
    compute_consensus(batch)
    batch.synced_at = now
    batch.save(update_fields=["synced_at"])
    return result


# --- consensus ---------------------------------------------------------------------

def compute_consensus(batch: MTurkBatch) -> None:
    """Majority per image over answers of assignments not rejected, once its HITs are done
    (or it has every answer). Ties, "can't tell", "none of these" and agreement under the
    batch's threshold go to in-house review. Applied items never change again."""
    items = {it.id: it for it in batch.items.filter(is_gold=False, status__in=OPEN_ITEM_STATES)}
    if not items:
        return
    tallies: dict[int, Counter] = {i: Counter() for i in items}
    for item_id, choice in (MTurkAnswer.objects.filter(item_id__in=items).exclude(choice="")
                            .exclude(assignment__decision=MTurkAssignment.Decision.REJECT)
                            .values_list("item_id", "choice")):
        tallies[item_id][choice] += 1
    open_items = set()
    for item_ids in batch.hits.filter(status=MTurkHIT.Status.OPEN).values_list("item_ids", flat=True):
        open_items.update(item_ids)
    names = dict(choices(batch.task))
    changed = []
    for item_id, item in items.items():
        tally = tallies[item_id]
        n = sum(tally.values())
        ranked = tally.most_common()
        before = (item.status, item.consensus, item.answers, item.agreement, item.reason)
        item.answers = n
        item.agreement = ranked[0][1] / n if n else None
        item.consensus, item.consensus_label_id, item.reason = "", None, ""
        if item_id in open_items and n < batch.assignments_per_image:
            item.status = MTurkItem.Status.PENDING
        elif n == 0:
            item.status, item.reason = MTurkItem.Status.INHOUSE, "no usable answers"
        elif len(ranked) > 1 and ranked[0][1] == ranked[1][1]:
            tied = [names.get(c, c) for c, k in ranked if k == ranked[0][1]]
            item.status, item.reason = MTurkItem.Status.INHOUSE, f"tie: {' / '.join(tied)}"
        else:
            top = ranked[0][0]
            item.consensus = top
            if top == CANT_TELL:
                item.status, item.reason = MTurkItem.Status.INHOUSE, "workers can't tell"
            elif top == NONE:
                item.status, item.reason = MTurkItem.Status.INHOUSE, "workers say none of the labels fits"
            elif item.agreement < batch.agreement_threshold:
                item.status = MTurkItem.Status.INHOUSE
                item.reason = f"agreement {item.agreement:.0%} under {batch.agreement_threshold:.0%}"
            else:
                item.status, item.consensus_label_id = MTurkItem.Status.AGREED, int(top)
        if before != (item.status, item.consensus, item.answers, item.agreement, item.reason):
            changed.append(item)
    MTurkItem.objects.bulk_update(changed, ["status", "consensus", "consensus_label", "answers", "agreement",
                                            "reason"])


def sync_batch_locked(batch_id: int, client=None) -> SyncResult | None:
    """Sync one batch unless another sync of it is running (beat and the button may meet)."""
    with transaction.atomic():
        batch = MTurkBatch.objects.select_for_update(skip_locked=True).filter(pk=batch_id).first()
        if batch is None:
            return None
        return sync_batch(batch, client)


def sync_open_batches(client_factory=None) -> dict[int, str]:
    """What the beat task runs: every sent batch with open HITs; one failing does not stop the rest."""
    done = {}
    ids = (MTurkBatch.objects.filter(state__in=SYNCABLE, hits__status=MTurkHIT.Status.OPEN)
           .exclude(hits__hit_id="").values_list("id", flat=True).distinct())
    for batch_id in list(ids):
        try:
            client = client_factory(MTurkBatch.objects.get(pk=batch_id)) if client_factory else None
            r = sync_batch_locked(batch_id, client)
            done[batch_id] = "busy" if r is None else f"{r.new_assignments} new assignments"
        except Exception as exc:  # noqa: BLE001 - one batch's failure must not stop the others
            log.exception("mturk sync of batch %s failed", batch_id)
            done[batch_id] = f"failed: {exc}"
    return done
