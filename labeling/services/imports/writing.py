"""Writing what the source holds: images, their labels and events, in chunks of one
transaction each; then images the source no longer lists become missing."""
from __future__ import annotations

import hashlib
import logging
from concurrent.futures import ThreadPoolExecutor

from django.db import transaction
from django.utils import timezone

from ...models import Annotation, EventSource, Image, ImageStatus, ImportJob, LabelEvent, Project, Split
from ..labels import ensure_labels, get_or_create_task
from ..retag import retag_image
from .decoding import Inspection, Known, inspect, ordered_map, short_error, worker_threads
from .entries import Entry, Source
from .progress import ImportRun

logger = logging.getLogger(__name__)

CHUNK = 32                    # rows written per transaction


def assign_split(key: str, test_ratio: float) -> str:
    """A split from the key alone, so the same key lands in the same split on every machine."""
    h = int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big")
    return Split.TEST if h / 2**64 < test_ratio else Split.TRAIN


def sync(run: ImportRun, source: Source) -> None:
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


def _triage(run: ImportRun, entries: list[Entry]) -> tuple[set[str], list[Entry]]:
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


def _write_chunk(run: ImportRun, source: Source, chunk: list[tuple[Entry, Inspection]], tasks, labels) -> None:
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


def _create_images(run: ImportRun, source: Source, fresh: list[tuple[Entry, Inspection]], tasks, labels) -> set[str]:
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
        if image.status == ImageStatus.CORRUPT:
            run.problem(entry, f"corrupt: {image.status_reason}")
        run.count(_outcome(image, is_new=True))
    return {e.key for e, _ in fresh}


def _outcome(image: Image, *, is_new: bool, relabelled: bool = False, changed_content: bool = False) -> str:
    """The one counter a written row adds to, so that the counters add up to the rows: a
    corrupt image counts as corrupt only (not also as added or unchanged)."""
    if image.status == ImageStatus.CORRUPT:
        return "corrupt"
    if is_new:
        return "added"
    if relabelled:
        return "relabelled"
    return "updated" if changed_content else "unchanged"


def _write_row_safely(run: ImportRun, *args) -> None:
    entry = args[1]
    try:
        with transaction.atomic():
            outcome = _write_row(run, *args)
    except Exception as e:  # noqa: BLE001 - one bad row never stops the rest
        logger.exception("import job %s: row %s failed", run.job.id, entry.row)
        run.problem(entry, f"could not be saved: {short_error(e)}")
        outcome = "refused"
    run.count(outcome)


def _write_row(run: ImportRun, source: Source, entry: Entry, found: Inspection, image: Image | None,
               tasks, labels, current, imported) -> str:
    """Write one row; returns the counter it adds to (counted once it is committed)."""
    project, job = run.job.project, run.job
    if found.error:
        run.problem(entry, found.error)
        if image is None:
            return "refused"
        if image.status != ImageStatus.MISSING:
            _set_status(image, ImageStatus.MISSING, found.error)
        return "missing"
    is_new = image is None
    changed_content = False
    if is_new:
        image = Image.objects.create(
            project=project, key=entry.key, uri=entry.uri, source_uri=source.uri,
            split=entry.split or assign_split(entry.key, project.test_ratio), **_content(found))
    else:
        if entry.split and entry.split != image.split:
            run.problem(entry, f"source says {entry.split} but image is in {image.split} for life")
        changed_content = _update_image(image, entry, found, source.uri)
    if image.status == ImageStatus.CORRUPT:
        run.problem(entry, f"corrupt: {image.status_reason}")
    relabelled = _apply_labels(job, image, entry, tasks, labels, current, imported)
    return _outcome(image, is_new=is_new, relabelled=relabelled, changed_content=changed_content)


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


def _mark_missing(run: ImportRun, source_uri: str, listed: set[str]) -> None:
    """Images this source gave before and no longer lists: missing, never deleted."""
    rows = Image.objects.filter(project=run.job.project, source_uri=source_uri).exclude(
        status=ImageStatus.MISSING).values_list("id", "key")
    gone = [pk for pk, key in rows.iterator(chunk_size=2000) if key not in listed]
    reason = f"gone from {source_uri} (import {run.job.id})"
    for start in range(0, len(gone), 1000):
        Image.objects.filter(pk__in=gone[start:start + 1000]).update(
            status=ImageStatus.MISSING, status_reason=reason, updated_at=timezone.now())
    run.count("missing", len(gone))
