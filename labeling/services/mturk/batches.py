"""Building a batch and sending it to MTurk as HTMLQuestion HITs.

Images reach workers through time-limited URLs (services.mturk.images); pricing is
services.mturk.cost. Every failure of a send is recorded on the batch (``error`` in words from
services.mturk.errors, never only in the worker's log); the batch stays a draft unless MTurk
was already asked for HITs (then ``failed``: :func:`record_failure`).
"""
from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from decimal import Decimal

from django.db import transaction
from django.template.loader import render_to_string
from django.utils import timezone

from ...models import Annotation, Image, MTurkBatch, MTurkHIT, MTurkItem, Project, Task
from ..labels import ordered_labels
from . import client as mt
from .cost import CENT, batch_cost, estimate_cost
from .errors import BatchError
from .images import MAX_PRESIGN_S, image_url, refuse_unservable, url_lifetime
from .images import hosting, image_for_token, presigned_url, signed_image_url  # noqa: F401 - callers reach them here
from .selection import describe, select

NONE, CANT_TELL = "none", "cant_tell"
SPECIAL_CHOICES = [(NONE, "None of these"), (CANT_TELL, "Can't tell")]
PERCENT_APPROVED_QUAL = "000000000000000000L0"  # MTurk's system "Worker_PercentAssignmentsApproved"
HTML_QUESTION_NS = "http://mechanicalturk.amazonaws.com/AWSMechanicalTurkDataSchemas/2011-11-11/HTMLQuestion.xsd"


SENDABLE = (MTurkBatch.State.DRAFT, MTurkBatch.State.FAILED)  # what an admin may send (again)


def choices(task: Task) -> list[tuple[str, str]]:
    """(value, text) of the buttons: the task's labels in order, then the two way-outs."""
    return [(str(lb.id), lb.name) for lb in ordered_labels(task)] + SPECIAL_CHOICES


# --- build ---------------------------------------------------------------------------

@dataclass
class BatchOptions:
    assignments_per_image: int = 3
    reward: Decimal = Decimal("0.05")
    images_per_hit: int = 1
    lifetime_seconds: int = 3 * 24 * 3600
    assignment_duration_seconds: int = 600
    auto_approval_delay_seconds: int = 3 * 24 * 3600
    min_approval_rate: int | None = 95
    qualification_type_id: str = ""
    qualification_min_score: int = 1
    agreement_threshold: float = 0.6
    min_seconds_per_image: float = 2.0
    reject_failed_gold: bool = True

    def validate(self) -> None:
        problems = []
        if not 1 <= self.assignments_per_image <= 100:
            problems.append("assignments per image must be 1 to 100")
        if Decimal(self.reward) < CENT:
            problems.append("the reward must be at least $0.01")
        if not 1 <= self.images_per_hit <= 50:
            problems.append("images per HIT must be 1 to 50")
        if self.lifetime_seconds < 60:
            problems.append("the lifetime must be at least a minute")
        if not 30 <= self.assignment_duration_seconds <= 24 * 3600:
            problems.append("the assignment duration must be 30 s to 24 h")
        if self.lifetime_seconds + self.assignment_duration_seconds > MAX_PRESIGN_S:
            problems.append("lifetime + assignment duration must fit in 7 days (presigned image URLs expire)")
        if not 0 <= self.auto_approval_delay_seconds <= 30 * 24 * 3600:
            problems.append("the auto-approval delay must be 0 to 30 days")
        if self.min_approval_rate is not None and not 0 <= self.min_approval_rate <= 100:
            problems.append("the approval rate is a percentage, 0 to 100")
        if not 0 < self.agreement_threshold <= 1:
            problems.append("the agreement threshold must be in (0, 1]")
        if problems:
            raise BatchError("; ".join(problems))


