"""Training runs: config checks, the label snapshot, a tiny real mlcore run executed here and
loaded into the database, cancel, retrain, stale runs, duplicate deliveries, automatic
retraining and the API's permissions. (A real worker and broker: test_runs_integration.py.)"""
from __future__ import annotations

import json
import socket
import subprocess
import sys
from datetime import timedelta

import numpy as np
import pytest
import yaml
from django.core.management import CommandError, call_command
from django.utils import timezone

from labeling.models import ClassMetric, EventSource, Image, Prediction, Project, TrainingRun
from labeling.services import quality, runs
from labeling.services.labels import ensure_labels, get_or_create_task
from labeling.services.projects import project_storage_uri
from labeling.services.retag import current_version, retag_image
from labeling.services.run_results import load_predictions, read_json, read_predictions
from labeling.services.storage_roots import add_root
from mlcore import storage
from tests.mlcore.helpers import COLOURS, make_image

State = TrainingRun.State
TINY = {"arch": "resnet18", "small_input": True, "image_size": 28, "epochs": 1, "batch_size": 16, "workers": 0,
        "seed": 1}


def colour_project(tmp_path, name="Colours", per_class=12, test_per_class=4):
    """A project whose images are real PNGs of three colours, labelled by colour."""
    project = Project.objects.create(name=name, slug=name.lower())
    task = get_or_create_task(project, "colour")
    labels = ensure_labels(task, list(COLOURS))
    folder = tmp_path / f"{name}-images"
    folder.mkdir()
    n = 0
    for label, colour in COLOURS.items():
        for split, count in (("train", per_class), ("test", test_per_class)):
            for _ in range(count):
                path = folder / f"{label}_{n:03d}.png"
                path.write_bytes(make_image(colour, n, size=(28, 28)))
                image = Image.objects.create(project=project, key=path.name, uri=storage.to_uri(path), split=split,
                                             width=28, height=28)
                retag_image(image=image, task=task, label=labels[label], expected_version=None,
                            source=EventSource.IMPORT)
                n += 1
    return project, task, labels


def fake_run(task, *, state=State.DONE, minutes_ago=0, **kw) -> TrainingRun:
    """A run row without training (for state machinery and queries)."""
    when = timezone.now() - timedelta(minutes=minutes_ago)
    run = TrainingRun.objects.create(project=task.project, task=task, config=dict(TINY), state=state,
                                     snapshot_at=when, label_ids=list(task.labels.values_list("id", flat=True)),
                                     **kw)
    TrainingRun.objects.filter(pk=run.pk).update(created_at=when)
    run.refresh_from_db()
    return run


# --------------------------------------------------------------------------- config


def test_config_defaults_and_clear_errors(db, tmp_path, settings):
    assert runs.validate_config({})["arch"] == "resnet18"
    cfg = runs.validate_config({"epochs": "3", "lr": "0.01", "freeze_backbone": "true", "class_weights": "none"})
    assert cfg["epochs"] == 3 and cfg["lr"] == 0.01 and cfg["freeze_backbone"] is True

    with pytest.raises(runs.RunConfigError) as e:
        runs.validate_config({"arch": "vgg16", "epochs": 0, "batch_size": 2.5, "bogus": 1})
    assert set(e.value.errors) == {"arch", "epochs", "batch_size", "config"}
    assert "resnet18" in e.value.errors["arch"] and "bogus" in e.value.errors["config"]

    outside = tmp_path / "elsewhere" / "w.pt"
    outside.parent.mkdir()
    outside.write_bytes(b"x")
    with pytest.raises(runs.RunConfigError) as e:
        runs.validate_config({"weights": str(outside)})
    assert "outside every allowed storage root" in e.value.errors["weights"]

    add_root(str(tmp_path / "elsewhere"))
    assert runs.validate_config({"weights": str(outside)})["weights"] == str(outside)
    with pytest.raises(runs.RunConfigError) as e:
        runs.validate_config({"weights": str(tmp_path / "elsewhere" / "missing.pt")})
    assert "does not exist" in e.value.errors["weights"]
    with pytest.raises(runs.RunConfigError) as e:  # a torchvision name never downloads
        runs.validate_config({"weights": "NO_SUCH_WEIGHTS"})
    assert "NO_SUCH_WEIGHTS" in e.value.errors["weights"]

    own = storage.join(settings.STORAGE_URI, "projects", "p", "runs", "1", "model.pt")
    storage.write_bytes(own, b"x")  # an earlier run's weights, in Retag's own storage
    assert runs.validate_config({"weights": own})["weights"] == own


