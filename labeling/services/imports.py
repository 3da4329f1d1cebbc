"""Dataset import: images and their labels from a folder, a zip archive, a CSV manifest
or an S3 prefix, as an idempotent sync.

Identity is ``(project, key)``: the key is the image's path inside the source (for
manifests, the URI as written, normalised). Importing the same source again changes
nothing; a label the source changed becomes an import LabelEvent; an image gone from
the source becomes ``missing`` (never deleted: its history stays), and comes back as
``ok`` when it reappears. A split is given once and kept for life. One bad row never
stops the rest: it becomes a problem ``{"row", "uri", "reason"}`` on the job.

:func:`start_import` validates and queues (the web page and API call it);
:func:`run_import` does the work in the calling process (the Celery task, commands,
the demo loader and the tests call it).
"""
from __future__ import annotations

import csv
import hashlib
import io
import logging
import os
import posixpath
import shutil
import stat
import time
import zipfile
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Callable, Iterable, Iterator

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone
from PIL import Image as PILImage

from mlcore import storage
from mlcore.images import CorruptImage, decode

from ..models import (Annotation, EventSource, Image, ImageStatus, ImportJob, LabelEvent, Project,
                      Split)
from .labels import ensure_labels, get_or_create_task
from .enqueue import send
from .manifests import image_split
from .projects import project_storage_uri
from .retag import retag_image
from .storage_roots import Root, SourceRefused, allowed_roots, check_allowed
from .thumbnails import store_thumbnail

logger = logging.getLogger(__name__)

MAX_PROBLEMS = 200            # problems kept on the job; ``problems_total`` counts them all
CHUNK = 32                    # rows written per transaction
PROGRESS_EVERY_S = 1.0        # how often the job row is updated for the progress bar
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".tif", ".tiff", ".webp"}
Kind = ImportJob.Kind
State = ImportJob.State


class ImportRefused(ValueError):
    """The import cannot start (source outside the allowed roots, wrong kind, unreadable)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


# --------------------------------------------------------------------------- starting

def start_import(*, project: Project, kind: str, source_uri: str, options: dict | None = None,
                 by=None, enqueue: bool = True) -> ImportJob:
    """Check the source now (so the user hears "refused" at once), create the job, queue it.

    ``enqueue=False`` leaves the job queued for the caller to :func:`run_import` itself.
    """
    source = _check_source(kind, source_uri)
    job = ImportJob.objects.create(project=project, kind=kind, source_uri=source,
                                   options=dict(options or {}), created_by=by)
    if enqueue:
        transaction.on_commit(lambda: enqueue_import(job.id))
    return job


def enqueue_import(job_id: int) -> None:
    """Send the job to the worker; a broker that cannot be reached fails the job with the reason."""
    send("run_import_job", job_id, fail=lambda reason: ImportJob.objects.filter(pk=job_id, state=State.QUEUED).update(
        state=State.FAILED, message=reason, finished_at=timezone.now()))


def _check_source(kind: str, source_uri: str, roots: list[Root] | None = None) -> str:
    """The canonical source URI, or :class:`ImportRefused` with the reason."""
    if kind not in Kind.values:
        raise ImportRefused(f"unknown import kind {kind!r}; choose one of {', '.join(Kind.values)}")
    try:
        uri = check_allowed(source_uri, roots)
    except SourceRefused as e:
        raise ImportRefused(e.reason) from None
    if kind == Kind.S3_PREFIX:
        if not storage.is_s3(uri):
            raise ImportRefused(f"an S3 prefix import needs an s3:// URI, not {source_uri!r}")
        return uri.rstrip("/")
    if kind == Kind.FOLDER:
        if storage.is_s3(uri):
            raise ImportRefused("a folder import reads a local folder or .zip; use kind 's3' for an S3 prefix")
        path = storage.local_path(uri)
        if not (path.is_dir() or (path.is_file() and zipfile.is_zipfile(path))):
            raise ImportRefused(f"{path} is neither a folder nor a zip archive")
    if kind == Kind.MANIFEST and not storage.is_s3(uri) and not storage.local_path(uri).is_file():
        raise ImportRefused(f"manifest {storage.local_path(uri)} does not exist")
    return uri


def guess_kind(source_uri: str) -> str:
    """folder / manifest / s3 from the look of the URI (for the command line)."""
    if source_uri.lower().endswith(".csv"):
        return Kind.MANIFEST
    return Kind.S3_PREFIX if storage.is_s3(source_uri) else Kind.FOLDER


def assign_split(key: str, test_ratio: float) -> str:
    """A split from the key alone, so the same key lands in the same split on every machine."""
    h = int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big")
    return Split.TEST if h / 2**64 < test_ratio else Split.TRAIN


# --------------------------------------------------------------------------- sources

@dataclass
class Entry:
    """One image the source names, before it is read."""

    row: int                           # line in a manifest, ordinal in a listing
    key: str
    shown: str                         # what the user wrote or sees: used in problems
    uri: str = ""                      # becomes Image.uri
    read: Callable[[], bytes] | None = None
    split: str | None = None
    labels: dict[str, str] = field(default_factory=dict)  # task name -> label name
    copy: bool = False                 # archive member: store the bytes at ``uri`` when (re)validated
    store: str = ""                    # ... and only inside this folder (checked at the write)
    refused: str = ""                  # why the row cannot be taken at all


@dataclass
class Source:
    uri: str
    tasks: list[str]
    entries: list[Entry]
    close: Callable[[], None] = lambda: None


def open_source(job: ImportJob, roots: list[Root]) -> Source:
    """List what the job's source holds (entries, not bytes: those are read later, in threads)."""
    uri = _check_source(job.kind, job.source_uri, roots)
    task = (job.options.get("task") or "label").strip()
    if job.kind == Kind.MANIFEST:
        return _manifest_source(uri, roots)
    if job.kind == Kind.S3_PREFIX:
        return _s3_source(uri, roots, task)
    path = storage.local_path(uri)
    if path.is_file():
        return _zip_source(job.project, uri, path, task)
    return _folder_source(uri, path, roots, task)


