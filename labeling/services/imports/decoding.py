"""Reading, hashing and decoding the images, in threads (Pillow releases the GIL)."""
from __future__ import annotations

import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterable, Iterator

from django.conf import settings

from mlcore import storage
from mlcore.images import CorruptImage, decode

from ...models import ImageStatus, ImportJob, Project
from ..thumbnails import store_thumbnail
from .entries import Entry


@dataclass
class Inspection:
    """What reading (and, when needed, decoding) one entry found. Made in a worker thread."""

    checksum: str = ""
    size: int = 0
    width: int | None = None
    height: int | None = None
    status: str = ImageStatus.OK
    reason: str = ""
    thumbnail_uri: str = ""
    validated: bool = False  # the bytes were decoded now (new image or changed content)
    error: str = ""          # the bytes could not be read at all


@dataclass(frozen=True)
class Known:
    checksum: str
    status: str
    thumbnail_uri: str


def inspect(project: Project, entry: Entry, known: Known | None) -> Inspection:
    """Read, hash, and decode only when the bytes are new: a re-import of unchanged files
    costs a read and a sha256, never a decode or a thumbnail."""
    try:
        data = entry.read()
    except Exception as e:  # noqa: BLE001 - any storage failure is this row's problem only
        return Inspection(error=f"cannot read: {short_error(e)}")
    found = Inspection(checksum=storage.sha256(data), size=len(data))
    if known and known.checksum == found.checksum and known.status != ImageStatus.MISSING \
            and (known.status == ImageStatus.CORRUPT or known.thumbnail_uri):
        return found
    found.validated = True
    try:
        picture = decode(data, settings.IMAGE_MAX_PIXELS)
    except CorruptImage as e:  # kept as a corrupt image with the reason; its bytes are not stored
        found.status, found.reason = ImageStatus.CORRUPT, e.reason
        return found
    try:
        if entry.copy:  # only bytes that decoded, and only inside the store
            storage.write_bytes(entry.uri, data, within=entry.store)
        found.width, found.height = picture.size
        found.thumbnail_uri = store_thumbnail(project, found.checksum, picture)
    except Exception as e:  # noqa: BLE001 - e.g. the thumbnail store failed: this row only
        return Inspection(error=f"cannot store: {short_error(e)}")
    return found


def short_error(e: Exception) -> str:
    return f"{type(e).__name__}: {e}"[:300]


def ordered_map(pool: ThreadPoolExecutor, fn, items: Iterable, window: int) -> Iterator:
    """``pool.map`` that keeps at most ``window`` items in flight (bounded memory), in order."""
    pending = deque()
    for item in items:
        pending.append((item, pool.submit(fn, item)))
        if len(pending) >= window:
            item0, fut = pending.popleft()
            yield item0, fut.result()
    while pending:
        item0, fut = pending.popleft()
        yield item0, fut.result()


def worker_threads(job: ImportJob) -> int:
    """Threads that read and decode. Pillow releases the GIL while decoding and resizing, and
    reads wait on disk or S3: on a 2-core box 2 threads decoded 1.4x as fast as one
    (bench/import_bench.py), and S3 reads gain more; ``options["workers"]`` overrides."""
    return int(job.options.get("workers") or min(8, 2 * (os.cpu_count() or 1)))

