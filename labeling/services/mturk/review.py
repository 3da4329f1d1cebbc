"""What an admin reads before applying, applying, and the workers' record."""
from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass

from django.db import transaction
from django.utils import timezone

from ...models import EventSource, MTurkAnswer, MTurkAssignment, MTurkBatch, MTurkItem, MTurkWorker
from ..retag import RetagConflict, retag_image
from . import client as mt
from .batches import choices

DONE_WITH_CONSENSUS = (MTurkItem.Status.AGREED, MTurkItem.Status.APPLIED, MTurkItem.Status.UNCHANGED,
                       MTurkItem.Status.CONFLICT)


@dataclass
class WorkerStats:
    worker_id: str
    answers: int = 0
    agree: int = 0
    compared: int = 0
    gold_right: int = 0
    gold_total: int = 0
    approved: int = 0
    rejected: int = 0
    blocked: bool = False

    @property
    def agreement(self):
        return self.agree / self.compared if self.compared else None

    @property
    def gold_accuracy(self):
        return self.gold_right / self.gold_total if self.gold_total else None


def worker_stats(answers, assignments=None) -> dict[str, WorkerStats]:
    """Per worker: agreement with consensus and accuracy on gold, from answer rows."""
    stats: dict[str, WorkerStats] = {}
    for a in answers:
        s = stats.setdefault(a["worker_id"], WorkerStats(a["worker_id"]))
        s.answers += 1
        if a["item__is_gold"]:
            s.gold_total += 1
            s.gold_right += a["choice"] == str(a["item__gold_label_id"])
        elif a["item__status"] in DONE_WITH_CONSENSUS and a["item__consensus"]:
            s.compared += 1
            s.agree += a["choice"] == a["item__consensus"]
    for row in assignments or []:
        s = stats.setdefault(row["worker_id"], WorkerStats(row["worker_id"]))
        s.approved += row["decision"] == MTurkAssignment.Decision.APPROVE
        s.rejected += row["decision"] == MTurkAssignment.Decision.REJECT
    blocked = set(MTurkWorker.objects.filter(worker_id__in=stats, blocked=True).values_list("worker_id", flat=True))
    for s in stats.values():
        s.blocked = s.worker_id in blocked
    return stats


ANSWER_FIELDS = ("worker_id", "choice", "item__is_gold", "item__gold_label_id", "item__status", "item__consensus")


@dataclass
class Summary:
    counts: dict
    items: list
    workers: list
    changes: list  # [(from name, to name, n)]
    per_class: list  # [{"label", "out", "in"}]
    inhouse: list


def review_summary(batch: MTurkBatch) -> Summary:
    names = dict(choices(batch.task))
    items = list(batch.items.filter(is_gold=False).select_related("image", "label_at_build", "consensus_label"))
    tallies = defaultdict(Counter)
    for item_id, choice in (MTurkAnswer.objects.filter(item__batch=batch, item__is_gold=False).exclude(choice="")
                            .exclude(assignment__decision=MTurkAssignment.Decision.REJECT)
                            .values_list("item_id", "choice")):
        tallies[item_id][names.get(choice, choice)] += 1
    rows = [{"item": it, "tally": tallies[it.id].most_common()} for it in items]
    changes = Counter()
    out_, in_ = Counter(), Counter()
    for it in items:
        if it.status in DONE_WITH_CONSENSUS and it.consensus_label_id != it.label_at_build_id:
            frm = it.label_at_build.name if it.label_at_build_id else "(no label)"
            to = it.consensus_label.name
            changes[(frm, to)] += 1
            out_[frm] += 1
            in_[to] += 1
    per_class = [{"label": name, "out": out_[name], "in": in_[name]}
                 for _, name in choices(batch.task)[:-2] if out_[name] or in_[name]]
    answers = MTurkAnswer.objects.filter(item__batch=batch).values(*ANSWER_FIELDS)
    assignments = MTurkAssignment.objects.filter(hit__batch=batch).values("worker_id", "decision")
    workers = sorted(worker_stats(answers, assignments).values(), key=lambda s: s.worker_id)
    return Summary(counts=dict(Counter(it.status for it in items)), items=rows, workers=workers,
                   changes=[(f, t, n) for (f, t), n in changes.most_common()], per_class=per_class,
                   inhouse=[r for r in rows if r["item"].status == MTurkItem.Status.INHOUSE])