def _layout(key: str) -> tuple[str | None, str]:
    """(split or None, label) of a ``split/label/image`` or ``label/image`` key, else ValueError."""
    parts = key.split("/")
    ext = posixpath.splitext(parts[-1])[1].lower()
    if ext not in IMAGE_EXTENSIONS:
        raise ValueError(f"not an image file (extension {ext or 'none'!r}); skipped")
    if len(parts) == 3:
        return image_split(parts[0]), parts[1]
    if len(parts) == 2:
        return None, parts[0]
    raise ValueError("not in split/label/image (or label/image) layout")


def _layout_entry(row: int, key: str, shown: str, task: str, **kw) -> Entry:
    entry = Entry(row=row, key=key, shown=shown, **kw)
    if entry.refused:
        return entry
    if "\x00" in key:
        entry.refused = "a NUL byte in the name"
        return entry
    try:
        entry.split, label = _layout(key)
        entry.labels = {task: label.strip()}
    except ValueError as e:
        entry.refused = str(e)
    return entry


def _hidden(rel: str) -> bool:
    """Dot files and macOS archive litter are skipped without a problem (``..`` is not hidden)."""
    return any((p.startswith(".") and p != "..") or p == "__MACOSX" for p in rel.split("/"))


def _folder_source(uri: str, root: Path, roots: list[Root], task: str) -> Source:
    """``split/label/image`` under a local folder; a symlink that leads outside the roots is refused."""
    entries = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            full = os.path.join(dirpath, name)
            key = Path(full).relative_to(root).as_posix()
            if _hidden(key):
                continue
            try:
                canonical, refused = check_allowed(full, roots), ""
            except SourceRefused as e:
                canonical, refused = "", e.reason
            entries.append(_layout_entry(
                len(entries) + 1, key, full, task, uri=canonical, refused=refused,
                read=lambda u=canonical: storage.read_bytes(u)))
    return Source(uri, [task], entries)


def _s3_source(uri: str, roots: list[Root], task: str) -> Source:
    entries = []
    for f in storage.list_files(uri):
        key = storage.relative_key(uri, f.uri)
        if _hidden(key):
            continue
        try:
            canonical, refused = check_allowed(f.uri, roots), ""
        except SourceRefused as e:
            canonical, refused = "", e.reason
        entries.append(_layout_entry(len(entries) + 1, key, f.uri, task, uri=canonical, refused=refused,
                                     read=lambda u=f.uri: storage.read_bytes(u)))
    return Source(uri, [task], entries)


