"""services.quality on known data: runs, predictions and metrics built with the ORM (no
training), so every number below can be checked by hand.

The test split of run 2 (labels v-neck, round, square), given -> predicted (confidence):

    v-neck -> v-neck  .90 .80 .70      round -> round   .88 .66     square -> square .99
    v-neck -> round   .95 .60          round -> v-neck  .85
    v-neck -> square  .75

    v-neck: tp 3, fn 3, fp 1 -> P .75,  R .5,   F1 .6
    round:  tp 2, fn 1, fp 2 -> P .5,   R 2/3,  F1 4/7
    square: tp 1, fn 0, fp 1 -> P .5,   R 1,    F1 2/3
"""
from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest
from django.utils import timezone

from labeling.models import ClassMetric, Prediction, TrainingRun
from labeling.services import quality
from labeling.services.retag import retag_image
from tests.factories import make_image, make_project

pytestmark = pytest.mark.django_db

RUN2_TEST = [  # (given, predicted, confidence) by label index: 0 v-neck, 1 round, 2 square
    (0, 0, .90), (0, 0, .80), (0, 0, .70), (0, 1, .95), (0, 1, .60), (0, 2, .75),
    (1, 1, .88), (1, 1, .66), (1, 0, .85),
    (2, 2, .99),
]
RUN1_TEST = [  # the earlier run: worse on v-neck (F1 .4), better on square
    (0, 0, .90), (0, 1, .80), (0, 1, .70), (0, 2, .95), (0, 0, .60), (0, 2, .75),
    (1, 1, .88), (1, 1, .66), (1, 1, .85),
    (2, 2, .99),
]


def prf(rows, k):
    tp = sum(1 for g, p, _ in rows if g == k and p == k)
    fp = sum(1 for g, p, _ in rows if g != k and p == k)
    fn = sum(1 for g, p, _ in rows if g == k and p != k)
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0), tp + fn


def metrics_doc(rows, n):
    """One split of run.metrics, as services.run_results writes it."""
    cm = [[0] * n for _ in range(n)]
    for g, p, _ in rows:
        cm[g][p] += 1
    per = [prf(rows, k) for k in range(n)]
    present = [x for k, x in enumerate(per) if any(g == k or p == k for g, p, _ in rows)]
    correct = sum(cm[i][i] for i in range(n))
    return {
        "support": len(rows), "accuracy": correct / len(rows),
        "macro": {m: float(np.mean([x[i] for x in present])) for i, m in enumerate(("precision", "recall", "f1"))},
        "micro": {m: correct / len(rows) for m in ("precision", "recall", "f1")},
        "confusion": cm,
    }


def probs_bytes(predicted: int, confidence: float, n: int) -> bytes:
    rest = (1 - confidence) / (n - 1)
    return np.array([confidence if i == predicted else rest for i in range(n)], dtype=np.float16).tobytes()


def make_run(task, labels, images, splits: dict, *, finished_at=None, snapshot_at=None, parent=None,
             state=TrainingRun.State.DONE, by=None) -> TrainingRun:
    """A finished run of ``task`` whose predictions are ``splits[split]`` = [(given, predicted,
    confidence)] by label index, one image of ``images[split]`` per row, in order."""
    now = timezone.now()
    run = TrainingRun.objects.create(
        project=task.project, task=task, state=state, label_ids=[lb.id for lb in labels],
        label_names=[lb.name for lb in labels], config={"arch": "resnet18", "epochs": 2},
        n_train=len(images.get("train", [])), n_test=len(images.get("test", [])), parent=parent, created_by=by,
        snapshot_at=snapshot_at or now, started_at=(finished_at or now) - timedelta(minutes=3),
        finished_at=finished_at or now, device="cpu (test)")
    preds, metrics, class_metrics = [], {}, []
    for split, rows in splits.items():
        for (g, p, conf), image in zip(rows, images[split]):
            preds.append(Prediction(run=run, image=image, split=split, given_label=labels[g], predicted_label=labels[p],
                                    confidence=conf, correct=g == p, probs=probs_bytes(p, conf, len(labels))))
        metrics[split] = metrics_doc(rows, len(labels))
        for k, lb in enumerate(labels):
            p_, r_, f_, s_ = prf(rows, k)
            class_metrics.append(ClassMetric(run=run, split=split, label=lb, precision=p_, recall=r_, f1=f_, support=s_))
    Prediction.objects.bulk_create(preds)
    ClassMetric.objects.bulk_create(class_metrics)
    run.metrics = metrics
    run.test_macro_f1 = metrics.get("test", {}).get("macro", {}).get("f1")
    run.save()
    return run


