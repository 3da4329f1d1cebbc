"""Thumbnails: made once, at import, and stored by content.

The path is ``thumbs/<sha[:2]>/<sha>.jpg`` under the project's storage, so a re-import
of unchanged bytes finds its thumbnail already there and the same picture imported
under two keys shares one file. Pages read them with :func:`thumbnail_bytes`, which
makes a missing one on demand (an older import, a wiped storage folder). Both reads are
fenced where the bytes are read: the thumbnail to Retag's storage, the original to the
readable roots (a file swapped for a symlink since its import is refused).
"""
from __future__ import annotations

from django.conf import settings
from PIL import Image as PILImage

from mlcore import storage
from mlcore.images import CorruptImage, decode, thumbnail_jpeg

from ..models import Image, ImageStatus, Project
from .projects import project_storage_uri
from .storage_roots import readable_roots


class NoThumbnail(Exception):
    """The image has no picture to show (corrupt, or gone from its source)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def thumbnail_uri(project: Project, checksum: str) -> str:
    return project_storage_uri(project, "thumbs", f"{checksum[:2]}/{checksum}.jpg")


def store_thumbnail(project: Project, checksum: str, picture: PILImage.Image) -> str:
    """Write the thumbnail of a decoded picture unless its content-addressed file exists."""
    uri = thumbnail_uri(project, checksum)
    if not storage.exists(uri):
        storage.write_bytes(uri, thumbnail_jpeg(picture, settings.THUMBNAIL_SIZE), "image/jpeg")
    return uri


def thumbnail_bytes(image: Image) -> bytes:
    """JPEG bytes of the image's thumbnail; made from the original when it is missing."""
    if image.status == ImageStatus.CORRUPT:
        raise NoThumbnail(image.status_reason or "corrupt image")
    if image.thumbnail_uri:
        try:
            return storage.read_bytes(image.thumbnail_uri, within=[settings.STORAGE_URI])
        except Exception:  # noqa: BLE001 - gone (file or NoSuchKey) or fenced off: made again below
            pass
    try:
        data = storage.read_bytes(image.uri, within=readable_roots())
    except Exception as e:  # noqa: BLE001 - any storage error means "nothing to show"
        raise NoThumbnail(f"cannot read the original: {e}") from None
    try:
        picture = decode(data, settings.IMAGE_MAX_PIXELS)
    except CorruptImage as e:
        raise NoThumbnail(e.reason) from None
    checksum = image.checksum or storage.sha256(data)
    image.thumbnail_uri = store_thumbnail(image.project, checksum, picture)
    Image.objects.filter(pk=image.pk).update(thumbnail_uri=image.thumbnail_uri)
    return storage.read_bytes(image.thumbnail_uri, within=[settings.STORAGE_URI])