def unsafe_member(info: zipfile.ZipInfo) -> str:
    """Why an archive member must not be read or extracted ("" when it is fine).

    Sizes come from the archive's directory; :mod:`zipfile` never returns more bytes than
    that says (a member that lies fails its CRC), so these limits bound what is read.
    """
    name = info.filename.replace("\\", "/")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return f"absolute path {info.filename!r} in archive refused"
    if ".." in name.split("/"):
        return f"path {info.filename!r} climbs out of the archive with '..'; refused"
    if stat.S_ISLNK(info.external_attr >> 16):
        return f"symbolic link {info.filename!r} in archive refused"
    limit = settings.IMPORT_ZIP_MAX_MEMBER_BYTES
    if info.file_size > limit:
        return f"member {info.filename!r} is {info.file_size:,} bytes uncompressed (limit {limit:,})"
    ratio = info.file_size / max(info.compress_size, 1)
    if info.file_size > 64 << 10 and ratio > settings.IMPORT_ZIP_MAX_RATIO:
        return (f"member {info.filename!r} has a compression ratio of {ratio:,.0f}:1 "
                f"(limit {settings.IMPORT_ZIP_MAX_RATIO:g}:1, IMPORT_ZIP_MAX_RATIO): images do not "
                "compress like that; refused")
    return ""


def safe_extract(zip_path: str | os.PathLike, dest_dir: str | os.PathLike) -> tuple[list[Path], list[tuple[str, str]]]:
    """Extract what is safe: (written files, [(member, reason) refused]).

    Refuses absolute paths, ``..``, symlinks and oversized members; each target is
    checked to resolve inside ``dest_dir`` before it is written.
    """
    dest = Path(dest_dir).resolve()
    dest.mkdir(parents=True, exist_ok=True)
    written, refused = [], []
    with zipfile.ZipFile(zip_path) as zf:
        for info in zf.infolist():
            if info.is_dir():
                continue
            reason = unsafe_member(info)
            target = (dest / info.filename).resolve()
            if not reason and not target.is_relative_to(dest):
                reason = f"member {info.filename!r} would be written outside {dest}"
            if reason:
                refused.append((info.filename, reason))
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
            written.append(target)
    return written, refused


def _zip_source(project: Project, uri: str, path: Path, task: str) -> Source:
    """Members are read straight from the archive; their bytes are kept in project storage
    (``originals/<archive>/<key>``) because training needs a URI to read them from.

    A member's name is data: it is quoted into the URI (:func:`mlcore.storage.join`), so a
    ``%2e%2e%2f`` or a ``?`` stays part of a file name inside the store, and the write itself
    is fenced to the store. The archive is refused as a whole when what it would expand to
    passes ``IMPORT_ZIP_MAX_EXPANDED_BYTES``: nothing is read then.
    """
    zf = zipfile.ZipFile(path)
    digest = hashlib.sha256(uri.encode()).hexdigest()[:8]
    store = storage.to_uri(project_storage_uri(project, "originals", f"{path.stem}-{digest}"))
    entries, expanded = [], 0
    for info in zf.infolist():
        if info.is_dir() or _hidden(info.filename):
            continue
        key = posixpath.normpath(info.filename.replace("\\", "/"))
        reason, member_uri = unsafe_member(info), ""
        if not reason:
            try:
                member_uri = storage.to_uri(storage.join(store, key))
            except (OSError, ValueError) as e:
                reason = f"member name {info.filename!r} cannot be stored: {e}"
        entry = _layout_entry(len(entries) + 1, key, f"{uri}!{info.filename}", task, refused=reason, copy=True,
                              uri=member_uri, store=store, read=lambda i=info: zf.read(i))
        entries.append(entry)
        expanded += 0 if entry.refused else info.file_size
    limit = settings.IMPORT_ZIP_MAX_EXPANDED_BYTES
    if expanded > limit:
        zf.close()
        raise ImportRefused(f"the archive would expand to {expanded:,} bytes of images, more than the limit "
                            f"of {limit:,} (IMPORT_ZIP_MAX_EXPANDED_BYTES); nothing was imported")
    return Source(uri, [task], entries, close=zf.close)


