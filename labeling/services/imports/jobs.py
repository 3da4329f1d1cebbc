"""An import job's life: started (checked, queued), run (claimed, synced, finished), and
taken over when its worker stops beating."""
from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone
from PIL import Image as PILImage

from ...models import ImportJob, Project
from ..enqueue import send
from ..storage_roots import allowed_roots
from .decoding import short_error
from .entries import ImportRefused
from .progress import ImportRun, Superseded
from .sources import check_source, open_source
from .writing import sync

logger = logging.getLogger(__name__)

State = ImportJob.State


def start_import(*, project: Project, kind: str, source_uri: str, options: dict | None = None,
                 by=None, enqueue: bool = True) -> ImportJob:
    """Check the source now (so the user hears "refused" at once), create the job, queue it.

    ``enqueue=False`` leaves the job queued for the caller to :func:`run_import` itself.
    """
    source = check_source(kind, source_uri)
    job = ImportJob.objects.create(project=project, kind=kind, source_uri=source,
                                   options=dict(options or {}), created_by=by)
    if enqueue:
        transaction.on_commit(lambda: enqueue_import(job.id))
    return job


def enqueue_import(job_id: int) -> None:
    """Send the job to the worker; a broker that cannot be reached fails the job with the reason."""
    send("run_import_job", job_id, fail=lambda reason: ImportJob.objects.filter(pk=job_id, state=State.QUEUED).update(
        state=State.FAILED, message=reason, finished_at=timezone.now()))


def run_import(job: ImportJob) -> ImportJob:
    """Do the import in this process. A finished job (done or failed), or one that another
    worker is running (a redelivered message), is returned as is."""
    attempt = claim(job)
    if not attempt:
        job.refresh_from_db()
        return job
    run = ImportRun(job, attempt)
    source = None
    try:
        run.begin()
        if settings.IMAGE_MAX_PIXELS > (PILImage.MAX_IMAGE_PIXELS or 0):
            PILImage.MAX_IMAGE_PIXELS = settings.IMAGE_MAX_PIXELS  # never lower a process-wide limit
        roots = allowed_roots()
        source = open_source(job, roots)
        run.set_total(len(source.entries))
        sync(run, source)
        run.finish(State.DONE, run.summary())
    except Superseded:
        logger.warning("import job %s: taken over by another worker; this one stops", job.id)
        job.refresh_from_db()
    except ImportRefused as e:
        run.finish(State.FAILED, e.reason)
    except Exception as e:  # noqa: BLE001 - the job records the failure for the page to show
        logger.exception("import job %s failed", job.id)
        run.finish(State.FAILED, f"import failed: {short_error(e)}")
    finally:
        if source is not None:
            source.close()
    return job


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