@pytest.fixture
def two_runs(scientist):
    """Two finished runs of neckline, 10 test and 4 train images, 2 retags in between."""
    project, task, labels = make_project()
    test = [make_image(project, f"test/{i:02d}.jpg", split="test", task=task, label=labels[g])
            for i, (g, _, _) in enumerate(RUN2_TEST)]
    train_rows = [(0, 0, .9), (1, 1, .8), (2, 2, .7), (0, 1, .6)]
    train = [make_image(project, f"train/{i:02d}.jpg", split="train", task=task, label=labels[g])
             for i, (g, _, _) in enumerate(train_rows)]
    images = {"test": test, "train": train}
    t0 = timezone.now() - timedelta(hours=2)
    run1 = make_run(task, labels, images, {"test": RUN1_TEST, "train": train_rows}, snapshot_at=t0,
                    finished_at=t0 + timedelta(minutes=5), by=scientist)
    # Two human retags between the runs (and an import, which is no retag).
    retag_image(image=test[4], task=task, label=labels[1], by=scientist, expected_version=1)
    retag_image(image=test[5], task=task, label=labels[2], by=scientist, expected_version=1)
    run2 = make_run(task, labels, images, {"test": RUN2_TEST, "train": [(0, 0, .9), (1, 1, .8), (2, 2, .7), (0, 0, .6)]},
                    snapshot_at=timezone.now() + timedelta(seconds=1), finished_at=timezone.now() + timedelta(minutes=5),
                    parent=run1, by=scientist)
    return {"project": project, "task": task, "labels": labels, "test": test, "train": train,
            "run1": run1, "run2": run2}


def by_name(rows):
    return {r["name"]: r for r in rows}


def test_class_metrics_and_deltas_against_the_previous_run(two_runs):
    run1, run2 = two_runs["run1"], two_runs["run2"]
    assert quality.previous_finished_run(run2) == run1
    assert quality.previous_finished_run(run1) is None

    board = quality.dashboard(run2)
    assert board["previous"]["id"] == run1.id
    assert board["retags_since_previous"] == 2
    assert [lb["name"] for lb in board["labels"]] == ["v-neck", "round", "square"]

    test = by_name(board["splits"]["test"]["classes"])
    assert list(test) == ["v-neck", "round", "square"]  # the run's label order
    assert test["v-neck"]["precision"] == pytest.approx(.75)
    assert test["v-neck"]["recall"] == pytest.approx(.5)
    assert test["v-neck"]["f1"] == pytest.approx(.6)
    assert test["v-neck"]["support"] == 6
    assert test["round"]["f1"] == pytest.approx(4 / 7)
    assert test["square"]["precision"] == pytest.approx(.5) and test["square"]["recall"] == pytest.approx(1)

    # Run 1 on the test split: v-neck tp 2 of 6, no fp -> P 1, R 1/3, F1 .5;
    # round tp 3, fp 2 -> P .6, R 1, F1 .75; square tp 1, fp 2 -> P 1/3, R 1, F1 .5.
    assert test["v-neck"]["delta"]["f1"] == pytest.approx(.6 - .5)
    assert test["v-neck"]["delta"]["precision"] == pytest.approx(.75 - 1)
    assert test["v-neck"]["delta"]["recall"] == pytest.approx(.5 - 1 / 3)
    assert test["round"]["delta"]["f1"] == pytest.approx(4 / 7 - .75)
    assert test["square"]["delta"]["f1"] == pytest.approx(2 / 3 - .5)
    assert test["v-neck"]["delta"]["support"] == 0

    t = board["splits"]["test"]
    assert t["macro"]["f1"] == pytest.approx((.6 + 4 / 7 + 2 / 3) / 3)
    assert t["micro"]["f1"] == pytest.approx(.6)
    assert t["macro_delta"]["f1"] == pytest.approx((.6 + 4 / 7 + 2 / 3) / 3 - (.5 + .75 + .5) / 3)
    assert t["micro_delta"]["f1"] == pytest.approx(.6 - .6)
    assert t["support"] == 10

    train = by_name(board["splits"]["train"]["classes"])
    assert train["v-neck"]["f1"] == pytest.approx(1.0)
    assert train["v-neck"]["delta"]["f1"] == pytest.approx(1 - 2 / 3)