def _manifest_source(uri: str, roots: list[Root]) -> Source:
    """``uri,split,<task>...``; a row outside the roots is refused, the others go on."""
    try:
        text = storage.read_bytes(uri).decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ImportRefused("the manifest is not UTF-8 text") from None
    rows = csv.reader(io.StringIO(text))
    header = [h.strip() for h in next(rows, [])]
    if "uri" not in header:
        raise ImportRefused(f"the manifest has no 'uri' column (header: {','.join(header) or 'empty'})")
    tasks = [h for h in header if h and h not in ("uri", "split")]
    if not tasks:
        raise ImportRefused("the manifest has no label column: expected uri,split,<task>[,<task>...]")
    base = uri.rsplit("/", 1)[0]
    entries = []
    for line, values in enumerate(rows, start=2):
        if not any(v.strip() for v in values):
            continue
        row = {h: (v or "").strip() for h, v in zip(header, values)}
        entries.append(_manifest_entry(line, row, tasks, base, roots))
    return Source(uri, tasks, entries)


def _manifest_entry(line: int, row: dict, tasks: list[str], base: str, roots: list[Root]) -> Entry:
    """One row; whatever is wrong with it (a NUL byte, a URI that does not parse) is this
    row's problem only."""
    written = row.get("uri", "")
    entry = Entry(row=line, key="", shown=written.replace("\x00", "\\x00"))
    try:
        nul = next((h for h, v in row.items() if "\x00" in v), None)
        if nul is not None:
            entry.refused = f"a NUL byte in column {nul!r}"
            return entry
        entry.key = manifest_key(written)
        entry.labels = {t: row.get(t, "") for t in tasks if row.get(t)}
        if not written:
            entry.refused = "empty uri"
        else:
            try:
                entry.split = image_split(row.get("split", ""))
            except ValueError as e:
                entry.refused = str(e)
                return entry
            entry.uri = check_allowed(_resolve(base, written), roots)
            entry.read = lambda u=entry.uri: storage.read_bytes(u)
    except SourceRefused as e:
        entry.refused = e.reason
    except (ValueError, OSError) as e:
        entry.refused = f"bad uri: {e}"
    return entry


def manifest_key(written: str) -> str:
    """A manifest row's identity: the URI as written, with ``./``, ``//`` and ``a/../`` folded."""
    w = written.strip().replace("\\", "/") if "://" not in written else written.strip()
    if not w:
        return ""
    if w.startswith("s3://"):
        bucket, key = storage.split_s3(w)
        return f"s3://{bucket}/{posixpath.normpath(key)}"
    if w.startswith("file://"):
        return "file://" + posixpath.normpath(str(storage.local_path(w)))
    if "://" in w:
        return w
    return posixpath.normpath(w)


def _resolve(base: str, written: str) -> str:
    """Where a manifest row points: relative paths are relative to the manifest's folder."""
    if "://" in written or os.path.isabs(written):
        return written
    if storage.is_s3(base):
        bucket, key = storage.split_s3(base + "/")
        return f"s3://{bucket}/{posixpath.normpath(posixpath.join(key, written))}"
    return os.path.join(storage.local_path(base), written)


# --------------------------------------------------------------------------- reading bytes

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
        return Inspection(error=f"cannot read: {_short(e)}")
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
        return Inspection(error=f"cannot store: {_short(e)}")
    return found


def _short(e: Exception) -> str:
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


# --------------------------------------------------------------------------- running

def run_import(job: ImportJob) -> ImportJob:
    """Do the import in this process. A finished job (done or failed), or one that another
    worker is running (a redelivered message), is returned as is."""
    attempt = claim(job)
    if not attempt:
        job.refresh_from_db()
        return job
    run = _Run(job, attempt)
    source = None
    try:
        run.begin()
        if settings.IMAGE_MAX_PIXELS > (PILImage.MAX_IMAGE_PIXELS or 0):
            PILImage.MAX_IMAGE_PIXELS = settings.IMAGE_MAX_PIXELS  # never lower a process-wide limit
        roots = allowed_roots()
        source = open_source(job, roots)
        run.set_total(len(source.entries))
        _sync(run, source)
        run.finish(State.DONE, run.summary())
    except Superseded:
        logger.warning("import job %s: taken over by another worker; this one stops", job.id)
        job.refresh_from_db()
    except ImportRefused as e:
        run.finish(State.FAILED, e.reason)
    except Exception as e:  # noqa: BLE001 - the job records the failure for the page to show
        logger.exception("import job %s failed", job.id)
        run.finish(State.FAILED, f"import failed: {_short(e)}")
    finally:
        if source is not None:
            source.close()
    return job


