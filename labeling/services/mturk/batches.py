"""Building a batch, pricing it, and sending it to MTurk as HTMLQuestion HITs.

Images reach workers through time-limited URLs. An image whose original is on S3 is
presigned where it is; otherwise its thumbnail (or original) is uploaded once to
``MTURK_IMAGE_BUCKET`` and presigned there; otherwise Retag serves its thumbnail itself
through a signed, expiring URL (``/mturk/image/<token>/``, django.core.signing), under
``RETAG_PUBLIC_URL`` (or, for a CSV exported from the page, the address the admin uses),
which workers' browsers must be able to reach. With none of these the batch is refused
before anything is sent, naming the images and the settings that fix it
(:func:`unservable_images`). URLs live at most 7 days (SigV4's limit, kept for the
signed ones too), so a HIT's lifetime plus its assignment duration must fit.

Every failure of a send is recorded on the batch (state ``failed`` and ``error`` in words
from services.mturk.errors), never only in the worker's log.
"""
from __future__ import annotations

import math
import mimetypes
import os
import threading
import uuid
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from django.conf import settings
from django.db import transaction
from django.template.loader import render_to_string
from django.utils import timezone

from mlcore import storage

from ...models import Annotation, Image, MTurkBatch, MTurkHIT, MTurkItem, Project, Task
from ..labels import ordered_labels
from . import client as mt
from .selection import describe, select

NONE, CANT_TELL = "none", "cant_tell"
SPECIAL_CHOICES = [(NONE, "None of these"), (CANT_TELL, "Can't tell")]
PERCENT_APPROVED_QUAL = "000000000000000000L0"  # MTurk's system "Worker_PercentAssignmentsApproved"
MAX_PRESIGN_S = 7 * 24 * 3600
CENT = Decimal("0.01")
HTML_QUESTION_NS = "http://mechanicalturk.amazonaws.com/AWSMechanicalTurkDataSchemas/2011-11-11/HTMLQuestion.xsd"


SENDABLE = (MTurkBatch.State.DRAFT, MTurkBatch.State.FAILED)  # what an admin may send (again)


class BatchError(ValueError):
    """The batch asks for something that cannot be sent."""


def choices(task: Task) -> list[tuple[str, str]]:
    """(value, text) of the buttons: the task's labels in order, then the two way-outs."""
    return [(str(lb.id), lb.name) for lb in ordered_labels(task)] + SPECIAL_CHOICES


# --- cost ----------------------------------------------------------------------------

FEE_RATE = Decimal("0.20")        # Amazon's commission on a reward
LARGE_HIT_FEE_RATE = Decimal("0.40")  # ... when a HIT has LARGE_HIT_ASSIGNMENTS or more assignments
LARGE_HIT_ASSIGNMENTS = 10
MIN_FEE = CENT                    # per assignment


def fee_rate(max_assignments: int) -> Decimal:
    """The share of the reward Amazon takes on a HIT with this many assignments."""
    return LARGE_HIT_FEE_RATE if max_assignments >= LARGE_HIT_ASSIGNMENTS else FEE_RATE


def fee_per_assignment(reward: Decimal, max_assignments: int) -> Decimal:
    """Amazon's commission on one assignment (:func:`fee_rate` of the reward, at least
    :data:`MIN_FEE`), rounded to the cent."""
    return max(MIN_FEE, (Decimal(reward) * fee_rate(max_assignments)).quantize(CENT, rounding=ROUND_HALF_UP))


def fee_rule() -> str:
    """The fee rule in words, for the pages (from the constants above, so it cannot drift)."""
    return (f"{FEE_RATE * 100:.0f}% of the reward, {LARGE_HIT_FEE_RATE * 100:.0f}% when a HIT has "
            f"{LARGE_HIT_ASSIGNMENTS} or more assignments, at least ${MIN_FEE} an assignment")


@dataclass
class Cost:
    hits: int
    assignments: int
    rewards: Decimal
    fees: Decimal
    fee_rate: Decimal

    @property
    def total(self) -> Decimal:
        return self.rewards + self.fees