def test_first_run_has_no_deltas(two_runs):
    board = quality.dashboard(two_runs["run1"])
    assert board["previous"] is None and board["retags_since_previous"] is None
    assert all(c["delta"] is None for c in board["splits"]["test"]["classes"])
    assert board["splits"]["test"]["macro_delta"] is None


def test_previous_run_skips_failed_runs_and_other_tasks(two_runs):
    task = two_runs["task"]
    TrainingRun.objects.create(project=task.project, task=task, state=TrainingRun.State.FAILED)
    later = TrainingRun.objects.create(project=task.project, task=task, state=TrainingRun.State.DONE,
                                       label_ids=two_runs["run2"].label_ids)
    assert quality.previous_finished_run(later) == two_runs["run2"]


def test_confusion_counts_in_label_order(two_runs):
    cm = quality.confusion(two_runs["run2"], "test")
    assert [lb["name"] for lb in cm["labels"]] == ["v-neck", "round", "square"]
    assert cm["matrix"] == [[3, 2, 1], [1, 2, 0], [0, 0, 1]]
    assert cm["row_totals"] == [6, 3, 1] and cm["col_totals"] == [4, 4, 2]
    assert cm["total"] == 10 and cm["correct"] == 6
    assert cm["shares"][0][1] == pytest.approx(2 / 6)
    assert quality.confusion(two_runs["run2"], "train")["matrix"] == [[2, 0, 0], [0, 1, 0], [0, 0, 1]]
    with pytest.raises(quality.QualityError):
        quality.confusion(two_runs["run2"], "val")


def test_false_negatives_most_confident_first(two_runs):
    run, labels, test = two_runs["run2"], two_runs["labels"], two_runs["test"]
    q = quality.grid_query(run, kind="fn", label_id=labels[0].id, split="test")
    page = quality.grid_page(q)
    assert page.count == 3 and page.next is None and page.prev is None
    assert [(i["given_name"], i["predicted_name"], i["confidence"]) for i in page.items] == [
        ("v-neck", "round", .95), ("v-neck", "square", .75), ("v-neck", "round", .60)]
    assert [i["image"] for i in page.items] == [test[3].id, test[5].id, test[4].id]
    # The label today and its version, for the retag's 409 rule: images 4 and 5 were retagged.
    now = {i["image"]: (i["current_name"], i["version"]) for i in page.items}
    assert now[test[3].id] == ("v-neck", 1)
    assert now[test[4].id] == ("round", 2)
    assert now[test[5].id] == ("square", 2)


def test_false_positives_and_a_confusion_cell(two_runs):
    run, labels = two_runs["run2"], two_runs["labels"]
    fp = quality.grid_page(quality.grid_query(run, kind="fp", label_id=labels[1].id))
    assert [(i["given_name"], i["confidence"]) for i in fp.items] == [("v-neck", .95), ("v-neck", .60)]
    assert fp.count == 2
    cell = quality.grid_page(quality.grid_query(run, kind="cell", label_id=labels[0].id, predicted_id=labels[2].id))
    assert [(i["given_name"], i["predicted_name"]) for i in cell.items] == [("v-neck", "square")] and cell.count == 1
    diag = quality.grid_page(quality.grid_query(run, kind="cell", label_id=labels[0].id, predicted_id=labels[0].id))
    assert [i["confidence"] for i in diag.items] == [.9, .8, .7] and diag.count == 3
    with pytest.raises(quality.QualityError):
        quality.grid_query(run, kind="fn", label_id=999999)
    with pytest.raises(quality.QualityError):
        quality.grid_query(run, kind="nope", label_id=labels[0].id)