def test_default_config_for_small_images(db, tmp_path):
    _, task, _ = colour_project(tmp_path, per_class=1, test_per_class=0)
    cfg = runs.default_config(task)
    assert cfg["image_size"] == 28 and cfg["small_input"] is True


# --------------------------------------------------------------------------- snapshot and lineage


def test_start_writes_snapshot_and_lineage(db, tmp_path, scientist):
    project, task, labels = colour_project(tmp_path, per_class=3, test_per_class=1)
    run = runs.start_training_run(task=task, config={"epochs": 2}, by=scientist, enqueue=False)
    assert run.state == State.QUEUED and run.created_by == scientist and run.trigger == "manual"
    data = storage.read_bytes(run.manifest_uri)
    assert storage.sha256(data) == run.manifest_sha256
    assert data.decode().splitlines()[0] == "uri,label,split" and len(data.decode().splitlines()) == 13
    assert run.label_ids == [labels[n].id for n in COLOURS] and run.label_names == list(COLOURS)
    assert (run.n_train, run.n_test) == (9, 3)
    assert run.output_uri == project_storage_uri(project, "runs", str(run.id))
    assert run.code_version and run.snapshot_at <= timezone.now()
    assert run.config["epochs"] == 2 and run.config["small_input"] is True  # defaults filled in

    empty = get_or_create_task(project, "empty")
    ensure_labels(empty, ["a", "b"])
    with pytest.raises(runs.RunConfigError, match="no labelled"):
        runs.start_training_run(task=empty, config={}, by=scientist, enqueue=False)


# --------------------------------------------------------------------------- a real run, in process


def test_execute_loads_results_retrain_and_duplicate(transactional_db, tmp_path, scientist, annotator, settings):
    settings.RUN_HEARTBEAT_S = 0.2
    project, task, labels = colour_project(tmp_path)
    run = runs.start_training_run(task=task, config=TINY, by=scientist, enqueue=False)
    run = runs.execute_run(run.id, worker="test-worker")
    assert run.state == State.DONE, run.state_reason
    assert run.attempts == 1 and run.lease == "" and run.finished_at and run.device

    metrics = read_json(storage.join(run.output_uri, "metrics.json"))
    arrays = read_predictions(run)
    # Predictions: one row per image, float16 probabilities in the run's label order.
    assert Prediction.objects.filter(run=run).count() == len(arrays["uri"]) == 48
    by_uri = {u: i for i, u in enumerate(arrays["uri"].tolist())}
    for p in Prediction.objects.filter(run=run).select_related("image")[:10]:
        i = by_uri[p.image.uri]
        probs = np.frombuffer(bytes(p.probs), dtype=np.float16)
        assert np.array_equal(probs, arrays["prob"][i].astype(np.float16))
        assert p.predicted_label_id == run.label_ids[arrays["pred"][i]]
        assert p.given_label_id == run.label_ids[arrays["label"][i]]
        assert p.correct == bool(arrays["correct"][i]) and p.split == arrays["split"][i]
        assert abs(p.confidence - float(arrays["confidence"][i])) < 1e-6
    # Metrics in the database are metrics.json's.
    for split in ("train", "test"):
        stored = dict(run.metrics[split])
        assert stored.pop("label_ids") == run.label_ids
        assert stored == {k: v for k, v in metrics[split].items() if k != "per_class"}
        for m in ClassMetric.objects.filter(run=run, split=split):
            expected = metrics[split]["per_class"][run.label_names[run.label_ids.index(m.label_id)]]
            assert (m.precision, m.recall, m.f1, m.support) == (expected["precision"], expected["recall"],
                                                                expected["f1"], expected["support"])
    assert ClassMetric.objects.filter(run=run).count() == 6
    assert run.test_macro_f1 == metrics["test"]["macro"]["f1"]
    assert storage.exists(run.weights_uri)
    kinds = [h["kind"] for h in run.history]
    assert kinds[0] == "attempt" and "progress" in kinds and "epoch" in kinds and kinds[-1] == "done"
    assert {"snapshot_s", "load_s", "execute_s", "train_s"} <= set(run.timings)

    # A duplicate delivery of a finished run does nothing.
    again = runs.execute_run(run.id, worker="other-worker")
    assert (again.state, again.attempts, again.worker) == (State.DONE, 1, "test-worker")

    # Loading again replaces, never duplicates.
    from labeling.services.run_results import load_run_results

    load_run_results(run)
    assert Prediction.objects.filter(run=run).count() == 48 and ClassMetric.objects.filter(run=run).count() == 6

    # Retrain: same config, new snapshot of the current labels, parent = run.
    image = Image.objects.filter(project=project, split="train").order_by("key").first()
    retag_image(image=image, task=task, label=labels["red"], by=annotator, expected_version=1,
                source=EventSource.ANNOTATOR)  # the first key is a blue image
    child = runs.retrain(run, by=scientist, enqueue=False)
    assert child.parent == run and child.config == run.config and child.trigger == "retrain"
    assert child.manifest_sha256 != run.manifest_sha256 and child.manifest_uri != run.manifest_uri
    assert runs.retags_between(run, child) == 1 == runs.retags_between(child, run)
    assert runs.latest_finished_run(task) == run
    assert quality.task_runs(task) == [child, run]


