"""Run lineage: a suspects run's fold models are TrainingRuns, but not training runs of the task.

They are never the baseline a dashboard compares with, never "the latest run" (image page),
never in the run list, the API's run list or F1 over runs, and cannot be retrained. A
dashboard compares with the run it retrains (else the previous training run of the task),
names it, and says which way each headline figure moved. Runs and metrics are built with
the ORM (tests/test_quality.py's builders), so every number is known.
"""
from __future__ import annotations

from datetime import timedelta

import pytest
from django.apps import apps as django_apps
from django.utils import timezone

from labeling.models import SuspectRun, TrainingRun
from labeling.services import quality, runs
from tests.test_quality import RUN1_TEST, RUN2_TEST, make_run, metrics_doc, two_runs  # noqa: F401 - fixture

pytestmark = pytest.mark.django_db

# A collapsed fold model: everything predicted v-neck.
FOLD_TEST = [(g, 0, .99) for g, _, _ in RUN1_TEST]
TRAIN_ROWS = [(0, 0, .9), (1, 1, .8), (2, 2, .7), (0, 1, .6)]


@pytest.fixture
def with_fold(two_runs):  # noqa: F811 - the fixture imported above
    """run1, then a suspects run on it whose fold model finished after run1, then run2 (retrains run1)."""
    w = two_runs
    run1, run2 = w["run1"], w["run2"]
    sr = SuspectRun.objects.create(project=w["project"], task=w["task"], run=run1, state=SuspectRun.State.DONE)
    fold = make_run(w["task"], w["labels"], {"test": w["test"], "train": w["train"]},
                    {"test": FOLD_TEST, "train": TRAIN_ROWS}, parent=run1,
                    snapshot_at=run1.snapshot_at, finished_at=run1.finished_at + timedelta(minutes=10))
    fold.fold_of = sr
    fold.save(update_fields=["fold_of"])
    sr.fold_run_ids = [fold.pk]
    sr.save(update_fields=["fold_run_ids"])
    # The fold was created between run1 and run2, as in the issue (run 5 between runs 1 and 6).
    t0 = timezone.now() - timedelta(hours=1)
    for i, r in enumerate((run1, fold, run2)):
        TrainingRun.objects.filter(pk=r.pk).update(created_at=t0 + timedelta(seconds=i))
    for r in (run1, run2, fold):
        r.refresh_from_db()
    return {**w, "sr": sr, "fold": fold}


def test_a_retrain_compares_with_the_run_it_retrains_not_a_fold(with_fold):
    run1, run2, fold = with_fold["run1"], with_fold["run2"], with_fold["fold"]
    assert runs.baseline_run(run2) == run1
    assert quality.previous_finished_run(run2) == run1
    assert runs.baseline_run(fold) is None  # a fold model is not compared with the task's runs

    board = quality.dashboard(run2)
    assert board["previous"]["id"] == run1.id and board["compared_because"] == "retrains"
    before = metrics_doc(RUN1_TEST, 3)["macro"]["f1"]
    now = metrics_doc(RUN2_TEST, 3)["macro"]["f1"]
    assert now > before
    move = board["moves"][0]
    assert move["name"] == "test macro-F1" and move["direction"] == "rose"
    assert move["before"] == pytest.approx(before) and move["now"] == pytest.approx(now)
    assert board["sentence"].startswith(f"test macro-F1 rose from {before:.3f} to {now:.3f}")
    micro = next(m for m in board["moves"] if m["name"] == "test micro-F1")
    assert micro["direction"] == "flat" and "did not move" in micro["text"]  # .6 both times
    assert board["splits"]["test"]["macro_delta"]["f1"] == pytest.approx(now - before)


def test_without_a_parent_the_previous_main_run_is_the_baseline(with_fold):
    w = with_fold
    run3 = make_run(w["task"], w["labels"], {"test": w["test"]}, {"test": RUN1_TEST},
                    finished_at=timezone.now() + timedelta(minutes=30))
    TrainingRun.objects.filter(pk=w["fold"].pk).update(created_at=run3.created_at - timedelta(seconds=1))
    assert runs.baseline_run(run3) == w["run2"]
    board = quality.dashboard(run3)
    assert board["compared_because"] == "previous"
    assert board["moves"][0]["direction"] == "fell"
    assert board["sentence"].startswith("test macro-F1 fell from ")


def test_a_fold_is_never_the_latest_run_nor_listed(with_fold, api_client_for, scientist):
    w = with_fold
    run1, run2, fold = w["run1"], w["run2"], w["fold"]
    TrainingRun.objects.filter(pk=run2.pk).update(state=TrainingRun.State.RUNNING)
    # The fold finished after run1; the latest training run is still run1.
    assert runs.latest_finished_run(w["task"]) == run1
    entry = quality.image_predictions(w["test"][0])[0]
    assert entry["run"] == run1.id and entry["prediction"]["predicted_name"] == "v-neck"
    entry = quality.image_predictions(w["test"][6])[0]  # round: run1 right, the fold said v-neck
    assert entry["run"] == run1.id and entry["prediction"]["predicted_name"] == "round"
    TrainingRun.objects.filter(pk=fold.pk).update(state=TrainingRun.State.RUNNING)
    assert runs.active_run(w["task"]).pk == run2.pk
    TrainingRun.objects.filter(pk__in=[run2.pk, fold.pk]).update(state=TrainingRun.State.DONE)

    assert fold.pk not in [r.pk for r in quality.task_runs(w["task"])]
    assert [r["id"] for r in quality.f1_series(w["task"])["runs"]] == [run1.id, run2.id]
    listed = api_client_for(scientist).get(f"/api/runs/?task={w['task'].id}").json()
    ids = [r["id"] for r in listed.get("results", listed)]
    assert fold.pk not in ids and run1.id in ids


def test_a_fold_cannot_be_retrained(with_fold, api_client_for, scientist):
    fold = with_fold["fold"]
    with pytest.raises(runs.RunStateError, match="fold model of suspects run"):
        runs.retrain(fold, by=scientist, enqueue=False)
    r = api_client_for(scientist).post(f"/api/runs/{fold.pk}/retrain/")
    assert r.status_code == 409 and "fold model" in r.json()["detail"]
    assert not TrainingRun.objects.filter(parent=fold).exists()


def test_pages_show_lineage(with_fold, client, scientist):
    w = with_fold
    client.force_login(scientist)
    listing = client.get(f"/p/{w['project'].slug}/runs/?task={w['task'].id}").content.decode()
    assert f'data-run="{w["fold"].pk}"' not in listing and f'data-run="{w["run1"].id}"' in listing

    page = client.get(f"/runs/{w['run2'].id}/").content.decode()
    assert f'data-baseline="{w["run1"].id}"' in page and "the run this one retrains" in page
    assert "Test macro-F1 rose from" in page

    fold_page = client.get(f"/runs/{w['fold'].pk}/").content.decode()
    assert f"suspects run {w['sr'].pk}" in fold_page and "not compared" in fold_page
    assert 'data-testid="retrain"' not in fold_page


def test_migration_marks_existing_fold_runs(with_fold):
    """0010 backfills ``fold_of`` from SuspectRun.fold_run_ids (the only record before it)."""
    import importlib

    fold = with_fold["fold"]
    TrainingRun.objects.filter(pk=fold.pk).update(fold_of=None)
    migration = importlib.import_module("labeling.migrations.0010_lineage_duplicates")
    migration.mark_fold_runs(django_apps, None)
    fold.refresh_from_db()
    assert fold.fold_of_id == with_fold["sr"].pk