def test_keyset_pages_cover_every_row_once_both_ways():
    """250 false negatives with many tied confidences: pages of 7 forward, then back."""
    project, task, labels = make_project(name="Big")
    images = [make_image(project, f"t/{i:04d}.jpg", split="test") for i in range(250)]
    rng = np.random.default_rng(0)
    confs = rng.choice([.5, .61, .7, .93, .999], size=250).tolist()  # ties on purpose
    run = TrainingRun.objects.create(project=project, task=task, state="done", label_ids=[lb.id for lb in labels])
    Prediction.objects.bulk_create([
        Prediction(run=run, image=im, split="test", given_label=labels[0], predicted_label=labels[1 + i % 2],
                   confidence=c, correct=False, probs=probs_bytes(1, c, 3))
        for i, (im, c) in enumerate(zip(images, confs))])
    q = quality.grid_query(run, kind="fn", label_id=labels[0].id)
    expected = list(Prediction.objects.filter(run=run).order_by("-confidence", "id").values_list("id", flat=True))

    seen, after, pages = [], None, []
    while True:
        page = quality.grid_page(q, after=after, size=7, with_current=False)
        pages.append(page)
        seen += [i["prediction"] for i in page.items]
        if page.next is None:
            break
        after = page.next
    assert seen == expected and len(set(seen)) == 250
    assert len(pages) == 36 and pages[0].prev is None and pages[-1].next is None

    # Backwards from the last page: the same pages in reverse.
    back, before = [], pages[-1].prev
    while before is not None:
        page = quality.grid_page(q, before=before, size=7, with_current=False)
        back = [i["prediction"] for i in page.items] + back
        before = page.prev
    assert back + [i["prediction"] for i in pages[-1].items] == expected

    with pytest.raises(quality.QualityError):
        quality.grid_page(q, after="garbage")


def test_f1_series_over_runs(two_runs):
    task, run1, run2 = two_runs["task"], two_runs["run1"], two_runs["run2"]
    TrainingRun.objects.create(project=task.project, task=task, state="failed")  # not in the series
    s = quality.f1_series(task, "test")
    assert [r["id"] for r in s["runs"]] == [run1.id, run2.id]
    f1 = {lb["name"]: lb["f1"] for lb in s["labels"]}
    assert f1["v-neck"] == [pytest.approx(.5), pytest.approx(.6)]
    assert f1["round"] == [pytest.approx(.75), pytest.approx(4 / 7)]
    assert s["runs"][1]["macro_f1"] == pytest.approx((.6 + 4 / 7 + 2 / 3) / 3)


def test_image_predictions_of_the_latest_run_of_every_task(two_runs):
    from labeling.services.labels import ensure_labels, get_or_create_task

    project, labels, test = two_runs["project"], two_runs["labels"], two_runs["test"]
    sleeve = get_or_create_task(project, "sleeve")
    ensure_labels(sleeve, ["short", "long"])
    out = {t["task_name"]: t for t in quality.image_predictions(test[3])}
    assert set(out) == {"neckline", "sleeve"}
    assert out["sleeve"]["run"] is None and out["sleeve"]["prediction"] is None
    p = out["neckline"]["prediction"]
    assert out["neckline"]["run"] == two_runs["run2"].id
    assert (p["given_name"], p["predicted_name"], p["correct"]) == ("v-neck", "round", False)
    assert p["confidence"] == pytest.approx(.95)
    assert [t["name"] for t in p["top"]] == ["round", "v-neck", "square"]
    assert p["top"][0]["prob"] == pytest.approx(.95, abs=1e-3)  # float16
    assert p["top"][1]["prob"] == pytest.approx(.025, abs=1e-3)


def test_run_status_and_loss_curve():
    project, task, labels = make_project()
    run = TrainingRun.objects.create(project=project, task=task, state="running", progress={
        "phase": "train", "epoch": 2, "epochs": 2, "step": 5, "steps": 10, "loss": 0.5, "images_per_s": 100, "eta_s": 3})
    run.history = [{"kind": "attempt", "attempt": 1},
                   {"kind": "progress", "phase": "train", "epoch": 1, "epochs": 2, "step": 5, "steps": 10, "loss": 1.5},
                   {"kind": "progress", "phase": "train", "epoch": 1, "epochs": 2, "step": 10, "steps": 10, "loss": 1.0},
                   {"kind": "progress", "phase": "eval", "epoch": 1, "epochs": 2, "step": 3, "steps": 3, "loss": None},
                   {"kind": "epoch", "epoch": 1, "train_loss": 1.0, "val_loss": 1.25},
                   {"kind": "progress", "phase": "train", "epoch": 2, "epochs": 2, "step": 5, "steps": 10, "loss": 0.5}]
    run.save()
    s = quality.run_status(run)
    assert s["state"] == "running" and not s["finished"]
    assert [(p["x"], p["loss"]) for p in s["loss_curve"]["train"]] == [(0.5, 1.5), (1.0, 1.0), (1.5, 0.5)]
    assert s["loss_curve"]["val"] == [{"x": 1.0, "loss": 1.25}]
    assert s["progress"]["eta_s"] == 3