def apply_batch(batch: MTurkBatch, *, by) -> dict:
    """Consensus labels become label events (source mturk, reference ``mturk:<batch id>``).

    Each image is retagged from the version it had when the batch was built: if it was
    changed in-house since, it is left alone and reported as a conflict. An applied item
    is never applied again, so applying (or syncing) twice changes nothing.
    """
    result = {"changed": 0, "unchanged": 0, "conflicts": []}
    todo = batch.items.filter(is_gold=False, status=MTurkItem.Status.AGREED, applied_at__isnull=True)
    for item in todo.select_related("image", "consensus_label").order_by("id"):
        with transaction.atomic():
            # Two applies at once (a double click, page and API): the item goes to one of them.
            if not MTurkItem.objects.select_for_update().filter(pk=item.pk, applied_at__isnull=True).exists():
                continue
            try:
                r = retag_image(image=item.image, task=batch.task, label=item.consensus_label, by=by,
                                expected_version=item.expected_version, source=EventSource.MTURK,
                                reference=f"mturk:{batch.id}")
                item.status = MTurkItem.Status.APPLIED if r.event else MTurkItem.Status.UNCHANGED
                result["changed" if r.event else "unchanged"] += 1
            except RetagConflict as exc:
                item.status, item.reason = MTurkItem.Status.CONFLICT, str(exc)[:200]
                result["conflicts"].append({"image": item.image.key, "image_id": item.image_id, "reason": str(exc)})
            item.applied_at = timezone.now()
            item.save(update_fields=["status", "reason", "applied_at"])
    with transaction.atomic():
        locked = MTurkBatch.objects.select_for_update().get(pk=batch.pk)
        total = dict(locked.apply_summary or {})
        for k in ("changed", "unchanged"):
            total[k] = total.get(k, 0) + result[k]
        total["conflicts"] = (total.get("conflicts") or []) + result["conflicts"]
        batch.apply_summary = total
        batch.state, batch.applied_at, batch.applied_by = MTurkBatch.State.APPLIED, timezone.now(), by
        batch.save(update_fields=["apply_summary", "state", "applied_at", "applied_by"])
    return result


# --- workers -------------------------------------------------------------------------

def worker_history(worker_ids=None) -> dict[str, list[dict]]:
    """Per worker, per batch (oldest first): answers, agreement with consensus, gold accuracy."""
    answers = MTurkAnswer.objects.all()
    if worker_ids is not None:
        answers = answers.filter(worker_id__in=list(worker_ids))
    by_batch = defaultdict(list)
    for row in answers.values(*ANSWER_FIELDS, "item__batch_id"):
        by_batch[row["item__batch_id"]].append(row)
    batches = MTurkBatch.objects.in_bulk(list(by_batch))
    history = defaultdict(list)
    for batch_id in sorted(by_batch, key=lambda b: (batches[b].created_at, b)):
        for s in worker_stats(by_batch[batch_id]).values():
            history[s.worker_id].append({"batch": batches[batch_id], "stats": s})
    return dict(history)


def workers_overview() -> list[WorkerStats]:
    answers = MTurkAnswer.objects.values(*ANSWER_FIELDS)
    assignments = MTurkAssignment.objects.values("worker_id", "decision")
    stats = worker_stats(answers, assignments)
    for w in MTurkWorker.objects.exclude(worker_id__in=stats):
        stats[w.worker_id] = WorkerStats(w.worker_id, blocked=w.blocked)
    return sorted(stats.values(), key=lambda s: (s.agreement if s.agreement is not None else 2, s.worker_id))


def block_worker(worker_id: str, *, reason: str, client=None, production: bool | None = None) -> MTurkWorker:
    """CreateWorkerBlock: the worker sees none of this account's HITs any more."""
    if not reason.strip():
        raise ValueError("MTurk needs a reason to block a worker (the worker sees it)")
    production = mt.production_allowed() if production is None else production
    client = client if client is not None else mt.make_client(production)
    mt.call(client, "create_worker_block", WorkerId=worker_id, Reason=reason)
    worker, _ = MTurkWorker.objects.get_or_create(worker_id=worker_id)
    worker.blocked, worker.blocked_at, worker.block_reason = True, timezone.now(), reason[:500]
    worker.save()
    return worker


def unblock_worker(worker_id: str, *, client=None, production: bool | None = None) -> MTurkWorker:
    production = mt.production_allowed() if production is None else production
    client = client if client is not None else mt.make_client(production)
    mt.call(client, "delete_worker_block", WorkerId=worker_id, Reason="unblocked by the requester")
    worker, _ = MTurkWorker.objects.get_or_create(worker_id=worker_id)
    worker.blocked, worker.blocked_at, worker.block_reason = False, None, ""
    worker.save()
    return worker