def test_cancel_running_and_queued(transactional_db, tmp_path, scientist, settings, monkeypatch):
    settings.RUN_HEARTBEAT_S = 0.1
    _, task, _ = colour_project(tmp_path, per_class=8, test_per_class=1)
    queued = runs.start_training_run(task=task, config=TINY, by=scientist, enqueue=False)
    runs.cancel_run(queued, by=scientist)
    assert queued.state == State.CANCELLED and "before it started" in queued.state_reason
    assert runs.execute_run(queued.id).state == State.CANCELLED  # a late delivery does nothing
    with pytest.raises(runs.RunStateError):
        runs.cancel_run(queued, by=scientist)

    run = runs.start_training_run(task=task, config={**TINY, "epochs": 4, "batch_size": 4}, by=scientist,
                                  enqueue=False)
    progress = runs.RunSession.progress

    def cancel_on_first_progress(self, p):  # the user presses "cancel" while it trains
        progress(self, p)
        if not TrainingRun.objects.get(pk=self.run_id).cancel_requested:
            runs.cancel_run(TrainingRun.objects.get(pk=self.run_id), by=scientist)

    monkeypatch.setattr(runs.RunSession, "progress", cancel_on_first_progress)
    run = runs.execute_run(run.id)
    assert run.state == State.CANCELLED and run.state_reason == f"cancelled by {scientist.username}"
    assert storage.exists(storage.join(run.output_uri, "checkpoints", "last.pt"))
    assert not Prediction.objects.filter(run=run).exists()


def test_failure_shows_the_reason(transactional_db, tmp_path, scientist):
    _, task, _ = colour_project(tmp_path, per_class=2, test_per_class=1)
    run = runs.start_training_run(task=task, config=TINY, by=scientist, enqueue=False)
    storage.write_bytes(run.manifest_uri, b"uri,label,split\nfile:///nowhere.png,red,train\n")
    run = runs.execute_run(run.id)
    assert run.state == State.FAILED and run.state_reason and run.lease == ""
    assert "unreadable" in run.state_reason