@transaction.atomic
def build_batch(*, project: Project, task: Task, selection_kind: str, selection_params: dict, by=None,
                options: BatchOptions | None = None, gold_image_ids=(), name: str = "",
                production: bool = False, title: str = "", description: str = "") -> MTurkBatch:
    """A draft batch: its images with the label version they have now, and its planned HITs.

    Gold images (known answers, their current label) are mixed in, one per HIT, to check
    workers; they are never applied.
    """
    options = options or BatchOptions()
    options.validate()
    if task.project_id != project.id:
        raise BatchError("the task belongs to another project")
    if production and not mt.production_allowed():
        raise BatchError("production MTurk needs MTURK_PRODUCTION=true; this batch would go to the sandbox")
    gold_ids = [int(i) for i in dict.fromkeys(gold_image_ids)]
    image_ids = [i for i in select(project, task, selection_kind, selection_params) if i not in set(gold_ids)]
    if not image_ids:
        raise BatchError("the selection has no images")
    current = {a.image_id: a for a in Annotation.objects.filter(task=task, image_id__in=image_ids + gold_ids)}
    gold_missing = [i for i in gold_ids if i not in current or current[i].label_id is None]
    if gold_missing:
        raise BatchError(f"gold images need a label for {task.name!r}: {gold_missing[:10]}")
    if Image.objects.filter(project=project, id__in=gold_ids).count() != len(gold_ids):
        raise BatchError("gold images must be images of the project")

    batch = MTurkBatch.objects.create(
        project=project, task=task, created_by=by, production=production,
        name=name or f"{task.name} retag {timezone.now():%Y-%m-%d %H:%M}",
        selection={"kind": selection_kind, "params": selection_params,
                   "description": describe(selection_kind, selection_params)},
        title=title or f"Choose the {task.name} of each picture",
        description=description or f"Look at each picture and pick its {task.name}.",
        assignments_per_image=options.assignments_per_image, reward=Decimal(options.reward),
        images_per_hit=options.images_per_hit, lifetime_seconds=options.lifetime_seconds,
        assignment_duration_seconds=options.assignment_duration_seconds,
        auto_approval_delay_seconds=options.auto_approval_delay_seconds,
        min_approval_rate=options.min_approval_rate, qualification_type_id=options.qualification_type_id,
        qualification_min_score=options.qualification_min_score,
        agreement_threshold=options.agreement_threshold, min_seconds_per_image=options.min_seconds_per_image,
        reject_failed_gold=options.reject_failed_gold)

    def item(image_id, gold):
        a = current.get(image_id)
        return MTurkItem(batch=batch, image_id=image_id, is_gold=gold, gold_label_id=a.label_id if gold else None,
                         expected_version=a.version if a else 0, label_at_build_id=a.label_id if a else None)

    items = MTurkItem.objects.bulk_create([item(i, False) for i in image_ids] + [item(i, True) for i in gold_ids])
    regular = [it.id for it in items if not it.is_gold]
    gold = [it.id for it in items if it.is_gold]
    n = options.images_per_hit
    MTurkHIT.objects.bulk_create([
        MTurkHIT(batch=batch, position=p, max_assignments=options.assignments_per_image,
                 item_ids=regular[p * n:(p + 1) * n] + ([gold[p % len(gold)]] if gold else []),
                 unique_token=f"retag-b{batch.id}-h{p}-{uuid.uuid4().hex[:16]}")
        for p in range(math.ceil(len(regular) / n))])
    return batch


# --- the HIT page --------------------------------------------------------------------

def hit_html(batch: MTurkBatch, slots: list[dict], *, layout: bool = False) -> str:
    """The worker's page. ``slots``: [{"n": 1, "item": id, "url": ...}]; in ``layout`` mode
    (the requester UI's batch upload) the values are ``${...}`` variables and MTurk wraps
    the page in its own form, so there is no form and no externalSubmit here."""
    return render_to_string("mturk/hit.html", {
        "batch": batch, "slots": slots, "choices": choices(batch.task), "layout": layout,
        "submit_url": mt.submit_url(batch.production),
    })