class Superseded(Exception):
    """The job was taken over (its attempt counter moved on): this worker must stop writing."""


def _lost(stale_after: float) -> Q:
    stale = timezone.now() - timedelta(seconds=stale_after)
    return Q(state=State.RUNNING) & (Q(heartbeat_at__lt=stale) | Q(heartbeat_at__isnull=True, started_at__lt=stale))


def claim(job: ImportJob) -> int:
    """Take the job for this process; returns its attempt number (0: not taken).

    A queued job is taken, or a running one whose worker died (no heartbeat for
    IMPORT_STALE_AFTER_S) while it has attempts left. One process wins. The sync is
    idempotent, so a job taken over starts again from the top: what the lost worker
    committed is found unchanged, nothing is imported twice.
    """
    lost = _lost(settings.IMPORT_STALE_AFTER_S) & Q(attempts__lt=settings.IMPORT_MAX_ATTEMPTS)
    now = timezone.now()
    won = ImportJob.objects.filter(Q(pk=job.pk) & (Q(state=State.QUEUED) | lost)).update(
        state=State.RUNNING, started_at=now, heartbeat_at=now, attempts=F("attempts") + 1)
    if not won:
        return 0
    job.refresh_from_db(fields=["attempts"])
    return job.attempts


def take_over_stale_imports(*, stale_after: float | None = None, enqueue: bool = True) -> dict:
    """Queue again, or fail, running imports whose worker stopped beating; return what was done.

    Called every minute by the beat task (as :func:`labeling.services.runs.check_stale_runs`
    is for training runs). A job with ``IMPORT_MAX_ATTEMPTS`` attempts already fails with
    the reason; the others are queued and sent again, and the next worker's :func:`claim`
    takes them. A worker that was only slow finds its attempt superseded at its next write.
    """
    stale_after = settings.IMPORT_STALE_AFTER_S if stale_after is None else stale_after
    done = {"requeued": [], "failed": []}
    for job_id in list(ImportJob.objects.filter(_lost(stale_after)).values_list("pk", flat=True)):
        with transaction.atomic():
            job = ImportJob.objects.select_for_update(skip_locked=True).filter(
                Q(pk=job_id) & _lost(stale_after)).first()
            if job is None:
                continue
            since = f"{(job.heartbeat_at or job.started_at):%Y-%m-%d %H:%M:%S} UTC"
            if job.attempts >= settings.IMPORT_MAX_ATTEMPTS:
                job.state, job.finished_at = State.FAILED, timezone.now()
                job.message = (f"worker lost {job.attempts} times (last heartbeat {since}); "
                               f"{job.processed} of {job.total} rows were done and stay imported. "
                               "Start the import again to finish it.")
                job.save(update_fields=["state", "finished_at", "message"])
                done["failed"].append(job.pk)
            else:
                job.state = State.QUEUED
                job.message = (f"worker lost (no heartbeat since {since}); taken over, "
                               f"attempt {job.attempts + 1} of {settings.IMPORT_MAX_ATTEMPTS}")
                job.save(update_fields=["state", "message"])
                if enqueue:
                    transaction.on_commit(lambda pk=job.pk: enqueue_import(pk))
                done["requeued"].append(job.pk)
            logger.warning("import job %s: %s", job.pk, job.message)
    return done


_COUNTERS = ("total", "processed", "added", "relabelled", "unchanged", "updated", "missing",
             "corrupt", "refused", "problems_total")


