"""Automatic cleaning rounds through the service with tiny real trainings in this process
(``enqueue=False``; 28 px PNGs of three colours, ResNet-18 1 epoch): outliers of each class are
left out through TrainingExclusions, the run is retrained without them, the rounds stop when no
new outlier turns up, the page shows each round's exclusions per class and test macro-F1, and
every exclusion goes back."""
from __future__ import annotations

import pytest

from labeling.models import CleaningRun, Prediction, TrainingExclusion, TrainingRun
from labeling.services import autoclean, runs
from labeling.services.manifests import training_rows
from tests.mlcore.helpers import COLOURS
from tests.test_runs import TINY, colour_project

PER_CLASS = 4


@pytest.fixture
def trained(transactional_db, tmp_path, settings, scientist):
    settings.RUN_HEARTBEAT_S = 0.2
    project, task, labels = colour_project(tmp_path, per_class=PER_CLASS, test_per_class=2)
    run = runs.start_training_run(task=task, config=TINY, by=scientist, enqueue=False)
    run = runs.execute_run(run.id, worker="test-worker")
    assert run.state == TrainingRun.State.DONE, run.state_reason
    return project, task, labels, run


def test_rounds_exclude_outliers_retrain_and_put_back(trained, scientist, client, api_client_for):
    project, task, labels, run = trained
    # A cut far below any distance between two different images: every image is a cluster of
    # its own, the class's core is one image, the other train images are its outliers.
    job = autoclean.start_cleaning(run=run, by=scientist, config={"rounds": 3, "cluster_threshold": 1e-6},
                                   enqueue=False)
    job = autoclean.execute_cleaning(job.pk, worker="test-worker")
    assert job.state == CleaningRun.State.DONE, job.state_reason
    # Round 1 leaves 3 of each class's 4 train images out; round 2 finds nothing new (one image
    # per class is its own core): converged before the third round.
    assert [r["round"] for r in job.rounds] == [0, 1] and job.stopped == "converged"
    r0, r1 = job.rounds
    assert r0["run"] == run.pk and r0["test_macro_f1"] == run.test_macro_f1
    assert r1["newly_excluded"] == r1["excluded"] == 3 * (PER_CLASS - 1)
    assert r1["excluded_per_class"] == {name: PER_CLASS - 1 for name in COLOURS}
    assert set(r1["cuts"]) == set(COLOURS)  # the configured cut, for every class
    run1 = TrainingRun.objects.get(pk=r1["run"])
    assert run1.state == TrainingRun.State.DONE and run1.parent_id == run.pk
    assert (run1.n_train, run1.n_test) == (3, 6)  # the test split is never excluded
    assert r1["test_macro_f1"] == run1.test_macro_f1 is not None
    ex = list(TrainingExclusion.objects.filter(task=task, active=True))
    assert len(ex) == 9 and {(e.cleaning_run_id, e.round) for e in ex} == {(job.pk, 1)}
    assert {e.label_id for e in ex} == {lb.id for lb in labels.values()}

    # The page lists the rounds; "put back" returns every image to the next training.
    client.force_login(scientist)
    html = client.get(f"/cleaning/{job.pk}/").content.decode()
    assert f"run {run1.pk}" in html and f"{run1.test_macro_f1:.3f}" in html and "red: 3" in html
    assert "cut at cosine distance 0.000001" in html and "Cut per class" in html
    summary = autoclean.summary(job)
    assert [r["state"] for r in summary["rounds"]] == ["done", "done"]  # the runs' states now
    best = max(summary["rounds"], key=lambda r: r["test_macro_f1"])["round"]
    assert summary["best_round"] == best and 'data-testid="best-round"' in html
    api = api_client_for(scientist)
    for missing in (0, 2, 99):  # only round 1 left images out
        r = api.post(f"/api/cleaning-runs/{job.pk}/restore/", {"round": missing}, format="json")
        assert r.status_code == 400 and "no round" in r.json()["detail"]
    assert TrainingExclusion.objects.filter(task=task, active=True).count() == 9
    r = client.post(f"/cleaning/{job.pk}/restore", {"round": "1"})
    assert r.status_code == 302
    assert TrainingExclusion.objects.filter(task=task, active=True).count() == 0
    assert len([row for row in training_rows(task) if row[2] == "train"]) == 3 * PER_CLASS
    assert autoclean.summary(job)["still_excluded"] == 0


def test_by_default_each_class_is_cut_from_its_own_labels(trained):
    """No configured cut: every class gets the cut at which its core holds 1 - its estimated
    share of wrong labels (mlcore.clean.outliers), and only train images of that class leave."""
    project, task, labels, run = trained
    found, cuts = autoclean.outliers(run)
    assert set(cuts) == {lb.id for lb in labels.values()} and all(0 <= c <= 2 for c in cuts.values())
    given = dict(Prediction.objects.filter(run=run, split="train").values_list("image_id", "given_label_id"))
    assert all(given[image_id] == label_id for image_id, label_id in found.items())
    per_class = {lb: list(found.values()).count(lb) for lb in cuts}
    assert max(per_class.values()) <= PER_CLASS // 2  # a core keeps at least half of its class


def test_bad_starts_are_refused_with_the_reason(trained, scientist, api_client_for):
    project, task, labels, run = trained
    api = api_client_for(scientist)
    r = api.post("/api/cleaning-runs/", {"run": run.pk, "config": {"rounds": 0}}, format="json")
    assert r.status_code == 400 and "rounds" in r.json()["detail"]
    for bad, says in (({"rounds": True}, "rounds must be an integer"), ({"rounds": 1.5}, "rounds must be an integer"),
                      ({"cluster_threshold": True}, "cluster_threshold must be a number"),
                      ({"cluster_threshold": "x" * 5000}, "cluster_threshold must be a number")):
        r = api.post("/api/cleaning-runs/", {"run": run.pk, "config": bad}, format="json")
        assert r.status_code == 400 and r.json()["detail"] == says, bad  # the field and the rule, not the value
    r = api.post("/api/cleaning-runs/", {"run": run.pk, "config": {"cut": 1}}, format="json")
    assert r.status_code == 400 and "unknown" in r.json()["detail"]
    r = api.post("/api/cleaning-runs/", {"run": run.pk, "config": [1]}, format="json")
    assert r.status_code == 400
    queued = TrainingRun.objects.create(project=project, task=task)
    r = api.post("/api/cleaning-runs/", {"run": queued.pk}, format="json")
    assert r.status_code == 400 and "finished run" in r.json()["detail"]
    job = autoclean.start_cleaning(run=run, by=scientist, enqueue=False)
    with pytest.raises(autoclean.CleaningError, match="one at a time"):
        autoclean.start_cleaning(run=run, by=scientist, enqueue=False)
    assert api_client_for(scientist).get(f"/api/cleaning-runs/{job.pk}/").json()["state"] == "queued"
    assert CleaningRun.objects.count() == 1


def test_the_cleaning_task_trains_on_the_gpu_queue():
    import labeling.tasks  # noqa: F401  (the worker imports it through autodiscovery)
    from labeling.celery import app

    assert "labeling.tasks.train_autoclean" in app.tasks
    assert app.amqp.router.route({}, "labeling.tasks.train_autoclean")["queue"].name == "gpu"