def html_question(html: str, frame_height: int = 0) -> str:
    """The HTMLQuestion XML MTurk wants: the page in CDATA (FrameHeight 0 sizes it to the window)."""
    if "]]>" in html:
        html = html.replace("]]>", "]]]]><![CDATA[>")
    return (f'<HTMLQuestion xmlns="{HTML_QUESTION_NS}"><HTMLContent><![CDATA[\n{html}\n]]></HTMLContent>'
            f"<FrameHeight>{int(frame_height)}</FrameHeight></HTMLQuestion>")


def hit_question(batch: MTurkBatch, hit: MTurkHIT) -> str:
    items = MTurkItem.objects.select_related("image").in_bulk(hit.item_ids)
    expires = url_lifetime(batch)
    slots = [{"n": n, "item": item_id, "url": image_url(batch, items[item_id].image, expires)}
             for n, item_id in enumerate(hit.item_ids, start=1)]
    question = html_question(hit_html(batch, slots))
    if len(question) > 131072:  # MTurk's limit on Question
        raise BatchError(f"HIT {hit.position} is too large for MTurk ({len(question)} characters)")
    return question


# --- send ----------------------------------------------------------------------------

def preflight(batch: MTurkBatch) -> str:
    """Why sending would fail before it reaches MTurk (images workers could not see, no AWS
    credentials), in words an admin can act on; "" when nothing is known to be wrong."""
    from .errors import NO_CREDENTIALS, NO_CREDENTIALS_FIX

    try:
        refuse_unservable(batch)
    except BatchError as exc:
        return str(exc)
    import boto3

    if boto3.session.Session().get_credentials() is None:
        return NO_CREDENTIALS_FIX if hits_asked(batch) else NO_CREDENTIALS
    return ""


def qualification_requirements(batch: MTurkBatch) -> list[dict]:
    reqs = []
    if batch.min_approval_rate is not None:
        reqs.append({"QualificationTypeId": PERCENT_APPROVED_QUAL, "Comparator": "GreaterThanOrEqualTo",
                     "IntegerValues": [int(batch.min_approval_rate)], "ActionsGuarded": "DiscoverPreviewAndAccept"})
    if batch.qualification_type_id:
        reqs.append({"QualificationTypeId": batch.qualification_type_id, "Comparator": "GreaterThanOrEqualTo",
                     "IntegerValues": [int(batch.qualification_min_score)],
                     "ActionsGuarded": "DiscoverPreviewAndAccept"})
    return reqs


def requester_annotation(batch: MTurkBatch, hit: MTurkHIT) -> str:
    return f"retag:batch={batch.id}:hit={hit.position}"


def client_for(batch: MTurkBatch, client=None):
    return client if client is not None else mt.make_client(batch.production)


def record_failure(batch: MTurkBatch, error: str, *, asked: bool | None = None) -> MTurkBatch:
    """Say on the batch why its send failed. Before MTurk was asked for any HIT (no credentials,
    images workers could not see, a short balance, no broker) it stays a draft, so it can still
    be exported as a CSV or sent again; once HITs may exist on MTurk (``asked``: this send or an
    earlier one asked for one, whose answer may have been lost) it is ``failed``: sendable again,
    where the HITs' UniqueRequestTokens stop doubles, but not exportable, as a CSV would make
    them twice. ``asked`` defaults to what the batch says of earlier sends."""
    if asked is None:
        asked = hits_asked(batch)
    if asked or batch.hits.exclude(hit_id="").exists():
        batch.state = MTurkBatch.State.FAILED
    else:
        batch.state, batch.hit_type_id = MTurkBatch.State.DRAFT, ""  # a HIT type alone costs nothing
    batch.error = error
    MTurkBatch.objects.filter(pk=batch.pk).update(state=batch.state, error=error, hit_type_id=batch.hit_type_id)
    return batch


def hits_asked(batch: MTurkBatch) -> bool:
    """Whether an earlier send asked MTurk for HITs: it failed after that, or it left a HIT type
    (a send that failed before asking clears it, :func:`record_failure`)."""
    return batch.state == MTurkBatch.State.FAILED or bool(batch.hit_type_id)