class _Run:
    """The job's counters and problems, flushed to its row about once a second. Every write
    names the attempt: one that was taken over raises :class:`Superseded` instead."""

    def __init__(self, job: ImportJob, attempt: int = 1):
        self.job = job
        self.attempt = attempt
        self.flushed_at = 0.0

    def _update(self, **fields) -> None:
        if not ImportJob.objects.filter(pk=self.job.pk, attempts=self.attempt).update(**fields):
            raise Superseded(self.job.pk)

    def begin(self) -> None:
        j = self.job
        for name in _COUNTERS:
            setattr(j, name, 0)  # a job taken over starts over: the sync is idempotent
        j.problems, j.message, j.finished_at = [], "", None
        j.state, j.heartbeat_at = State.RUNNING, timezone.now()
        self._update(problems=[], message="", finished_at=None, heartbeat_at=j.heartbeat_at,
                     **{name: 0 for name in _COUNTERS})

    def set_total(self, total: int) -> None:
        self.job.total = total
        self.flush(force=True)

    def count(self, name: str, n: int = 1) -> None:
        setattr(self.job, name, getattr(self.job, name) + n)

    def problem(self, entry: Entry, reason: str) -> None:
        self.job.problems_total += 1
        if len(self.job.problems) < MAX_PROBLEMS:  # JSON in PostgreSQL holds no NUL byte
            self.job.problems.append({"row": entry.row, "uri": entry.shown.replace("\x00", "\\x00"),
                                      "reason": reason.replace("\x00", "\\x00")})

    def flush(self, force: bool = False) -> None:
        if not force and time.monotonic() - self.flushed_at < PROGRESS_EVERY_S:
            return
        fields = {name: getattr(self.job, name) for name in _COUNTERS}
        self._update(problems=self.job.problems, heartbeat_at=timezone.now(), **fields)
        self.flushed_at = time.monotonic()

    def finish(self, state: str, message: str) -> None:
        j = self.job
        j.state, j.message, j.finished_at = state, message, timezone.now()
        try:
            self._update(state=state, message=message, finished_at=j.finished_at, problems=j.problems,
                         **{name: getattr(j, name) for name in _COUNTERS})
        except Superseded:
            logger.warning("import job %s: taken over; this worker's outcome (%s) is not recorded", j.pk, state)
            j.refresh_from_db()

    def summary(self) -> str:
        j = self.job
        text = (f"{j.processed} rows: {j.added} added, {j.relabelled} relabelled, {j.updated} updated, "
                f"{j.unchanged} unchanged, {j.missing} now missing, {j.corrupt} corrupt, {j.refused} refused")
        if j.problems_total:
            text += f"; {j.problems_total} problem(s)"
            if j.problems_total > len(j.problems):
                text += f" (the first {len(j.problems)} listed)"
        if self.attempt > 1:
            text += f" (attempt {self.attempt}: the earlier one's worker was lost; what it committed was kept)"
        return text


def _sync(run: _Run, source: Source) -> None:
    """Refuse what cannot be taken, read the rest in threads, write in chunks, then sweep."""
    project = run.job.project
    listed, takeable = _triage(run, source.entries)
    tasks = {name: get_or_create_task(project, name) for name in source.tasks}
    labels = {name: ensure_labels(tasks[name], sorted({e.labels[name] for e in takeable if e.labels.get(name)}))
              for name in source.tasks}
    known = {k: Known(c, s, t) for k, c, s, t in Image.objects.filter(project=project).values_list(
        "key", "checksum", "status", "thumbnail_uri").iterator(chunk_size=2000)}
    with ThreadPoolExecutor(max_workers=worker_threads(run.job)) as pool:
        results = ordered_map(pool, lambda e: inspect(project, e, known.get(e.key)), takeable, window=4 * CHUNK)
        chunk = []
        for pair in results:
            chunk.append(pair)
            if len(chunk) == CHUNK:
                _write_chunk(run, source, chunk, tasks, labels)
                chunk = []
        if chunk:
            _write_chunk(run, source, chunk, tasks, labels)
    _mark_missing(run, source.uri, listed)
    run.flush(force=True)


def _triage(run: _Run, entries: list[Entry]) -> tuple[set[str], list[Entry]]:
    """(every key the source lists, the entries to read); refused rows become problems now.

    One file is one image: a second key for a file already taken (by this source, or by
    another key of the project) is refused, so that no training manifest lists a file twice.
    """
    listed, takeable, first_row, uri_row = set(), [], {}, {}
    owners = _uri_owners(run.job.project, [e.uri for e in entries if e.uri and not e.refused])
    for entry in entries:
        if entry.key and not entry.refused and entry.key in first_row:
            entry.refused = f"duplicate of row {first_row[entry.key]} (same key {entry.key!r})"
        elif entry.uri and not entry.refused and entry.uri in uri_row:
            entry.refused = f"same file as row {uri_row[entry.uri]}"
        elif entry.uri and not entry.refused and owners.get(entry.uri, entry.key) != entry.key:
            entry.refused = f"this file is already image {owners[entry.uri]!r} of the project"
        listed.add(entry.key)
        if entry.refused:
            run.problem(entry, entry.refused)
            run.count("refused")
            run.count("processed")
        else:
            first_row[entry.key] = entry.row
            if entry.uri:
                uri_row[entry.uri] = entry.row
            takeable.append(entry)
    run.flush()
    return listed, takeable