def estimate_cost(*, hits: int, assignments_per_hit: int, reward: Decimal) -> Cost:
    reward = Decimal(reward)
    n = hits * assignments_per_hit
    return Cost(hits=hits, assignments=n, rewards=(reward * n).quantize(CENT),
                fees=(fee_per_assignment(reward, assignments_per_hit) * n).quantize(CENT),
                fee_rate=fee_rate(assignments_per_hit))


def batch_cost(batch: MTurkBatch) -> Cost:
    return estimate_cost(hits=batch.hits.count(), assignments_per_hit=batch.assignments_per_image,
                         reward=batch.reward)


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


# --- images --------------------------------------------------------------------------

def image_bucket() -> str:
    return getattr(settings, "MTURK_IMAGE_BUCKET", None) or os.environ.get("MTURK_IMAGE_BUCKET", "")


def public_base_url() -> str:
    """Where Retag is reachable from workers' browsers (RETAG_PUBLIC_URL), or ""."""
    return (getattr(settings, "RETAG_PUBLIC_URL", "") or "").rstrip("/")


def servable_uri(image: Image) -> str | None:
    """Where workers' browsers will fetch the image from (an s3:// URI), or None."""
    for uri in (image.uri, image.thumbnail_uri):
        if uri and storage.is_s3(uri):
            return uri
    if image_bucket():
        return f"s3://{image_bucket()}/mturk/{image.project_id}/{image.id}-{(image.checksum or 'x')[:16]}"
    return None


NOT_SERVABLE = ("{n} images are not on S3, MTURK_IMAGE_BUCKET is not set and Retag has no public address, so "
                "workers could not see them (first: {first}). Set RETAG_PUBLIC_URL to the address where Retag is "
                "reachable from the internet (it then serves the images itself through signed, expiring links), "
                "or MTURK_IMAGE_BUCKET to an S3 bucket Retag may upload them to.")


def unservable_images(batch: MTurkBatch, base_url: str | None = None) -> list[Image]:
    """Images workers could not see: not on S3, no bucket, and no address of Retag to sign a link under."""
    if base_url or public_base_url():
        return []
    images = Image.objects.filter(mturk_items__batch=batch).distinct()
    return [im for im in images if servable_uri(im) is None]


def refuse_unservable(batch: MTurkBatch, base_url: str | None = None) -> None:
    bad = unservable_images(batch, base_url)
    if bad:
        raise BatchError(NOT_SERVABLE.format(n=len(bad), first=", ".join(im.key for im in bad[:5])))


IMAGE_SALT = "retag.mturk.image"


def signed_image_url(batch: MTurkBatch, image: Image, base_url: str) -> str:
    """A link to the image's thumbnail that Retag serves without a login, to this batch's
    workers only while the batch's HITs can be worked (:func:`image_for_token`)."""
    from django.core import signing
    from django.urls import reverse

    token = signing.dumps({"b": batch.pk, "i": image.pk}, salt=IMAGE_SALT, compress=True)
    return base_url.rstrip("/") + reverse("mturk_image", args=[token])


def image_for_token(token: str) -> Image:
    """The image a signed link names; BatchError when the link is forged, expired or its batch
    no longer holds the image."""
    from django.core import signing

    try:
        payload = signing.loads(token, salt=IMAGE_SALT, max_age=MAX_PRESIGN_S)
        batch = MTurkBatch.objects.get(pk=int(payload["b"]))
        age_ok = signing.loads(token, salt=IMAGE_SALT, max_age=url_lifetime(batch))
    except signing.SignatureExpired:
        raise BatchError("this image link has expired") from None
    except (signing.BadSignature, MTurkBatch.DoesNotExist, KeyError, TypeError, ValueError):
        raise BatchError("this image link is not valid") from None
    image = Image.objects.filter(pk=int(age_ok["i"]), mturk_items__batch=batch).first()
    if image is None:
        raise BatchError("this image is not part of the batch any more")
    return image


def image_url(batch: MTurkBatch, image: Image, expires_in: int, base_url: str | None = None) -> str:
    """The URL a worker's browser loads the image from: presigned S3, or a signed Retag link."""
    if servable_uri(image) is not None:
        return presigned_url(image, expires_in)
    base = base_url or public_base_url()
    if not base:
        raise BatchError(NOT_SERVABLE.format(n=1, first=image.key))
    return signed_image_url(batch, image, base)


