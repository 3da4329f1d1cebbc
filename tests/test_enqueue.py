"""One rule for sending work (labeling.services.enqueue): after commit, and a broker that
cannot be reached fails the job with the reason instead of leaving it queued for ever.

The broker here is real and down: a Redis URL on a port nothing listens on."""
from __future__ import annotations

import pytest

from labeling.models import ImportJob, MTurkBatch, TrainingRun
from labeling.services import imports, runs
from tests.conftest import _drop_connection_pools
from tests.test_mturk_errors import local_batch, no_aws  # noqa: F401  (fixtures)
from tests.test_runs import colour_project, fake_run


@pytest.fixture
def dead_broker():
    from labeling.celery import app

    old = app.conf.broker_url, app.conf.task_always_eager, app.conf.broker_connection_timeout, \
        app.conf.task_publish_retry
    app.conf.broker_url = "redis://127.0.0.1:9/0"  # the discard port: connection refused
    app.conf.task_always_eager = False
    app.conf.broker_connection_timeout = 1
    app.conf.task_publish_retry = False
    _drop_connection_pools(app)
    yield
    (app.conf.broker_url, app.conf.task_always_eager, app.conf.broker_connection_timeout,
     app.conf.task_publish_retry) = old
    _drop_connection_pools(app)


def test_a_run_the_broker_cannot_take_fails_with_the_reason(db, tmp_path, dead_broker):
    _, task, _ = colour_project(tmp_path, per_class=1, test_per_class=0)
    run = fake_run(task, state=TrainingRun.State.QUEUED)
    runs.enqueue_run(run.id)
    run.refresh_from_db()
    assert run.state == TrainingRun.State.FAILED and run.state_reason.startswith("could not be queued:")
    assert run.finished_at is not None


def test_an_import_the_broker_cannot_take_fails_after_commit(db, tmp_path, dead_broker, settings,
                                                             django_capture_on_commit_callbacks):
    from tests.factories import make_project

    settings.IMPORT_ROOTS = [str(tmp_path)]
    (tmp_path / "src" / "train" / "red").mkdir(parents=True)
    project, _, _ = make_project()
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        job = imports.start_import(project=project, kind="folder", source_uri=str(tmp_path / "src"))
    assert ImportJob.objects.get(pk=job.pk).state == ImportJob.State.QUEUED  # nothing is sent before commit
    for callback in callbacks:
        callback()
    job.refresh_from_db()
    assert job.state == ImportJob.State.FAILED and job.message.startswith("could not be queued:")


def test_api_send_of_a_batch_the_broker_cannot_take_is_503_and_the_batch_says_why(local_batch, client, admin_user,  # noqa: F811
                                                                                 dead_broker):
    client.force_login(admin_user)
    r = client.post(f"/api/mturk/batches/{local_batch.id}/send/")
    assert r.status_code == 503 and r.json()["detail"].startswith("could not be queued:")
    local_batch.refresh_from_db()
    # Nothing reached MTurk: still a draft (to export or send again), the reason on it.
    assert local_batch.state == MTurkBatch.State.DRAFT and local_batch.error.startswith("could not be queued:")