# --------------------------------------------------------------------------- leases, stale runs


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_duplicate_delivery_guard_and_lost_lease(db, tmp_path):
    _, task, _ = colour_project(tmp_path, per_class=1, test_per_class=0)
    now = timezone.now()
    held = fake_run(task, state=State.RUNNING, worker="celery@gpu2 pid 4242 on gpu2", heartbeat_at=now,
                    lease="a" * 32, attempts=1)
    assert runs.claim_run(held.id, "celery@gpu1 pid 1 on gpu1") is None
    assert runs.execute_run(held.id, worker="celery@gpu1 pid 1 on gpu1").attempts == 1  # nothing done
    held.refresh_from_db()
    assert (held.state, held.lease, held.worker) == (State.RUNNING, "a" * 32, "celery@gpu2 pid 4242 on gpu2")

    # Same machine, holder process gone (a killed pool process): taken over at once.
    TrainingRun.objects.filter(pk=held.pk).update(worker=f"celery@here pid {dead_pid()} on {socket.gethostname()}")
    run, token = runs.claim_run(held.id, runs.default_worker_id("celery@here"))
    assert run.attempts == 2 and token != "a" * 32 and run.history[-1]["kind"] == "attempt"
    # The old holder's session can no longer write anything.
    old = runs.RunSession(held, "a" * 32)
    with pytest.raises(runs.LeaseLost):
        old.write(progress={"phase": "train"})
    with pytest.raises(runs.LeaseLost):
        old.should_stop()
    # Stale heartbeat: any worker may take over.
    TrainingRun.objects.filter(pk=held.pk).update(heartbeat_at=now - timedelta(seconds=runs.stale_after_s() + 5),
                                                  worker="celery@gpu2 pid 4242 on gpu2")
    assert runs.claim_run(held.id, "celery@gpu1 pid 1 on gpu1")[0].attempts == 3


def test_stale_runs_are_requeued_then_failed(db, tmp_path, monkeypatch, django_capture_on_commit_callbacks):
    _, task, _ = colour_project(tmp_path, per_class=1, test_per_class=0)
    old = timezone.now() - timedelta(seconds=600)
    stale = fake_run(task, state=State.RUNNING, heartbeat_at=old, worker="w pid 1 on elsewhere", lease="x" * 32,
                     attempts=1)
    exhausted = fake_run(task, state=State.RUNNING, heartbeat_at=old, worker="w pid 2 on elsewhere", attempts=3)
    cancelling = fake_run(task, state=State.RUNNING, heartbeat_at=old, attempts=1, cancel_requested=True)
    fresh = fake_run(task, state=State.RUNNING, heartbeat_at=timezone.now(), attempts=1, lease="y" * 32)
    sent = []
    monkeypatch.setattr(runs.lease, "enqueue_run", sent.append)  # where recover_lost looks it up
    with django_capture_on_commit_callbacks(execute=True):
        done = runs.check_stale_runs()
    assert done == {"requeued": [stale.id], "failed": [exhausted.id], "cancelled": [cancelling.id]}
    assert sent == [stale.id]
    stale.refresh_from_db()
    assert stale.state == State.QUEUED and stale.lease == "" and "lost" in stale.state_reason
    assert stale.history[-1]["kind"] == "lost"
    exhausted.refresh_from_db()
    assert exhausted.state == State.FAILED and exhausted.state_reason.startswith("worker lost 3 times")
    cancelling.refresh_from_db()
    assert cancelling.state == State.CANCELLED
    fresh.refresh_from_db()
    assert fresh.state == State.RUNNING and fresh.lease == "y" * 32
    # The threshold is a setting; a short one catches the fresh run too.
    assert runs.check_stale_runs(stale_after=0, enqueue=False)["requeued"] == [fresh.id]


def test_stale_check_task_is_registered():
    import labeling.tasks  # noqa: F401  (the worker imports it through autodiscovery)
    from labeling.celery import app

    assert "labeling.tasks.check_stale_runs" in app.tasks
    assert app.amqp.router.route({}, "labeling.tasks.train_run")["queue"].name == "gpu"


# --------------------------------------------------------------------------- retags and auto retrain