def hosting(batch: MTurkBatch, base_url: str | None = None) -> dict:
    """How this batch's images reach workers, for the batch page: ``{"how": "s3" | "retag" |
    "none", "base", "local", "message"}`` (``local``: the address is loopback or private, which
    workers on the internet cannot open)."""
    import ipaddress
    from urllib.parse import urlparse

    images = Image.objects.filter(mturk_items__batch=batch).distinct()
    on_s3 = all(servable_uri(im) is not None for im in images)
    if on_s3:
        return {"how": "s3", "base": "", "local": False,
                "message": "Images reach workers through presigned S3 links."}
    base = public_base_url() or (base_url or "").rstrip("/")
    if not base:
        return {"how": "none", "base": "", "local": False,
                "message": NOT_SERVABLE.format(n=sum(1 for im in images if servable_uri(im) is None),
                                               first=", ".join(im.key for im in images[:3]))}
    host = urlparse(base).hostname or ""
    try:
        local = host == "localhost" or ipaddress.ip_address(host).is_private or ipaddress.ip_address(host).is_loopback
    except ValueError:
        local = host.endswith((".local", ".internal", ".lan"))
    days = url_lifetime(batch) / 86400
    message = (f"Images not on S3 are served by Retag at {base}/mturk/image/… through signed links that expire "
               f"after {days:.1f} days.")
    if local:
        message += (f" {host} is not reachable from the internet, so workers could not open them: set "
                    "RETAG_PUBLIC_URL to Retag's public address (behind your reverse proxy), or MTURK_IMAGE_BUCKET "
                    "to an S3 bucket, before you export or send.")
    return {"how": "retag", "base": base, "local": local, "message": message}


def presigned_url(image: Image, expires_in: int) -> str:
    uri = servable_uri(image)
    if uri is None:
        raise BatchError(NOT_SERVABLE.format(n=1, first=image.key))
    if not (image.uri == uri or image.thumbnail_uri == uri) and not storage.exists(uri):
        source = image.thumbnail_uri or image.uri  # the thumbnail is enough for a worker, and small
        ctype = mimetypes.guess_type(source)[0] or "image/jpeg"
        storage.write_bytes(uri, storage.read_bytes(source), content_type=ctype)
    bucket, key = storage.split_s3(uri)
    return _presign_client().generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=min(expires_in, MAX_PRESIGN_S))


_presigners = threading.local()


def _presign_client():
    """S3 client that signs with SigV4 (the only kind every region accepts; at most 7 days)."""
    import boto3
    from botocore.config import Config

    where = (os.environ.get("S3_ENDPOINT_URL") or None, os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
             os.environ.get("AWS_ACCESS_KEY_ID"))
    cached = getattr(_presigners, "client", None)
    if cached is None or cached[0] != where:
        client = boto3.session.Session().client("s3", endpoint_url=where[0], region_name=where[1],
                                                config=Config(signature_version="s3v4"))
        _presigners.client = cached = (where, client)
    return cached[1]


def url_lifetime(batch: MTurkBatch) -> int:
    return batch.lifetime_seconds + batch.assignment_duration_seconds + 600


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
    from .errors import NO_CREDENTIALS

    try:
        refuse_unservable(batch)
    except BatchError as exc:
        return str(exc)
    import boto3

    if boto3.session.Session().get_credentials() is None:
        return NO_CREDENTIALS
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


def send_batch(batch: MTurkBatch, client=None, *, check_balance: bool = True) -> MTurkBatch:
    """Create the batch's HIT type and HITs. Safe to call again after a failure: HITs that
    exist are skipped, and each HIT's UniqueRequestToken stops MTurk making one twice."""
    from botocore.exceptions import ClientError

    if batch.state not in (*SENDABLE, MTurkBatch.State.SENDING):
        raise BatchError(f"batch {batch.id} is {batch.get_state_display()}; only a draft can be sent")
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

        batch.state, batch.error = MTurkBatch.State.FAILED, explain(exc, production=batch.production)
        batch.save(update_fields=["state", "error"])
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

