"""Training runs against real services: a Celery worker process on Redis, started from the
API, on a small Fashion-MNIST subset imported through services.imports, then a suspects run
of it (fold runs, scoring, the annotator's queue); and a worker
killed with SIGKILL mid-run (with its run's training process and the loader's workers),
whose run the stale-run check hands to a new worker that resumes it from its checkpoint.
The runs use DataLoader workers (``"workers": 2``): the path a many-core or GPU machine
takes (more of it in test_training_workers.py)."""
from __future__ import annotations

import gzip
import os
import signal
import time

import numpy as np
import pytest
from PIL import Image as PILImage

from labeling.models import Annotation, ImportJob, LabelEvent, Prediction, Suspect, SuspectRun, TrainingRun
from labeling.services import runs, suspects
from labeling.services.imports import run_import, start_import
from labeling.services.projects import create_project
from labeling.services.run_results import read_json
from labeling.services.storage_roots import add_root
from mlcore import storage
from tests.conftest import SHARED_DATA, require_shared, wait_for

pytestmark = pytest.mark.integration

NAMES = ["tshirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot"]
# One epoch: these two cores are shared; resuming inside an epoch is the hard case anyway.
# The standard stem at 32 px (a sixteenth of the small-input stem's work): these tests are
# about the machinery, and each attempt now also starts a training process.
CONFIG = {"arch": "resnet18", "small_input": False, "image_size": 32, "epochs": 1, "batch_size": 32,
          "workers": 2, "seed": 0}
WORKER_ENV = {"RUN_HEARTBEAT_S": "1", "OMP_NUM_THREADS": "2"}


def read_idx(path) -> np.ndarray:
    data = gzip.open(path, "rb").read()
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


@pytest.fixture
def fashion_task(transactional_db, tmp_path):
    """~300 Fashion-MNIST PNGs (240 train, 60 test) in split/label/image folders, imported."""
    return import_fashion(tmp_path, n_train=240, n_test=60)


def import_fashion(tmp_path, *, n_train: int, n_test: int):
    """The first ``n_train`` + ``n_test`` Fashion-MNIST images as PNGs in split/label/image
    folders, imported through services.imports; returns the task."""
    src = SHARED_DATA / "fashion-mnist"
    require_shared(src / "train-images-idx3-ubyte.gz")
    folder = tmp_path / "fashion"
    for split, prefix, count in (("train", "train", n_train), ("test", "t10k", n_test)):
        images = read_idx(src / f"{prefix}-images-idx3-ubyte.gz")[:count]
        labels = read_idx(src / f"{prefix}-labels-idx1-ubyte.gz")[:count]
        for i, (pixels, label) in enumerate(zip(images, labels)):
            path = folder / split / NAMES[label] / f"{split}-{i:04d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            PILImage.fromarray(pixels).save(path)
    add_root(str(folder))
    project = create_project(name="FM runs")
    job = run_import(start_import(project=project, kind=ImportJob.Kind.FOLDER, source_uri=str(folder),
                                  options={"task": "category"}, enqueue=False))
    assert job.state == ImportJob.State.DONE and job.added == n_train + n_test, job.message
    return project.tasks.get(name="category")


def start_worker(factory):
    return factory("redis", extra_env=WORKER_ENV)


def assert_results_match_files(run: TrainingRun) -> None:
    metrics = read_json(storage.join(run.output_uri, "metrics.json"))
    for split in ("train", "test"):
        stored = {k: v for k, v in run.metrics[split].items() if k != "label_ids"}
        assert stored == {k: v for k, v in metrics[split].items() if k != "per_class"}
    assert run.test_macro_f1 == metrics["test"]["macro"]["f1"]
    assert Prediction.objects.filter(run=run).count() == run.n_train + run.n_test
    assert run.class_metrics.count() == 2 * len(run.label_ids)


