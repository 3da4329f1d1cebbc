"""The image page and its bytes (original and thumbnail). Its keyboard retags through the
API (POST /api/images/{id}/retag/, static/image.js)."""
from __future__ import annotations

import logging
import mimetypes

from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404
from django.views.decorators.http import require_GET

from ..models import Image, ImageStatus
from ..services import browse, quality
from ..services.roles import SCIENTIST, has_role
from ..services.similar import similar_images
from .common import browse_required, page

log = logging.getLogger(__name__)

# Originals are served only as these types; anything else is a download, never a page.
IMAGE_TYPES = {"image/jpeg", "image/png", "image/gif", "image/webp", "image/bmp", "image/tiff"}


@browse_required
def image_detail(request, image_id):
    image = get_object_or_404(Image.objects.select_related("project"), id=image_id)
    f = browse.parse_filter(image.project, request.GET)
    prev_id, next_id = browse.neighbours(f, image)
    return page(request, "labeling/image.html", {
        "image": image,
        "project": image.project,
        "f": f,
        "qs": f.querystring(),
        "facets": browse.facets(image),
        # The task the person arrived with (a grid filtered by it), else the first: selected.
        "focus_task_id": f.task.id if f.task else None,
        "history": browse.history(image),
        "prev_id": prev_id,
        "next_id": next_id,
        # What the latest run of every task predicted: for scientists and admins (annotators
        # judge the picture, not the model).
        "predictions": quality.image_predictions(image) if has_role(request.user, SCIENTIST) else [],
        # Where the file lives (a server path, a bucket) is for scientists and admins; an
        # annotator sees the image's key, its name in the project.
        "show_uri": has_role(request.user, SCIENTIST),
        # Nearest neighbours in the latest suspects run's embedding, any label.
        "similar": similar_images(image, k=12),
    }, project=image.project)


@require_GET
@browse_required
def image_original(request, image_id):
    """The original bytes, read through storage (file:// or s3://), and only from inside the
    readable roots, checked on the file actually opened: a file swapped for a symlink after
    its import is refused here, where its bytes are read."""
    from mlcore import storage

    from ..services.storage_roots import readable_roots

    image = get_object_or_404(Image, id=image_id)
    if image.status != ImageStatus.OK:
        raise Http404(f"image is {image.status}: {image.status_reason}")
    try:
        data = storage.read_bytes(image.uri, within=readable_roots())
    except Exception as e:  # noqa: BLE001 - OSError locally, botocore's errors on S3, OutsideRoot
        log.warning("original of image %s unreadable: %s", image.id, e)
        raise Http404("the original cannot be read from storage") from None
    content_type = mimetypes.guess_type(image.key)[0] or "application/octet-stream"
    response = HttpResponse(data, content_type=content_type if content_type in IMAGE_TYPES
                            else "application/octet-stream")
    if content_type not in IMAGE_TYPES:
        response["Content-Disposition"] = "attachment"
    response["Content-Security-Policy"] = "default-src 'none'; sandbox"
    response["Cache-Control"] = "private, max-age=3600"
    return response


@require_GET
@browse_required
def image_thumbnail(request, image_id):
    from ..services.thumbnails import thumbnail_bytes

    image = get_object_or_404(Image, id=image_id)
    if image.status != ImageStatus.OK:
        raise Http404(f"image is {image.status}")
    try:
        data = thumbnail_bytes(image)
    except Exception as e:  # noqa: BLE001 - a thumbnail that cannot be made is a 404, logged
        log.warning("thumbnail of image %s failed: %s", image.id, e)
        raise Http404("no thumbnail") from None
    response = HttpResponse(data, content_type="image/jpeg")
    # The URL carries the checksum, so a changed original gets a new URL.
    response["Cache-Control"] = "private, max-age=86400"
    return response

