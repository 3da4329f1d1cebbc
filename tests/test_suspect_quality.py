"""Suspect quality on constructed suspects runs (no training): the Wilson interval against published
values; people's verdicts per signal and class; precision, recall, F1, P@k and AUROC against a
truth task, worked out by hand; ties in the score broken by the other evidence; the fold models'
health (a collapsed fold makes the evidence weak); the time estimate; the put-back bug of the
cluster view; the truth task hidden from the grid; the API and its schema."""
from __future__ import annotations

import numpy as np
import pytest
from django.utils import timezone

from labeling.models import ClusterMember, EventSource, Suspect, SuspectRun, Task, TrainingExclusion, TrainingRun
from labeling.services import suspect_quality as q
from labeling.services import suspects
from labeling.services.labels import ensure_labels
from labeling.services.retag import retag_image
from tests.test_suspects import LABELS, make_world, scores_for, store

# Images 0, 4, 9 and 10 carry a wrong label (their truth differs); the run flags 0, 1, 4, 10.
WRONG = {0: "dog", 4: "cat", 9: "fox", 10: "fox"}
FLAGGED = [0, 1, 4, 10]


def done_world(tmp_path, flagged=FLAGGED):
    project, task, labels, images, sr = make_world()
    sr.output_uri = (tmp_path / "sr").as_uri()
    sr.save(update_fields=["output_uri"])
    given, scores = scores_for(12, flagged=flagged)
    store(sr, images, given, scores)
    SuspectRun.objects.filter(pk=sr.pk).update(state=SuspectRun.State.DONE, finished_at=timezone.now())
    sr.refresh_from_db()
    return project, task, labels, images, sr


def add_truth(project, task, images):
    truth = Task.objects.create(project=project, name="animal_clean")
    tl = ensure_labels(truth, LABELS)
    for i, im in enumerate(images):
        retag_image(image=im, task=truth, label=tl[WRONG.get(i, LABELS[i % 3])], expected_version=None,
                    source=EventSource.IMPORT)
    return q.set_truth_task(truth=truth, of=task)


# --------------------------------------------------------------------------- statistics

