"""Imports under faults (issue 11, item 9): a real worker killed with SIGKILL mid-import, and
S3 going away and coming back while an import reads and writes it."""
import logging
import os
import signal
import time
from datetime import timedelta

import psycopg
import pytest
from django.db import connection
from django.utils import timezone

from labeling.models import Annotation, Image, ImportJob, LabelEvent
from labeling.services.imports import run_import, start_import
from labeling.services.projects import create_project
from labeling.services.storage_roots import add_root
from mlcore import storage
from tests.conftest import require_service, wait_for
from tests.image_samples import jpeg
from tests.s3_outage import private_s3  # noqa: F401 - fixture
from tests.test_import_integration import make_folder, watch

Kind = ImportJob.Kind


def _waiting_on(pid: int) -> int:
    """Sessions blocked by the session ``pid`` (the test's locker): the import's worker, nobody
    else's lock waits (a slow worker once let another waiter stand in for it)."""
    with connection.cursor() as cur:
        cur.execute("select count(*) from pg_stat_activity where %s = any(pg_blocking_pids(pid))", [pid])
        return cur.fetchone()[0]


@pytest.mark.integration
def test_worker_killed_mid_import_is_taken_over_and_nothing_is_imported_twice(celery_worker_factory, tmp_path):
    """The project's row lock (what one writing import holds) is taken here, so the worker
    commits exactly one chunk, then waits for its second and is killed with SIGKILL: the job
    stays running. The beat's task, on a second worker, takes it over; the job finishes with
    every image once and one import event per image."""
    from labeling.tasks import check_stale_imports

    if not connection.vendor == "postgresql":
        require_service("postgresql")
    n = 96  # three chunks of 32
    make_folder(tmp_path / "ds", n)
    add_root(str(tmp_path))
    project = create_project(name="Killed")
    first = celery_worker_factory(broker="redis")
    sd = connection.settings_dict
    with psycopg.connect(dbname=sd["NAME"], user=sd["USER"] or "postgres", host=sd["HOST"] or "127.0.0.1",
                         port=sd["PORT"] or 5432) as locker:
        lock = "select id from labeling_project where id = %s for no key update"
        locker.execute(lock, [project.pk])
        job = start_import(project=project, kind=Kind.FOLDER, source_uri=str(tmp_path / "ds"))
        wait_for(lambda: _waiting_on(locker.info.backend_pid) >= 1, timeout=90,
                 what="the worker to wait for its first chunk")
        locker.rollback()
        locker.execute(lock, [project.pk])  # granted once the worker's first chunk is committed
        wait_for(lambda: _waiting_on(locker.info.backend_pid) >= 1, timeout=30,
                 what="the worker to wait for its second chunk")
        committed = Image.objects.filter(project=project).count()
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(30)
        locker.rollback()
    assert committed == 32
    job.refresh_from_db()
    assert job.state == ImportJob.State.RUNNING and job.attempts == 1

    celery_worker_factory(broker="redis", extra_env={"IMPORT_STALE_AFTER_S": "2"})
    # Stale means no heartbeat for IMPORT_STALE_AFTER_S: wait until the dead worker's is that old.
    wait_for(lambda: ImportJob.objects.get(pk=job.pk).heartbeat_at < timezone.now() - timedelta(seconds=3),
             timeout=30, what="the heartbeat to go stale")
    check_stale_imports.delay()  # what the beat sends every minute
    job, _ = watch(job, timeout=120)

    assert job.state == ImportJob.State.DONE, job.message
    assert job.attempts == 2 and "attempt 2" in job.message
    assert (job.added, job.unchanged) == (n - committed, committed), job.message
    assert Image.objects.filter(project=project).count() == n
    assert Annotation.objects.filter(image__project=project).count() == n
    events = LabelEvent.objects.filter(image__project=project)
    assert events.count() == n
    assert len(set(events.values_list("image_id", flat=True))) == n


# --------------------------------------------------------------------------- S3 outages

def _s3_dataset(client, bucket, count=6):
    for i in range(count):
        split = "test" if i % 3 == 0 else "train"
        client.put_object(Bucket=bucket, Key=f"data/{split}/c{i % 2}/{i}.jpg", Body=jpeg((40 * i % 255, 10, 10)))


@pytest.mark.django_db
def test_s3_down_during_an_import_is_retried_with_back_off(private_s3, settings, caplog):
    """Images and Retag's storage both on S3; S3 goes down as the import starts and comes
    back 1.5 s later: the calls are retried and the import finishes complete."""
    server, client, bucket = private_s3
    settings.STORAGE_URI = f"s3://{bucket}/retag"
    _s3_dataset(client, bucket)
    add_root(f"s3://{bucket}/data")
    project = create_project(name="S3 outage")
    job = start_import(project=project, kind=Kind.S3_PREFIX, source_uri=f"s3://{bucket}/data", enqueue=False)

    server.stop()
    back = server.back_after(1.5)
    with caplog.at_level(logging.WARNING, logger="mlcore.storage"):
        job = run_import(job)
    back.join()

    assert job.state == ImportJob.State.DONE, job.message
    assert (job.added, job.refused, job.problems_total) == (6, 0, 0), job.problems
    assert any("S3 failed for" in r.getMessage() and "again in" in r.getMessage() for r in caplog.records)
    for image in Image.objects.filter(project=project):
        assert image.thumbnail_uri.startswith(f"s3://{bucket}/retag/") and storage.exists(image.thumbnail_uri)


@pytest.mark.django_db
def test_s3_down_for_good_fails_the_import_with_the_reason_and_writes_nothing(private_s3, settings, monkeypatch):
    server, client, bucket = private_s3
    monkeypatch.setenv("MLCORE_S3_RETRY_S", "1.5")
    settings.STORAGE_URI = f"s3://{bucket}/retag"
    _s3_dataset(client, bucket)
    add_root(f"s3://{bucket}/data")
    project = create_project(name="S3 gone")
    job = start_import(project=project, kind=Kind.S3_PREFIX, source_uri=f"s3://{bucket}/data", enqueue=False)

    server.stop()
    started = time.monotonic()
    job = run_import(job)
    assert job.state == ImportJob.State.FAILED
    assert "StorageUnavailable" in job.message and f"listing s3://{bucket}/data" in job.message, job.message
    assert time.monotonic() - started < 30  # it gave up after its budget, it did not hang
    assert not Image.objects.filter(project=project).exists()

    server.start()  # back: nothing was half-written, and the same import now completes
    assert client.list_objects_v2(Bucket=bucket, Prefix="retag/").get("KeyCount", 0) == 0
    again = run_import(start_import(project=project, kind=Kind.S3_PREFIX, source_uri=f"s3://{bucket}/data",
                                    enqueue=False))
    assert (again.state, again.added) == (ImportJob.State.DONE, 6), again.message