def _uri_owners(project: Project, uris: list[str]) -> dict[str, str]:
    """uri -> key of the project's images that already hold one of these files."""
    owners = {}
    for i in range(0, len(uris), 1000):
        owners.update(Image.objects.filter(project=project, uri__in=uris[i:i + 1000]).values_list("uri", "key"))
    return owners


def worker_threads(job: ImportJob) -> int:
    """Threads that read and decode. Pillow releases the GIL while decoding and resizing, and
    reads wait on disk or S3: on a 2-core box 2 threads decoded 1.4x as fast as one
    (bench/import_bench.py), and S3 reads gain more; ``options["workers"]`` overrides."""
    return int(job.options.get("workers") or min(8, 2 * (os.cpu_count() or 1)))


def _write_chunk(run: _Run, source: Source, chunk: list[tuple[Entry, Inspection]], tasks, labels) -> None:
    """One transaction per chunk. New images go in bulk; known ones row by row, each in a
    savepoint, so that one failing row rolls back alone."""
    project = run.job.project
    with transaction.atomic():
        # One import of a project writes at a time. NO KEY UPDATE: rows that merely point at the
        # project (a new task, an image from the web) are not blocked.
        list(Project.objects.select_for_update(no_key=True).filter(pk=project.pk).values_list("pk"))
        images = {im.key: im for im in Image.objects.filter(project=project, key__in=[e.key for e, _ in chunk])}
        fresh = [(e, f) for e, f in chunk if e.key not in images and not f.error]
        done = _create_images(run, source, fresh, tasks, labels) if fresh else set()
        ids = [im.id for im in images.values()]
        current = {(i, t): lb for i, t, lb in Annotation.objects.filter(
            image_id__in=ids, task__in=tasks.values()).values_list("image_id", "task_id", "label_id")}
        imported = {(i, t): lb for i, t, lb in LabelEvent.objects.filter(
            image_id__in=ids, task__in=tasks.values(), source=EventSource.IMPORT).order_by("id").values_list(
            "image_id", "task_id", "to_label_id")}
        for entry, found in chunk:
            if entry.key not in done:
                _write_row_safely(run, source, entry, found, images.get(entry.key), tasks, labels, current, imported)
            run.count("processed")
    run.flush()


def _create_images(run: _Run, source: Source, fresh: list[tuple[Entry, Inspection]], tasks, labels) -> set[str]:
    """Insert new images, their first labels and one import event per label, in bulk.

    A new image has no annotation, so there is nothing to conflict with: these are the
    records :func:`retag_image` would write (version 1, event from no label), at a few
    queries per chunk instead of a few per row. Returns the keys written; on any error
    it writes nothing and the rows go the row-by-row way (which isolates the bad one).
    """
    job, project = run.job, run.job.project
    images = [Image(project=project, key=e.key, uri=e.uri, source_uri=source.uri,
                    split=e.split or assign_split(e.key, project.test_ratio), **_content(f)) for e, f in fresh]
    try:
        with transaction.atomic():
            Image.objects.bulk_create(images)
            annotations, events = [], []
            for (entry, _), image in zip(fresh, images):
                for task_name, label_name in entry.labels.items():
                    task, label = tasks[task_name], labels[task_name][label_name]
                    annotations.append(Annotation(image=image, task=task, label=label, version=1,
                                                  updated_by=job.created_by))
                    events.append(LabelEvent(image=image, task=task, to_label=label, by=job.created_by,
                                             source=EventSource.IMPORT, reference=f"import:{job.id}"))
            Annotation.objects.bulk_create(annotations)
            LabelEvent.objects.bulk_create(events)
    except Exception:  # noqa: BLE001 - fall back to row by row, where the bad row is found
        logger.warning("import job %s: bulk insert failed; going row by row", job.id, exc_info=True)
        return set()
    for (entry, _), image in zip(fresh, images):
        run.count("added")
        if image.status == ImageStatus.CORRUPT:
            run.problem(entry, f"corrupt: {image.status_reason}")
            run.count("corrupt")
    return {e.key for e, _ in fresh}