def send_batch(batch: MTurkBatch, client=None, *, check_balance: bool = True) -> MTurkBatch:
    """Create the batch's HIT type and HITs. Safe to call again after a failure: HITs that
    exist are skipped, and each HIT's UniqueRequestToken stops MTurk making one twice. A failure
    before the first HIT was asked for leaves a draft (:func:`record_failure`)."""
    from botocore.exceptions import ClientError

    if batch.state not in (*SENDABLE, MTurkBatch.State.SENDING):
        raise BatchError(f"batch {batch.id} is {batch.get_state_display()}; only a draft can be sent")
    # Has MTurk been asked for a HIT? Its answer may be lost, the HIT made all the same.
    asked = hits_asked(batch)
    MTurkBatch.objects.filter(pk=batch.pk).update(state=MTurkBatch.State.SENDING, error="")
    batch.state = MTurkBatch.State.SENDING
    try:
        refuse_unservable(batch)
        client = client_for(batch, client)
        if check_balance:
            cost = batch_cost(batch)
            pending = batch.hits.filter(hit_id="").count()
            need = estimate_cost(hits=pending, assignments_per_hit=batch.assignments_per_image,
                                 reward=batch.reward).total
            balance = mt.account_balance(client)["available"]
            if balance < need:
                raise BatchError(f"the account has ${balance}, the batch needs ${need} (of ${cost.total}): "
                                 f"add funds on the requester website, then send again")
        if not batch.hit_type_id:
            r = mt.call(client, "create_hit_type",
                        Title=batch.title, Description=batch.description, Reward=str(batch.reward),
                        AssignmentDurationInSeconds=batch.assignment_duration_seconds,
                        AutoApprovalDelayInSeconds=batch.auto_approval_delay_seconds,
                        Keywords=f"image, label, {batch.task.name}, retag",
                        QualificationRequirements=qualification_requirements(batch))
            batch.hit_type_id = r["HITTypeId"]
            batch.save(update_fields=["hit_type_id"])
        for hit in batch.hits.filter(hit_id="").order_by("position"):
            params = dict(HITTypeId=batch.hit_type_id, MaxAssignments=hit.max_assignments,
                          LifetimeInSeconds=batch.lifetime_seconds, Question=hit_question(batch, hit),
                          RequesterAnnotation=requester_annotation(batch, hit), UniqueRequestToken=hit.unique_token)
            asked = True  # after the question: an image that cannot be uploaded still leaves a draft
            try:
                created = mt.call(client, "create_hit_with_hit_type", **params)["HIT"]
                hit.hit_id, hit.expires_at = created["HITId"], created.get("Expiration")
            except ClientError as exc:
                hit_id = _existing_hit_id(exc)
                if not hit_id:
                    raise
                # An earlier try created it (its answer was lost): take that HIT.
                found = mt.call(client, "get_hit", HITId=hit_id)["HIT"]
                hit.hit_id, hit.expires_at = hit_id, found.get("Expiration")
            hit.save(update_fields=["hit_id", "expires_at"])
    except Exception as exc:  # noqa: BLE001 - no credentials, offline, refused...: all shown on the batch
        from .errors import explain

        asked = asked or batch.hits.exclude(hit_id="").exists()
        record_failure(batch, explain(exc, production=batch.production, exportable=not asked), asked=asked)
        raise
    batch.state, batch.sent_at = MTurkBatch.State.SENT, timezone.now()
    batch.save(update_fields=["state", "sent_at"])
    return batch


def _existing_hit_id(exc) -> str:
    """The HITId in MTurk's "already exists" answer to a reused UniqueRequestToken."""
    import re

    text = f"{mt.turk_error_code(exc)} {mt.error_message(exc)}"
    if "AlreadyExists" not in text and "already exists" not in text.lower():
        return ""
    m = re.search(r"\b([A-Z0-9]{30})\b", mt.error_message(exc))
    return m.group(1) if m else ""


def worker_site(batch: MTurkBatch) -> str:
    return mt.PRODUCTION_WORKER_SITE if batch.production else mt.SANDBOX_WORKER_SITE


def label_names(task: Task) -> dict[str, str]:
    """choice value -> text, for summaries."""
    return dict(choices(task))