def test_run_from_the_api_in_a_worker_then_its_suspects_queue_and_a_retag(fashion_task, celery_worker_factory,
                                                                           scientist, annotator, api_client_for):
    """A run started from the API trains in the worker with live progress; then (one run
    trained, not two: these cores are shared) a suspects run of it is started from the API
    with K=2 fold runs of one epoch on the gpu queue, scored, and worked: an annotator leases
    the best suspect, accepts the suggestion, the image leaves the queue and its history
    shows it."""
    start_worker(celery_worker_factory)
    r = api_client_for(scientist).post("/api/runs/", {"task": fashion_task.id, "config": CONFIG}, format="json")
    assert r.status_code == 201, r.content
    run = TrainingRun.objects.get(pk=r.json()["id"])

    seen = []

    def finished():
        run.refresh_from_db()
        p = run.progress or {}
        seen.append((run.state, p.get("phase"), p.get("epoch"), p.get("step"), len(run.history)))
        return run.state in TrainingRun.FINAL_STATES

    wait_for(finished, timeout=120, interval=0.1, what=f"run {run.id}")
    assert run.state == TrainingRun.State.DONE, run.state_reason
    training = {s for s in seen if s[0] == "running" and s[1] == "train"}
    assert len(training) >= 2, seen  # live progress, more than one distinct report
    assert len({s[4] for s in seen}) >= 3  # the history grew while it ran
    assert run.attempts == 1 and run.worker.startswith("test0-") and run.heartbeat_at
    assert_results_match_files(run)

    r = api_client_for(scientist).post("/api/suspect-runs/", {"run": run.id, "config": {"k": 2, "fold_epochs": 1}},
                                       format="json")
    assert r.status_code == 201, r.content
    sr = SuspectRun.objects.get(pk=r.json()["id"])
    wait_for(lambda: sr.refresh_from_db() or sr.state in SuspectRun.FINAL_STATES, timeout=300, interval=0.5,
             what=f"suspects {sr.id}")
    assert sr.state == SuspectRun.State.DONE, sr.state_reason
    folds = list(TrainingRun.objects.filter(pk__in=sr.fold_run_ids))
    assert len(folds) == 2 and all(f.state == "done" and f.parent_id == run.id for f in folds)
    assert sr.config["flip"] is True and all(f.config["tta_flip"] is True for f in folds)  # test-time flips
    from labeling.services.suspect_quality import fold_health
    health = fold_health(sr)  # each fold's macro-F1 on the fold it held out, from the real fold runs
    assert len(health["folds"]) == 2 and all(0 < f["macro_f1"] <= 1 for f in health["folds"])
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


def test_killed_worker_run_resumes_from_its_checkpoint(fashion_task, celery_worker_factory, scientist):
    first = start_worker(celery_worker_factory)
    config = {**CONFIG, "batch_size": 16, "checkpoint_every": 2}  # 15 steps, a checkpoint every 2
    run = runs.start_training_run(task=fashion_task, config=config, by=scientist)
    checkpoint = storage.join(run.output_uri, "checkpoints", "last.pt")

    def far_enough():
        run.refresh_from_db()
        p = run.progress or {}
        return p.get("phase") == "train" and p.get("global_step", 0) >= 4 and storage.exists(checkpoint)

    wait_for(far_enough, timeout=90, interval=0.1, what="training past a checkpoint")
    os.killpg(first.pid, signal.SIGKILL)  # the whole worker: no ack, no goodbye
    first.wait()
    run.refresh_from_db()
    killed_at = max(h.get("global_step", 0) for h in run.history if h["kind"] == "progress")
    assert run.state == TrainingRun.State.RUNNING  # nobody knows yet

    start_worker(celery_worker_factory)
    time.sleep(1.2)
    done = runs.check_stale_runs(stale_after=1)  # what the beat task does every minute
    assert done["requeued"] == [run.id]

    wait_for(lambda: run.refresh_from_db() or run.state in TrainingRun.FINAL_STATES, timeout=120,
             interval=0.2, what=f"resumed run {run.id}")
    assert run.state == TrainingRun.State.DONE, run.state_reason
    assert run.attempts == 2
    kinds = [h["kind"] for h in run.history]
    assert kinds.count("attempt") == 2 and "lost" in kinds
    second = kinds.index("attempt", kinds.index("attempt") + 1)
    resumed = next(h for h in run.history[second:] if h["kind"] == "progress" and h.get("phase") == "train")
    assert resumed["global_step"] > 2, (resumed, killed_at)  # continued, not restarted from step 1
    assert max(h.get("global_step", 0) for h in run.history[second:] if h["kind"] == "progress") == 15
    run_json = read_json(storage.join(run.output_uri, "run.json"))
    assert [e["epoch"] for e in run_json["history"]] == [1]
    assert_results_match_files(run)