def _write_row_safely(run: _Run, *args) -> None:
    entry = args[1]
    try:
        with transaction.atomic():
            _write_row(run, *args)
    except Exception as e:  # noqa: BLE001 - one bad row never stops the rest
        logger.exception("import job %s: row %s failed", run.job.id, entry.row)
        run.problem(entry, f"could not be saved: {_short(e)}")
        run.count("refused")


def _write_row(run: _Run, source: Source, entry: Entry, found: Inspection, image: Image | None,
               tasks, labels, current, imported) -> None:
    project, job = run.job.project, run.job
    if found.error:
        run.problem(entry, found.error)
        if image is None:
            run.count("refused")
        elif image.status != ImageStatus.MISSING:
            _set_status(image, ImageStatus.MISSING, found.error)
            run.count("missing")
        return
    is_new = image is None
    changed_content = False
    if is_new:
        image = Image.objects.create(
            project=project, key=entry.key, uri=entry.uri, source_uri=source.uri,
            split=entry.split or assign_split(entry.key, project.test_ratio), **_content(found))
        run.count("added")
    else:
        if entry.split and entry.split != image.split:
            run.problem(entry, f"source says {entry.split} but image is in {image.split} for life")
        changed_content = _update_image(image, entry, found, source.uri)
        if changed_content:
            run.count("updated")
    if image.status == ImageStatus.CORRUPT:
        run.problem(entry, f"corrupt: {image.status_reason}")
        run.count("corrupt")
    relabelled = _apply_labels(job, image, entry, tasks, labels, current, imported)
    if not is_new:
        if relabelled:
            run.count("relabelled")
        elif not changed_content:
            run.count("unchanged")


def _apply_labels(job: ImportJob, image: Image, entry: Entry, tasks, labels, current, imported) -> bool:
    """Record the source's labels; True when any changed.

    A label is compared with the current one and with what an import last set: when a
    person retagged the image since, and the source still says the old label, the
    person's label stays (re-importing a stale source must not undo their work).
    """
    changed = False
    for task_name, label_name in entry.labels.items():
        task, label = tasks[task_name], labels[task_name][label_name]
        now, last = current.get((image.id, task.id)), imported.get((image.id, task.id))
        if now == label.id or (now is not None and last == label.id):
            continue
        retag_image(image=image, task=task, label=label, by=job.created_by, expected_version=None,
                    source=EventSource.IMPORT, reference=f"import:{job.id}")
        changed = True
    return changed


def _content(found: Inspection) -> dict:
    """Image fields that come from the bytes."""
    return {"checksum": found.checksum, "size_bytes": found.size, "width": found.width,
            "height": found.height, "status": found.status, "status_reason": found.reason,
            "thumbnail_uri": found.thumbnail_uri}


def _update_image(image: Image, entry: Entry, found: Inspection, source_uri: str) -> bool:
    """Bring a known image up to date with the source; True when anything was written."""
    fields = {"uri": entry.uri, "source_uri": source_uri}
    if found.validated:
        fields.update(_content(found))
    changed = [name for name, value in fields.items() if getattr(image, name) != value]
    if not changed:
        return False
    for name in changed:
        setattr(image, name, fields[name])
    image.save(update_fields=[*changed, "updated_at"])
    return True


def _set_status(image: Image, status: str, reason: str) -> None:
    image.status, image.status_reason = status, reason
    image.save(update_fields=["status", "status_reason", "updated_at"])


def _mark_missing(run: _Run, source_uri: str, listed: set[str]) -> None:
    """Images this source gave before and no longer lists: missing, never deleted."""
    rows = Image.objects.filter(project=run.job.project, source_uri=source_uri).exclude(
        status=ImageStatus.MISSING).values_list("id", "key")
    gone = [pk for pk, key in rows.iterator(chunk_size=2000) if key not in listed]
    reason = f"gone from {source_uri} (import {run.job.id})"
    for start in range(0, len(gone), 1000):
        Image.objects.filter(pk__in=gone[start:start + 1000]).update(
            status=ImageStatus.MISSING, status_reason=reason, updated_at=timezone.now())
    run.count("missing", len(gone))