def test_auto_retrain_after_n_retags_without_piling_up(db, tmp_path, annotator):
    project, task, labels = colour_project(tmp_path, per_class=2, test_per_class=1)
    base = fake_run(task, minutes_ago=5, manifest_uri="x")
    images = list(Image.objects.filter(project=project).order_by("key"))

    def retag(image, label, source=EventSource.ANNOTATOR):
        retag_image(image=image, task=task, label=labels[label], by=annotator,
                    expected_version=current_version(image, task), source=source)

    # Keys sort by colour: images 0-2 are blue, 3-5 green, 6-8 red.
    retag(images[0], "red")
    retag(images[1], "red")
    assert runs.maybe_auto_retrain(task, enqueue=False) is None  # the project does not ask for it
    Project.objects.filter(pk=project.pk).update(auto_retrain_after=3)
    assert runs.maybe_auto_retrain(task, enqueue=False) is None  # 2 < 3
    retag(images[2], "red", source=EventSource.IMPORT)  # imports are not retags
    assert runs.maybe_auto_retrain(task, enqueue=False) is None
    retag(images[3], "red", source=EventSource.MTURK)
    auto = runs.maybe_auto_retrain(task, enqueue=False)
    assert auto is not None and auto.trigger == "auto" and auto.parent == base
    assert auto.config.items() >= base.config.items()
    assert runs.retags_between(base, auto) == 3

    for image in images[4:8]:
        retag(image, "blue")
    assert runs.maybe_auto_retrain(task, enqueue=False) is None  # one is queued: nothing piles up
    TrainingRun.objects.filter(pk=auto.pk).update(state=State.DONE, finished_at=timezone.now())
    second = runs.maybe_auto_retrain(task, enqueue=False)
    assert second.parent == auto

    # A failed automatic run is not retried on the next retag: N more are needed, and the
    # new run starts from the last run that finished.
    TrainingRun.objects.filter(pk=second.pk).update(state=State.FAILED)
    retag(images[8], "blue")
    assert runs.maybe_auto_retrain(task, enqueue=False) is None
    for image in images[0:2]:
        retag(image, "green")
    assert runs.maybe_auto_retrain(task, enqueue=False).parent == auto


# --------------------------------------------------------------------------- loader paths


def test_sqlite_path_loads_the_same_rows(transactional_db, tmp_path, monkeypatch):
    """bulk_create (SQLite) and COPY (PostgreSQL) write the same rows."""
    from django.db import connections

    _, task, labels = colour_project(tmp_path, per_class=2, test_per_class=1)
    run = fake_run(task, label_names=list(COLOURS))
    images = list(Image.objects.filter(project=task.project).order_by("key"))
    n = len(images)
    prob = np.random.default_rng(0).dirichlet(np.ones(3), n).astype(np.float32)
    label = np.array([i % 3 for i in range(n)])
    label[0] = -1
    arrays = {"uri": np.array([im.uri for im in images]), "split": np.array([im.split for im in images]),
              "label": label, "pred": prob.argmax(1), "confidence": prob.max(1), "correct": prob.argmax(1) == label,
              "prob": prob, "labels": np.array(list(COLOURS))}

    def rows():
        return list(Prediction.objects.filter(run=run).order_by("image_id").values_list(
            "image_id", "split", "given_label_id", "predicted_label_id", "confidence", "correct", "probs"))

    assert load_predictions(run, arrays) == n
    copied = [(*r[:-1], bytes(r[-1])) for r in rows()]
    monkeypatch.setattr(connections["default"], "vendor", "sqlite")
    assert load_predictions(run, arrays) == n
    assert [(*r[:-1], bytes(r[-1])) for r in rows()] == copied
    assert sum(r[2] is None for r in copied) == 1  # the image without a given label


# --------------------------------------------------------------------------- API


