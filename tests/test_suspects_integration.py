"""A suspects run end to end against real services: a tiny real training run (1 epoch, 300
Fashion-MNIST PNGs) in a Celery worker on Redis, a suspects run started from the API with
K=2 fold runs of 1 epoch on the gpu queue, scoring, then the queue: an annotator leases the
best suspect, accepts the suggestion, the image leaves the queue and its history shows it."""
from __future__ import annotations

import pytest

from labeling.models import Annotation, LabelEvent, Suspect, SuspectRun, TrainingRun
from labeling.services import runs, suspects
from tests.conftest import wait_for
from tests.test_runs_integration import CONFIG, WORKER_ENV, fashion_task  # noqa: F401 (fixture)

pytestmark = pytest.mark.integration


def test_suspects_run_queue_retag(fashion_task, celery_worker_factory, scientist, annotator,  # noqa: F811
                                  api_client_for):
    celery_worker_factory("redis", extra_env=WORKER_ENV)
    run = runs.start_training_run(task=fashion_task, config=CONFIG, by=scientist)
    wait_for(lambda: run.refresh_from_db() or run.state in TrainingRun.FINAL_STATES, timeout=180, interval=0.5,
             what=f"run {run.id}")
    assert run.state == TrainingRun.State.DONE, run.state_reason

    r = api_client_for(scientist).post("/api/suspect-runs/", {"run": run.id, "config": {"k": 2, "fold_epochs": 1}},
                                       format="json")
    assert r.status_code == 201, r.content
    sr = SuspectRun.objects.get(pk=r.json()["id"])
    wait_for(lambda: sr.refresh_from_db() or sr.state in SuspectRun.FINAL_STATES, timeout=300, interval=0.5,
             what=f"suspects {sr.id}")
    assert sr.state == SuspectRun.State.DONE, sr.state_reason
    folds = list(TrainingRun.objects.filter(pk__in=sr.fold_run_ids))
    assert len(folds) == 2 and all(f.state == "done" and f.parent_id == run.id for f in folds)
    assert sr.counts["scored"] == 300 and sr.counts["clusters"] >= 10
    assert sr.index_uri and sr.oos_uri
    assert Suspect.objects.filter(suspect_run=sr).count() == sr.counts["suspects"] > 0

    api = api_client_for(annotator)
    item = api.post(f"/api/suspect-runs/{sr.id}/next/").json()
    before = Annotation.objects.get(image_id=item["image"], task=fashion_task)
    assert before.label_id == item["given_label"]
    r = api.post(f"/api/suspects/{item['id']}/resolve/", {"action": "accept", "expected_version": item["version"]},
                 format="json")
    assert r.status_code == 200, r.content
    open_ids = set(suspects.queue(sr).values_list("image_id", flat=True))
    assert item["image"] not in open_ids
    event = LabelEvent.objects.filter(image_id=item["image"], task=fashion_task).first()
    assert event.by == annotator and event.from_label_id == item["given_label"]
    assert event.to_label_id == item["suggested_label"]
    page = api_client_for(annotator).get(f"/api/images/{item['image']}/similar/?k=5").json()
    assert page["suspect_run"] == sr.id and len(page["items"]) == 5
