"""How a batch's images reach workers: time-limited URLs.

An image whose original is on S3 is presigned where it is; otherwise its thumbnail (or
original) is uploaded once to ``MTURK_IMAGE_BUCKET`` and presigned there; otherwise Retag
serves its thumbnail itself through a signed, expiring URL (``/mturk/image/<token>/``,
django.core.signing), under ``RETAG_PUBLIC_URL`` (or, for a CSV exported from the page, the
address the admin uses), which workers' browsers must be able to reach. With none of these
the batch is refused before anything is sent, naming the images and the settings that fix
it (:func:`unservable_images`). URLs live at most 7 days (SigV4's limit, kept for the
signed ones too), so a HIT's lifetime plus its assignment duration must fit.
"""
from __future__ import annotations

import mimetypes
import os
import threading

from django.conf import settings

from mlcore import storage

from ...models import Image, MTurkBatch
from .errors import BatchError

MAX_PRESIGN_S = 7 * 24 * 3600


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


# The one account of it the pages and the README give (the new-batch page shows this).
HOW_IMAGES_REACH_WORKERS = (
    "Workers see each image through a link that expires with the HIT: an image on S3 is presigned where it is; "
    "any other is uploaded to MTURK_IMAGE_BUCKET when that is set, or else served by Retag itself through signed "
    "links under RETAG_PUBLIC_URL (a CSV export falls back to the address you use). With neither, a batch of such "
    "images is refused before anything is sent.")

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