# --- the progress page: the whole run's share and ETA, the loss axis -------------------------------

def test_overall_progress_grows_through_every_phase_and_ends_at_100(db):
    """One share for the whole run (each phase weighed by its images), never falling back when
    an epoch's validation or the final prediction pass starts; 100 % when done."""
    project, task, labels = make_project()
    run = TrainingRun.objects.create(project=project, task=task, state=TrainingRun.State.RUNNING,
                                     config={"epochs": 2}, n_train=80, n_test=20)
    # Units: training 3 x 80 per epoch, validation (the test split) 20 per epoch, final pass 100.
    total = 2 * (240 + 20) + 100
    steps = [({"phase": "train", "epoch": 1, "step": 5, "steps": 10, "t": 10}, 120 / total),
             ({"phase": "train", "epoch": 1, "step": 10, "steps": 10, "t": 20}, 240 / total),
             ({"phase": "eval", "epoch": 1, "step": 1, "steps": 2, "eta_s": 5, "t": 21}, 250 / total),
             ({"phase": "train", "epoch": 2, "step": 5, "steps": 10, "t": 31}, (260 + 120) / total),
             ({"phase": "embed", "epoch": 0, "step": 1, "steps": 4, "eta_s": 3, "t": 45}, (520 + 25) / total),
             ({"phase": "load", "t": 50}, 0.99)]
    shares = []
    for progress, expected in steps:
        run.progress = progress
        got = quality.overall_progress(run)
        assert got["share"] == pytest.approx(expected, abs=1e-4)
        if progress["phase"] != "load":  # the elapsed time scaled by what is left
            assert got["eta_s"] == pytest.approx(progress["t"] * (1 - expected) / expected, abs=0.1)
        shares.append(got["share"])
    assert shares == sorted(shares)
    # The validation pass's own "5 s" is not the run's ETA: the rest of epoch 2 and the final pass are left.
    run.progress = steps[2][0]
    assert quality.overall_progress(run)["eta_s"] > 6 * steps[2][0]["eta_s"]
    run.state, run.progress = TrainingRun.State.DONE, {"phase": "done", "t": 55}
    assert quality.overall_progress(run) == {"share": 1.0, "eta_s": None, "phase": "done"}
    run.state = TrainingRun.State.FAILED
    run.history = [{"kind": "progress", "phase": "train", "epoch": 1, "step": 10, "steps": 10}]
    run.progress = {"phase": "failed"}
    assert quality.overall_progress(run)["share"] == pytest.approx(240 / total, abs=1e-4)
    assert quality.overall_progress(run)["eta_s"] is None


def test_loss_axis_is_clipped_after_a_huge_first_epoch_and_says_what_validation_is(db):
    history = [{"kind": "progress", "phase": "train", "epoch": 1, "step": 1, "steps": 4, "loss": 20.0}]
    history += [{"kind": "progress", "phase": "train", "epoch": e, "step": s, "steps": 4, "loss": 0.5 - e / 20}
                for e in (1, 2, 3) for s in (2, 3, 4)]
    history += [{"kind": "epoch", "epoch": e, "val_loss": 0.6 - e / 20} for e in (1, 2, 3)]
    curve = quality.loss_curve(history)
    later = max(c["loss"] for c in curve["train"] + curve["val"] if c["x"] > 1)
    assert curve["clipped"] and curve["y_max"] == pytest.approx(1.5 * later) and curve["max_loss"] == 20.0
    calm = quality.loss_curve(history[1:])
    assert calm["clipped"] is False and calm["y_max"] is None

    project, task, labels = make_project()
    run = TrainingRun.objects.create(project=project, task=task, config={"epochs": 2})
    assert quality.validation_source(run) == {"source": "test split (no val split, val_fraction=0)", "is_test": True}
    run.config = {"val_fraction": 0.1}
    assert quality.validation_source(run)["is_test"] is False
    run.metrics = {"validation": {"source": "val split", "images": 9}}
    assert quality.validation_source(run) == {"source": "val split", "is_test": False}
