"""The image page, its bytes (original and thumbnail) and the keyboard retag endpoint."""
from __future__ import annotations

import logging
import mimetypes

from django.http import Http404, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404
from django.views.decorators.http import require_GET, require_POST

from ..models import Image, ImageStatus, Task
from ..services import browse, quality
from ..services.roles import SCIENTIST, has_role
from ..services.similar import similar_images
from ..services.retag import RetagConflict, RetagError, retag_image
from .common import browse_required, json_body, json_endpoint, page

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


def _facet_json(image: Image, task: Task) -> dict:
    facet = next(fc for fc in browse.facets(image) if fc.task.id == task.id)
    return {
        "task": task.id,
        "label": facet.current.id if facet.current else None,
        "label_name": facet.current.name if facet.current else None,
        "version": facet.version,
        "verified": facet.verified,
    }


@require_POST
@browse_required
@json_endpoint
def image_retag(request, image_id):
    """Set one label, as the keyboard on the image page asks: JSON in, JSON out.

    ``{"task": id, "label": id, "expected_version": n}`` (the API's retag body, checked by
    the same serializer) -> 200 with the facet and the fresh history; 409 (nothing
    written) when the version seen is no longer current.
    """
    from ..api.serializers import RetagRequestSerializer

    image = get_object_or_404(Image, id=image_id)
    body = RetagRequestSerializer(data=json_body(request))
    if not body.is_valid():
        return JsonResponse({"error": "bad_request", "errors": body.errors,
                             "message": "send task, label (of that task) and expected_version"}, status=400)
    task, label = body.validated_data["task"], body.validated_data["label"]
    try:
        result = retag_image(image=image, task=task, label=label, by=request.user,
                             expected_version=body.validated_data["expected_version"])
    except RetagConflict:
        return JsonResponse({
            "error": "conflict",
            "message": "Someone else changed this label since you opened the page. Nothing was overwritten.",
            "facet": _facet_json(image, task),
            "history": [browse.event_row(e) for e in browse.history(image)],
        }, status=409)
    except RetagError as e:
        return JsonResponse({"error": "bad_request", "message": str(e)}, status=400)
    return JsonResponse({
        "ok": True,
        "changed": result.event is not None,
        "facet": _facet_json(image, task),
        "history": [browse.event_row(e) for e in browse.history(image)],
    })