def test_wilson_interval_matches_published_values():
    # Wilson (1927) / Newcombe (1998), 95%: 3/3 -> 0.438-1, 7/10 -> 0.397-0.892, 0/10 -> 0-0.278.
    assert q.wilson(3, 3) == pytest.approx((0.4385, 1.0), abs=1e-4)
    assert q.wilson(7, 10) == pytest.approx((0.3968, 0.8922), abs=1e-4)
    assert q.wilson(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert q.wilson(0, 0) == (None, None)


def test_auroc_counts_ties_half():
    assert q.auroc([0.9, 0.5, 0.5, 0.1], [True, True, False, False]) == pytest.approx(0.875)
    assert q.auroc([1, 2], [True, True]) is None


# --------------------------------------------------------------------------- truth

def test_truth_figures_of_a_constructed_run(db, tmp_path):
    project, task, labels, images, sr = done_world(tmp_path)
    assert q.truth_quality(sr) is None  # no truth task yet
    add_truth(project, task, images)
    t = q.truth_quality(sr)
    # Flagged {0, 1, 4, 10}, wrong {0, 4, 9, 10}: 3 true positives.
    assert (t["images"], t["errors"], t["flagged"], t["true_positives"]) == (12, 4, 4, 3)
    assert t["precision"] == pytest.approx(0.75) and t["recall"] == pytest.approx(0.75)
    assert t["f1"] == pytest.approx(0.75)
    # Scores fall with the image index: the top 4 are images 0-3, one of them wrong.
    assert t["k"] == 4 and t["precision_at_k"] == pytest.approx(0.25)
    # Positives 0, 4, 9, 10 outrank 8 + 5 + 1 + 1 of the 8 negatives: 15 / 32.
    assert t["auroc"] == pytest.approx(15 / 32)
    assert t["truth_task"] == "animal_clean"


def test_ties_in_the_score_are_broken_by_the_other_evidence(db, tmp_path, annotator):
    project, task, labels, images, sr = make_world()
    sr.output_uri = (tmp_path / "sr").as_uri()
    given, scores = scores_for(12, flagged=range(6))
    # The first six all score 1.00 (saturated); their p(given) rises with the index, so the old
    # order (by id: import order) is the worst one: image 5 has the lowest p(given).
    scores["score"][:6] = 1.0
    scores["self_confidence"][:6] = [0.30, 0.25, 0.20, 0.15, 0.10, 0.05]
    scores["knn_agreement"][:6] = 0.0
    store(sr, images, given, scores)
    order = list(Suspect.objects.filter(suspect_run=sr).order_by("-score", "rank", "id")
                 .values_list("image_id", flat=True))
    assert order == [images[i].id for i in (5, 4, 3, 2, 1, 0)]
    assert suspects.lease_next(sr, annotator).image_id == images[5].id
    # The same order ranks P@k against the truth: images 5 and 4 first.
    SuspectRun.objects.filter(pk=sr.pk).update(state=SuspectRun.State.DONE)
    add_truth(project, task, images)
    assert q.truth_quality(sr)["precision_at_k"] == pytest.approx(0.25)  # top 4: 5, 4, 3, 2 -> only 4 is wrong


def test_truth_task_must_fit(db, tmp_path):
    project, task, labels, images, sr = done_world(tmp_path)
    other = Task.objects.create(project=project, name="colour")
    ensure_labels(other, ["red"])
    with pytest.raises(ValueError, match="unknown"):
        q.set_truth_task(truth=other, of=task)
    with pytest.raises(ValueError):
        q.set_truth_task(truth=task, of=task)


def test_truth_task_is_hidden_from_the_grid_and_the_image_page(db, tmp_path, client, annotator):
    project, task, labels, images, sr = done_world(tmp_path)
    add_truth(project, task, images)
    client.force_login(annotator)
    html = client.get(f"/p/{project.slug}/?task=999").content.decode()
    assert "animal_clean" not in html and "animal" in html
    html = client.get(f"/images/{images[0].id}/").content.decode()
    assert "animal_clean" not in html


# --------------------------------------------------------------------------- people's verdicts

def test_human_quality_per_signal_and_class(db, tmp_path, annotator):
    project, task, labels, images, sr = done_world(tmp_path)
    by_image = {s.image_id: s for s in Suspect.objects.filter(suspect_run=sr)}
    suspects.resolve(by_image[images[0].id], user=annotator, action="accept", expected_version=1)  # changed
    suspects.resolve(by_image[images[1].id], user=annotator, action="keep", expected_version=1)  # kept
    # Image 4 retagged on its image page (the suspect stays open), image 10 confirmed there.
    retag_image(image=images[4], task=task, label=labels["cat"], by=annotator, expected_version=1)
    retag_image(image=images[10], task=task, label=labels["dog"], by=annotator, expected_version=1)
    h = q.human_quality(sr)
    assert h["suspects"] == 4 and h["reviewed"] == 4
    assert (h["overall"]["changed"], h["overall"]["kept"]) == (2, 2)
    assert (h["overall"]["low"], h["overall"]["high"]) == pytest.approx((0.1500, 0.8500), abs=1e-4)
    sig = {r["signal"]: r for r in h["by_signal"]}
    assert (sig["model"]["n"], sig["model"]["changed"]) == (4, 2)
    assert (sig["cluster"]["n"], sig["cluster"]["changed"]) == (1, 0)  # only image 10 is an outlier
    cls = {r["label_name"]: r for r in h["by_class"]}
    assert (cls["cat"]["n"], cls["cat"]["changed"]) == (1, 1)
    assert (cls["dog"]["n"], cls["dog"]["changed"], cls["dog"]["kept"]) == (3, 1, 2)
    assert (cls["dog"]["low"], cls["dog"]["high"]) == pytest.approx((0.0615, 0.7923), abs=1e-4)
    assert "fox" not in cls


def test_skipped_and_imported_are_not_reviewed_mturk_consensus_is(db, tmp_path, annotator):
    project, task, labels, images, sr = done_world(tmp_path)
    s = suspects.lease_next(sr, annotator)
    suspects.resolve(s, user=annotator, action="skip", expected_version=None)
    # An import changing a label is no person's verdict.
    retag_image(image=images[4], task=task, label=labels["cat"], expected_version=None, source=EventSource.IMPORT)
    assert q.human_quality(sr)["reviewed"] == 0
    # An applied MTurk consensus is one: image 10 (dog) becomes fox, image 1 (dog) is confirmed.
    retag_image(image=images[10], task=task, label=labels["fox"], expected_version=1, source=EventSource.MTURK)
    retag_image(image=images[1], task=task, label=labels["dog"], expected_version=1, source=EventSource.MTURK)
    h = q.human_quality(sr)
    assert (h["reviewed"], h["overall"]["changed"], h["overall"]["kept"]) == (2, 1, 1)


# --------------------------------------------------------------------------- evidence health

def make_folds(sr, f1s, collapsed=()):
    ids = []
    for i, f1 in enumerate(f1s):
        confusion = [[5, 0, 0], [0, 5, 0], [0, 0, 5]] if i not in collapsed else [[5, 0, 0], [5, 0, 0], [5, 0, 0]]
        # as a real fold run stores them: its held-out fold is its val split, it has no test split
        f = TrainingRun.objects.create(project_id=sr.project_id, task_id=sr.task_id, parent=sr.run,
                                       state=TrainingRun.State.DONE, test_macro_f1=None,
                                       metrics={"val": {"macro": {"f1": f1}, "confusion": confusion}},
                                       config={"epochs": 1})
        ids.append(f.pk)
    SuspectRun.objects.filter(pk=sr.pk).update(fold_run_ids=ids)
    sr.refresh_from_db()
    return ids


def test_collapsed_fold_makes_the_evidence_weak(db, tmp_path):
    project, task, labels, images, sr = done_world(tmp_path)
    TrainingRun.objects.filter(pk=sr.run_id).update(test_macro_f1=0.8)
    sr.refresh_from_db()
    ids = make_folds(sr, [0.75, 0.78])
    h = q.fold_health(sr)
    assert not h["weak"] and h["warning"] == "" and h["main_macro_f1"] == 0.8
    assert [f["macro_f1"] for f in h["folds"]] == [0.75, 0.78]

    ids = make_folds(sr, [0.75, 0.019], collapsed=[1])
    h = q.fold_health(sr)
    assert h["weak"] and [f["weak"] for f in h["folds"]] == [False, True]
    assert h["folds"][1]["collapsed"] and "single class" in h["folds"][1]["why"]
    assert f"run {ids[1]}: held-out macro-F1 0.019 against the main run's 0.800" in h["warning"]
    assert h["warning"].startswith("Weak evidence: 1 of 2 fold models learnt little")
    # Below half the main run (0.35 < 0.4) is weak too, though above chance (1/3).
    make_folds(sr, [0.35])
    h = q.fold_health(sr)
    assert h["weak"] and "below half" in h["folds"][0]["why"] and not h["folds"][0]["collapsed"]


def test_estimate_from_the_main_runs_timings(db, tmp_path):
    project, task, labels, images, sr = done_world(tmp_path)
    run = sr.run
    run.timings, run.config, run.n_train, run.n_test = {"train_s": 100.0, "execute_s": 120.0}, {"epochs": 10}, 800, 200
    e = q.estimate(run, k=4, fold_epochs=1)
    # Training: 100 s x 1/10 epochs x 3/4 of the data; the rest (20 s) x 200/1000 predicted images.
    assert e["per_fold_s"] == pytest.approx(11.5) and e["sequential_s"] == pytest.approx(46.0)
    run.timings = {}
    assert q.estimate(run, k=4) is None


# --------------------------------------------------------------------------- the put-back bug

def test_put_back_a_class_returns_every_image_even_a_retagged_one(db, tmp_path, scientist, client):
    project, task, labels, images, sr = done_world(tmp_path)
    # Cat's outliers: images 0, 3 (train) and 9 (test; excluded too, harmless).
    ClusterMember.objects.filter(cluster__suspect_run=sr, image__in=[images[0], images[3]]).update(is_outlier=True)
    assert suspects.exclude_outliers(sr, label_id=labels["cat"].id, by=scientist) == 3
    # One of them is retagged from the cluster view: it is a dog now.
    out = suspects.retag_group(sr, versions={images[3].id: 1}, label=labels["dog"], by=scientist)
    assert out["changed"] == [images[3].id]
    assert suspects.exclusion_summary(task)["by_label"] == [{"label": "cat", "n": 3}]
    client.force_login(scientist)
    r = client.post(f"/suspects/{sr.pk}/restore", {"label": labels["cat"].id})
    assert r.status_code == 302
    assert TrainingExclusion.objects.filter(task=task, active=True).count() == 0
    assert suspects.exclusion_summary(task)["total"] == 0


# --------------------------------------------------------------------------- API

def test_quality_api_and_schema(db, tmp_path, annotator, scientist, api_client_for, make_user):
    project, task, labels, images, sr = done_world(tmp_path)
    add_truth(project, task, images)
    # Metrics are for scientists (as /api/runs/{id}/dashboard/): an annotator is kept out.
    r = api_client_for(annotator).get(f"/api/suspect-runs/{sr.pk}/quality/")
    assert r.status_code == 403 and "detail" in r.json()
    api = api_client_for(scientist)
    r = api.get(f"/api/suspect-runs/{sr.pk}/quality/")
    assert r.status_code == 200, r.content
    body = r.json()
    assert body["truth"]["f1"] == pytest.approx(0.75) and body["truth"]["auroc"] == pytest.approx(15 / 32)
    assert body["human"]["reviewed"] == 0 and body["evidence"]["weak"] is False
    assert api_client_for(make_user(None)).get(f"/api/suspect-runs/{sr.pk}/quality/").status_code == 403
    schema = api.get("/api/schema/", {"format": "json"}).json()
    props = schema["components"]["schemas"]["Quality"]["properties"]
    assert {"human", "truth", "evidence"} <= set(props)
    assert "/api/suspect-runs/{id}/quality/" in schema["paths"]


def test_the_cluster_view_shows_the_cut_mlcore_reports(db, tmp_path, client, scientist):
    project, task, labels, images, sr = make_world()
    given, scores = scores_for(12, flagged=[0])
    assert suspects.cut_shown(sr, labels["cat"].id)["source"] == "mlcore's default"
    SuspectRun.objects.filter(pk=sr.pk).update(config={**sr.config, "cluster_threshold": 0.6})
    sr.refresh_from_db()
    assert suspects.cut_shown(sr, labels["cat"].id) == {"cut": 0.6, "source": "configured"}
    store(sr, images, given, {**scores, "cluster_cut": np.array([0.31, 0.42, 0.5])})
    sr.refresh_from_db()
    assert suspects.cut_shown(sr, labels["dog"].id) == {"cut": 0.42, "source": "chosen from the data"}
    client.force_login(scientist)
    html = client.get(f"/suspects/{sr.pk}/clusters/?label={labels['dog'].id}").content.decode()
    assert "<strong>0.420</strong> (chosen from the data)" in html


def test_fold_progress_shows_steps_and_the_time_left(db, tmp_path, client, scientist):
    project, task, labels, images, sr = make_world()
    run = sr.run
    run.timings, run.config, run.n_train, run.n_test = {"train_s": 100.0, "execute_s": 120.0}, {"epochs": 10}, 800, 200
    run.save()
    running = TrainingRun.objects.create(project=project, task=task, parent=run, state=TrainingRun.State.RUNNING,
                                         progress={"phase": "train", "epoch": 1, "epochs": 1, "step": 3,
                                                   "steps": 10, "eta_s": 30.0})
    queued = TrainingRun.objects.create(project=project, task=task, parent=run)
    SuspectRun.objects.filter(pk=sr.pk).update(state=SuspectRun.State.FOLDS, fold_run_ids=[running.pk, queued.pk],
                                               config={**sr.config, "k": 2, "fold_epochs": 1},
                                               progress={"phase": "folds", "folds": 2, "folds_done": 0})
    sr.refresh_from_db()
    # The running fold's own ETA, plus one estimated fold: 100 s x 1/10 x 1/2 + 20 s x 400/1000.
    assert suspects.status(sr)["folds_eta_s"] == pytest.approx(30.0 + 5.0 + 8.0)
    client.force_login(scientist)
    html = client.get(f"/suspects/{sr.pk}/").content.decode()
    assert "step 3/10 · ETA 30 s" in html and "0 of 2 fold models done" in html and "about 43 s left" in html


def test_a_done_runs_pages_and_quality_answer(db, tmp_path, client, scientist, api_client_for):
    """The run page, its queue, its clusters and the quality API of a done suspects run, on
    whichever database the suite runs (SQLite too: ``env -u DATABASE_URL``); their counts are
    the ORM's (suspects.open_counts), no database-specific SQL."""
    project, task, labels, images, sr = done_world(tmp_path)
    client.force_login(scientist)
    for url in (f"/suspects/{sr.pk}/", f"/suspects/{sr.pk}/queue/",
                f"/suspects/{sr.pk}/clusters/?label={labels['dog'].id}", f"/p/{project.slug}/suspects/"):
        r = client.get(url)
        assert r.status_code == 200, (url, r.status_code)
    r = api_client_for(scientist).get(f"/api/suspect-runs/{sr.pk}/quality/")
    assert r.status_code == 200 and r.json()["suspect_run"] == sr.pk
    assert suspects.open_count(sr) == len(FLAGGED)


def test_the_run_page_shows_models_scores_to_scientists_not_to_annotators(db, tmp_path, client, scientist,
                                                                         annotator):
    """As the quality API (scientists only): the folds' and the main run's macro-F1 and the
    truth figures are on a scientist's page; an annotator sees the folds' progress and the queue.
    (A weak-evidence warning, which names the weak folds' scores, is shown to both: it says why
    the suspects may be wrong.)"""
    project, task, labels, images, sr = done_world(tmp_path)
    add_truth(project, task, images)
    make_folds(sr, [0.7, 0.72])
    client.force_login(scientist)
    html = client.get(f"/suspects/{sr.pk}/").content.decode()
    assert 'data-testid="main-f1"' in html and "Held-out macro-F1" in html and 'data-testid="truth"' in html
    client.force_login(annotator)
    r = client.get(f"/suspects/{sr.pk}/")
    html = r.content.decode()
    assert r.status_code == 200 and 'data-testid="folds"' in html and 'data-testid="open-count"' in html
    assert 'data-testid="main-f1"' not in html and "macro-F1" not in html and 'data-testid="truth"' not in html