def test_api_permissions_and_config_errors(db, tmp_path, annotator, scientist, api_client_for):
    _, task, _ = colour_project(tmp_path, per_class=2, test_per_class=1)
    body = {"task": task.id, "config": {"epochs": 1}}
    assert api_client_for(annotator).post("/api/runs/", body, format="json").status_code == 403
    assert api_client_for(annotator).get("/api/runs/").status_code == 403
    assert api_client_for(None).get("/api/runs/").status_code in (401, 403)

    client = api_client_for(scientist)
    r = client.post("/api/runs/", {"task": task.id, "config": {"arch": "nope", "epochs": 0}}, format="json")
    assert r.status_code == 400 and set(r.json()["errors"]) == {"arch", "epochs"}
    assert not TrainingRun.objects.exists()  # a bad config is never a failed run

    r = client.post("/api/runs/", body, format="json")
    assert r.status_code == 201, r.content
    run = TrainingRun.objects.get(pk=r.json()["id"])
    assert run.created_by == scientist and run.state == State.QUEUED and r.json()["manifest_sha256"]

    listed = client.get("/api/runs/", {"task": task.id}).json()["results"]
    assert [x["id"] for x in listed] == [run.id]
    assert client.get(f"/api/runs/{run.id}/").json()["label_names"] == list(COLOURS)
    TrainingRun.objects.filter(pk=run.pk).update(history=[{"kind": "attempt"}, {"kind": "progress", "step": 1}])
    p = client.get(f"/api/runs/{run.id}/progress/", {"since": 1}).json()
    assert p["history_len"] == 2 and p["history"] == [{"kind": "progress", "step": 1}] and not p["finished"]
    assert client.get("/api/runs/default-config/", {"task": task.id}).json()["small_input"] is True

    r = client.post(f"/api/runs/{run.id}/retrain/")
    assert r.status_code == 201 and r.json()["parent"] == run.id
    assert client.post(f"/api/runs/{run.id}/cancel/").json()["state"] == State.CANCELLED
    assert client.post(f"/api/runs/{run.id}/cancel/").status_code == 409
    assert api_client_for(annotator).post(f"/api/runs/{run.id}/cancel/").status_code == 403
    assert client.get(f"/api/runs/{run.id}/class-metrics/").json() == []


def test_no_schema_warnings_for_runs_api(db, tmp_path, capsys):
    from drf_spectacular.drainage import GENERATOR_STATS

    GENERATOR_STATS.reset()
    call_command("spectacular", "--validate", "--file", str(tmp_path / "schema.yaml"))
    problems = [line for line in capsys.readouterr().err.splitlines()
                if ("Warning [" in line or "Error [" in line) and ("runs.py" in line or "[RunViewSet" in line)]
    assert problems == []
    schema = yaml.safe_load((tmp_path / "schema.yaml").read_text())
    config = schema["components"]["schemas"]["RunCreate"]["properties"]["config"]
    assert config["additionalProperties"] is False and set(config["properties"]) == runs.KNOWN
    assert config["properties"]["epochs"]["minimum"] == 1 and config["properties"]["arch"]["enum"] == list(runs.ARCHS)


# --------------------------------------------------------------------------- manage.py train


def test_train_command(db, tmp_path, capsys):
    project, task, _ = colour_project(tmp_path, per_class=2, test_per_class=1)
    with pytest.raises(CommandError, match="arch"):
        call_command("train", project.slug, task.name, "--arch", "vgg")
    with pytest.raises(CommandError, match="no task"):
        call_command("train", project.slug, "nope")
    with pytest.raises(CommandError, match="between 1 and 1000"):  # mlcore.config's bounds, before anything
        call_command("train", project.slug, task.name, "--epochs", "0")
    call_command("train", project.slug, task.name, "--epochs", "2", "--no-maxpool", "--amp", "false",
                 "--config", json.dumps({"batch_size": 8}))
    run = TrainingRun.objects.get()
    assert run.config["epochs"] == 2 and run.config["batch_size"] == 8 and run.state == State.QUEUED
    assert run.config["maxpool"] is False and run.config["amp"] is False  # every user option has its flag
    assert f"run {run.id}" in capsys.readouterr().out


def test_load_demo_starts_one_demo_run(db, tmp_path, scientist):
    from labeling.management.commands.load_demo import PROJECTS, Command

    demo_config = next(p.train for p in PROJECTS if p.train)[1]
    assert runs.validate_config(demo_config)["epochs"] == demo_config["epochs"]
    project, task, _ = colour_project(tmp_path, per_class=20, test_per_class=1)
    cmd = Command()
    cmd.quiet = True
    cmd.ensure_demo_run(project, ("colour", dict(TINY)), by=scientist)
    run = TrainingRun.objects.get()
    assert run.trigger == "demo" and run.state == State.QUEUED and run.created_by == scientist
    cmd.ensure_demo_run(project, ("colour", dict(TINY)), by=scientist)  # it has one: none more
    assert TrainingRun.objects.count() == 1


def test_the_app_offers_exactly_mlcores_architectures():
    """One list: mlcore.config declares it (no torch, so a web process may import it) and
    mlcore.models builds from it."""
    from mlcore.models import ARCHS

    assert runs.ARCHS is ARCHS
