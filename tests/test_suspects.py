"""Suspects on constructed arrays (no training): storing scores as suspects, clusters and
pairs; the verified-images rule; the queue's leases (two annotators never get one image,
expiry); resolving with the 409 rule; group retags; exclusions honoured by the manifest;
the MTurk selector; the API's permissions."""
from __future__ import annotations

import threading
from datetime import timedelta

import numpy as np
import pytest
from django.db import connection
from django.utils import timezone

from labeling.models import (Annotation, Cluster, ClusterMember, EventSource, Image, LabelEvent, NearDuplicate,
                             Project, Suspect, SuspectRun, TrainingExclusion, TrainingRun)
from labeling.services import enqueue, suspects
from labeling.services.labels import ensure_labels, get_or_create_task
from labeling.services.manifests import training_rows
from labeling.services.retag import RetagConflict, current_version, retag_image
from tests.conftest import require_service

LABELS = ["cat", "dog", "fox"]


def make_world(n=12, folder=None):
    """A project with ``n`` images (8 train, 4 test), labelled cat/dog/fox in turn, a done run
    and an empty suspects run on it. With ``folder`` the images are real PNGs written there."""
    project = Project.objects.create(name="Pets", slug="pets")
    task = get_or_create_task(project, "animal")
    labels = ensure_labels(task, LABELS)
    images = []
    for i in range(n):
        uri = f"file:///x/img{i:02d}.png"
        if folder is not None:
            from mlcore import storage
            from tests.mlcore.helpers import COLOURS, make_image

            path = folder / f"img{i:02d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(make_image(list(COLOURS.values())[i % 3], i, size=(28, 28)))
            uri = storage.to_uri(path)
        image = Image.objects.create(project=project, key=f"img{i:02d}.png", uri=uri,
                                     split="train" if i < 8 else "test", width=28, height=28)
        retag_image(image=image, task=task, label=labels[LABELS[i % 3]], expected_version=None,
                    source=EventSource.IMPORT)
        images.append(image)
    run = TrainingRun.objects.create(project=project, task=task, state=TrainingRun.State.DONE,
                                     label_ids=[labels[n].id for n in LABELS], label_names=LABELS,
                                     snapshot_at=timezone.now())
    sr = SuspectRun.objects.create(project=project, task=task, run=run, config=dict(suspects.DEFAULTS),
                                   state=SuspectRun.State.SCORING)
    return project, task, labels, images, sr


def scores_for(n, flagged, suggested=None):
    """A score dict like mlcore.suspects.score's: rows ``flagged`` flagged, two clusters per class
    (cluster 0 the core), the last image of each class an outlier in cluster 1."""
    given = np.arange(n) % 3
    flags = np.zeros(n, bool)
    flags[list(flagged)] = True
    outlier = np.zeros(n, bool)
    for c in range(3):
        outlier[np.flatnonzero(given == c)[-1]] = True
    cluster_id = np.where(outlier, 1, 0)
    score = np.linspace(0.9, 0.1, n)
    sugg = (given + 1) % 3 if suggested is None else np.asarray(suggested)
    return given, {
        "self_confidence": 1 - score, "margin": score - 0.5, "cl_issue": flags.copy(), "cluster_id": cluster_id,
        "is_core": ~outlier, "cluster_outlier": outlier, "knn_agreement": 1 - score, "score": score,
        "flagged": flags, "suggested": sugg, "reasons": np.where(flags, 1 | 4, 0) | np.where(outlier, 2, 0),
    }


def store(sr, images, given, scores, pairs=()):
    return suspects.store_results(sr, image_ids=[im.id for im in images], given=given, scores=scores, pairs=pairs)


# --------------------------------------------------------------------------- storing scores

def test_store_results_suspects_clusters_pairs(db):
    project, task, labels, images, sr = make_world()
    given, scores = scores_for(12, flagged=[0, 4, 10])
    counts = store(sr, images, given, scores, pairs=[(0, 9, 0.99, "cross_split"), (1, 2, 0.98, "label_conflict")])
    assert counts["suspects"] == 3 and counts["clusters"] == 6 and counts["outliers"] == 3
    s = Suspect.objects.get(suspect_run=sr, image=images[4])
    assert s.given_label == labels["dog"] and s.suggested_label == labels["fox"]
    assert s.reasons == 1 | 4 and "model" in s.reason_text and "neighbours" in s.reason_text
    assert s.version == 1 and s.status == Suspect.Status.OPEN
    assert list(suspects.queue(sr).values_list("image_id", flat=True).order_by("-score")) == [
        images[0].id, images[4].id, images[10].id]
    core = Cluster.objects.get(suspect_run=sr, label=labels["cat"], is_core=True)
    assert core.size == 3 and core.number == 0
    assert ClusterMember.objects.filter(cluster__suspect_run=sr, is_outlier=True).count() == 3
    assert suspects.typical_images(sr, labels["cat"].id) == [images[0].id, images[3].id, images[6].id]
    assert NearDuplicate.objects.filter(suspect_run=sr, kind="cross_split").get().image_b_id == images[9].id
    view = suspects.class_clusters(sr, labels["cat"].id)
    assert view["core_ids"] == [images[0].id, images[3].id, images[6].id]
    assert [im["id"] for g in view["groups"] for im in g["images"]] == [images[9].id]
    # A second store (a retried scoring) replaces, never duplicates.
    store(sr, images, given, scores)
    assert Suspect.objects.filter(suspect_run=sr).count() == 3 and Cluster.objects.filter(suspect_run=sr).count() == 6


def test_per_class_figures_stored_when_scored_and_outliers_paged(db, annotator, monkeypatch):
    from labeling.services.suspects import clusters

    project, task, labels, images, sr = make_world()
    given, scores = scores_for(12, flagged=[0, 3, 4, 10])
    outlier = (given == 0) & (np.arange(12) > 0)  # cat: images 3, 6, 9 outliers; image 0 the core
    outlier |= scores["cluster_outlier"]
    scores.update(cluster_outlier=outlier, cluster_id=np.where(outlier, 1, 0), is_core=~outlier)
    store(sr, images, given, scores)
    sr.refresh_from_db()
    cat, dog = str(labels["cat"].id), str(labels["dog"].id)
    assert sr.class_figures[cat] == {"suspects": 2, "clusters": 2, "core": 1, "outliers": 3}
    assert sr.class_figures[dog] == {"suspects": 2, "clusters": 2, "core": 3, "outliers": 1}
    # The summary's open suspects: the figures less the settled and the stale, as the queue says.
    retag_image(image=images[4], task=task, label=labels["cat"], by=annotator, expected_version=1)  # stale
    s = Suspect.objects.get(suspect_run=sr, image=images[0])
    suspects.resolve(s, user=annotator, action="keep", expected_version=1)  # settled
    summary = {r["label"].name: r for r in suspects.class_summary(sr)}
    assert (summary["cat"]["suspects"], summary["dog"]["suspects"], summary["fox"]["suspects"]) == (1, 1, 0)
    assert summary["cat"]["outliers"] == 3 and summary["cat"]["core"] == 1
    assert suspects.open_count(sr) == suspects.queue(sr).count() == 2
    # Outliers a page at a time; a page past the end shows the last one.
    monkeypatch.setattr(clusters, "OUTLIERS_PER_PAGE", 2)
    pages = [suspects.class_clusters(sr, labels["cat"].id, page=p) for p in (1, 2, 9)]
    assert [[im["id"] for g in v["groups"] for im in g["images"]] for v in pages] == [
        [images[3].id, images[6].id], [images[9].id], [images[9].id]]
    assert [(v["page"], v["pages"], v["first"], v["last"], v["outliers"]) for v in pages] == [
        (1, 2, 1, 2, 3), (2, 2, 3, 3, 3), (2, 2, 3, 3, 3)]


def test_migration_0012_reopens_skipped_suspects_and_fills_the_figures(db, annotator):
    import importlib

    from django.apps import apps

    migration = importlib.import_module("labeling.migrations.0012_suspects_figures")
    project, task, labels, images, sr = make_world()
    given, scores = scores_for(12, flagged=[0, 4])
    store(sr, images, given, scores)
    when = timezone.now()
    Suspect.objects.filter(suspect_run=sr, image=images[0]).update(status="skipped", resolved_by=annotator,
                                                                     resolved_at=when)
    SuspectRun.objects.filter(pk=sr.pk).update(class_figures={}, counts={"suspects": 2, "cluster_cuts": {"cat": 0.3}})
    migration.forwards(apps, None)
    s = Suspect.objects.get(suspect_run=sr, image=images[0])
    assert (s.status, s.skipped_by, s.skipped_at, s.resolved_by) == ("open", annotator, when, None)
    sr.refresh_from_db()
    assert sr.counts == {"suspects": 2}
    assert sr.class_figures[str(labels["cat"].id)] == {"suspects": 1, "clusters": 2, "core": 3, "outliers": 1}


def test_verified_images_are_not_suspects_again_until_their_label_changes(db, annotator):
    project, task, labels, images, sr = make_world()
    # A person confirmed image 0 (keep: same label, marks verified), retagged image 4.
    retag_image(image=images[0], task=task, label=labels["cat"], by=annotator, expected_version=1)
    retag_image(image=images[4], task=task, label=labels["cat"], by=annotator, expected_version=1)
    given, scores = scores_for(12, flagged=[0, 4, 10])
    counts = store(sr, images, given, scores)
    assert counts["suspects"] == 1 and counts["skipped_verified"] == 1 and counts["skipped_changed"] == 1
    # The label of image 0 changes again without a person (an import): it may be a suspect again.
    retag_image(image=images[0], task=task, label=labels["dog"], expected_version=None, source=EventSource.IMPORT)
    retag_image(image=images[0], task=task, label=labels["cat"], expected_version=None, source=EventSource.IMPORT)
    assert store(sr, images, given, scores)["suspects"] == 2
    # A suspect verified on the image page after scoring leaves the queue.
    retag_image(image=images[10], task=task, label=labels["dog"], by=annotator, expected_version=1)
    assert list(suspects.queue(sr).values_list("image_id", flat=True)) == [images[0].id]


# --------------------------------------------------------------------------- the queue

def test_two_annotators_never_get_the_same_suspect_and_leases_expire(db, make_user):
    project, task, labels, images, sr = make_world()
    given, scores = scores_for(12, flagged=[0, 4])
    store(sr, images, given, scores)
    a, b, c = make_user("annotator"), make_user("annotator"), make_user("annotator")
    now = timezone.now()
    sa = suspects.lease_next(sr, a, now=now)
    sb = suspects.lease_next(sr, b, now=now)
    assert sa.image_id == images[0].id and sb.image_id == images[4].id
    assert suspects.lease_next(sr, a, now=now).pk == sa.pk  # a reload shows the same one
    assert suspects.lease_next(sr, c, now=now) is None  # everything is held
    later = now + timedelta(seconds=suspects.lease_seconds() + 1)
    assert suspects.lease_next(sr, c, now=later).pk == sa.pk  # a's lease expired
    assert suspects.lease_next(sr, a, now=later) is None or True


@pytest.mark.django_db(transaction=True)
def test_concurrent_leases_skip_locked_rows(make_user):
    if connection.vendor != "postgresql":
        require_service("postgresql")  # fails in CI; skips only where PostgreSQL is missing
    project, task, labels, images, sr = make_world()
    given, scores = scores_for(12, flagged=range(12))
    store(sr, images, given, scores)
    users = [make_user("annotator") for _ in range(6)]
    got, errors = [], []
    barrier = threading.Barrier(len(users))

    def work(user):
        try:
            barrier.wait()
            for _ in range(2):
                s = suspects.lease_next(sr, user)
                got.append((user.pk, s.image_id))
                suspects.resolve(s, user=user, action="keep", expected_version=1)
        except Exception as e:  # noqa: BLE001
            errors.append(e)
        finally:
            connection.close()

    threads = [threading.Thread(target=work, args=(u,)) for u in users]
    [t.start() for t in threads]
    [t.join(30) for t in threads]
    assert not errors, errors
    images_got = [i for _, i in got]
    assert len(images_got) == 12 and len(set(images_got)) == 12


def test_resolve_accept_keep_label_skip_and_conflict(db, annotator, make_user):
    project, task, labels, images, sr = make_world()
    given, scores = scores_for(12, flagged=[0, 1, 2, 3, 4])
    store(sr, images, given, scores)
    s = suspects.lease_next(sr, annotator)
    s = suspects.resolve(s, user=annotator, action="accept", expected_version=1)
    assert s.status == "retagged" and Annotation.objects.get(image=images[0], task=task).label == labels["dog"]
    event = LabelEvent.objects.filter(image=images[0]).first()
    assert event.by == annotator and event.reference == f"suspects {sr.pk}" and event.to_label == labels["dog"]
    with pytest.raises(suspects.SuspectResolved):
        suspects.resolve(s, user=annotator, action="accept", expected_version=2)

    s = suspects.lease_next(sr, annotator)
    s = suspects.resolve(s, user=annotator, action="keep", expected_version=1)
    ann = Annotation.objects.get(image=images[1], task=task)
    assert s.status == "kept" and ann.verified and ann.label == labels["dog"] and ann.version == 1

    s = suspects.lease_next(sr, annotator)
    s = suspects.resolve(s, user=annotator, action="label", label=labels["cat"], expected_version=1)
    assert Annotation.objects.get(image=images[2], task=task).label == labels["cat"]

    # A skip is not a decision: the suspect stays open, unleased, for the others.
    s = suspects.lease_next(sr, annotator)
    assert s.image_id == images[3].id
    skipped = suspects.resolve(s, user=annotator, action="skip", expected_version=None)
    assert (skipped.status, skipped.skipped_by, skipped.lease_holder) == ("open", annotator, None)
    assert suspects.queue_counts(sr) == {"open": 2, "retagged": 2, "kept": 1, "skipped": 1}
    s = suspects.lease_next(sr, annotator)
    assert s.image_id == images[4].id  # not the one just skipped
    other = make_user("annotator")
    assert suspects.lease_next(sr, other).image_id == images[3].id  # which someone else still gets
    suspects.release(skipped, other)

    retag_image(image=s.image, task=task, label=labels["fox"], by=other, expected_version=1)
    with pytest.raises(RetagConflict):
        suspects.resolve(s, user=annotator, action="accept", expected_version=1)
    assert Suspect.objects.get(pk=s.pk).status == "open"
    assert suspects.throughput(sr, annotator, timezone.now() - timedelta(minutes=2))["done"] == 3
    # The changed one left the queue (and the count, without reading every annotation); the
    # skipped one comes back to the one who skipped it once nothing else is left.
    assert suspects.open_count(sr) == 1 == suspects.queue(sr).count()
    assert suspects.lease_next(sr, annotator).image_id == images[3].id


def test_group_retag_and_exclusions_in_the_manifest(db, scientist):
    project, task, labels, images, sr = make_world()
    given, scores = scores_for(12, flagged=[9])
    store(sr, images, given, scores)
    view = suspects.class_clusters(sr, labels["cat"].id)
    versions = {im["id"]: im["version"] for g in view["groups"] for im in g["images"]}
    out = suspects.retag_group(sr, versions={**versions, images[0].id: 7}, label=labels["dog"], by=scientist)
    assert out["changed"] == [images[9].id] and out["conflicts"] == [images[0].id]
    assert LabelEvent.objects.filter(image=images[9], by=scientist).count() == 1
    assert Suspect.objects.get(suspect_run=sr, image=images[9]).status == "retagged"

    # Outliers: images 9 (cat, test), 10 (dog, test), 11 (fox, test) -> make a train outlier too.
    ClusterMember.objects.filter(cluster__suspect_run=sr, image=images[7]).update(is_outlier=True)
    assert suspects.exclude_outliers(sr, label_id=labels["dog"].id, by=scientist) == 2
    uris = {u for u, _, _ in training_rows(task)}
    assert images[7].uri not in uris  # a train image left out
    assert images[10].uri in uris  # test images are never left out
    assert suspects.exclusion_summary(task)["total"] == 2
    assert suspects.exclude_outliers(sr, by=scientist) == 2  # the other two classes; dog's already there
    assert suspects.restore_exclusions(task) == 4
    assert images[7].uri in {u for u, _, _ in training_rows(task)}
    assert TrainingExclusion.objects.filter(active=True).count() == 0
    assert suspects.exclude_outliers(sr, by=scientist) == 4  # reversible both ways


def test_mturk_selector_suspects(db):
    from labeling.services.mturk.selection import select

    project, task, labels, images, sr = make_world()
    SuspectRun.objects.filter(pk=sr.pk).update(state=SuspectRun.State.DONE, finished_at=timezone.now())
    given, scores = scores_for(12, flagged=[4, 0])
    store(sr, images, given, scores)
    assert select(project, task, "suspects", {"suspect_run": sr.pk}) == [images[0].id, images[4].id]
    assert select(project, task, "suspects", {"limit": 1}) == [images[0].id]


def test_similar_images_uses_the_index(db, monkeypatch):
    from labeling.services import similar

    project, task, labels, images, sr = make_world()
    SuspectRun.objects.filter(pk=sr.pk).update(state=SuspectRun.State.DONE, finished_at=timezone.now(),
                                               index_uri="file:///nowhere/similar.index")

    class FakeIndex:
        def query(self, key, k):
            return np.array([key, images[3].id, images[5].id]), np.array([1.0, 0.9, 0.8])

    monkeypatch.setattr(similar, "load_index", lambda uri: FakeIndex())
    out = similar.similar_images(images[0], k=2)
    assert [(it["image"].id, it["label"]) for it in out["items"]] == [(images[3].id, "cat"), (images[5].id, "fox")]


# --------------------------------------------------------------------------- API

def test_api_queue_and_permissions(db, annotator, scientist, api_client_for, make_user):
    project, task, labels, images, sr = make_world()
    SuspectRun.objects.filter(pk=sr.pk).update(state=SuspectRun.State.DONE)
    given, scores = scores_for(12, flagged=[0, 4])
    store(sr, images, given, scores)
    api = api_client_for(annotator)
    assert api.post("/api/suspect-runs/", {"run": sr.run_id}, format="json").status_code == 403
    assert api_client_for(make_user(None)).get(f"/api/suspect-runs/{sr.pk}/").status_code == 403
    r = api.post(f"/api/suspect-runs/{sr.pk}/next/")
    assert r.status_code == 200, r.content
    item = r.json()
    assert item["image"] == images[0].id and item["suggested_label"] == labels["dog"].id and item["version"] == 1
    r = api.post(f"/api/suspects/{item['id']}/resolve/", {"action": "accept", "expected_version": 0}, format="json")
    assert r.status_code == 409 and r.json()["current"]["version"] == 1 and "changed since" in r.json()["detail"]
    r = api.post(f"/api/suspects/{item['id']}/resolve/", {"action": "accept", "expected_version": 1}, format="json")
    assert r.status_code == 200 and r.json()["status"] == "retagged"
    assert current_version(images[0], task) == 2
    r = api.get(f"/api/suspect-runs/{sr.pk}/suspects/?status=open")
    assert [s["image"] for s in r.json()] == [images[4].id]
    assert api.get(f"/api/suspect-runs/{sr.pk}/clusters/?label={labels['cat'].id}").status_code == 200
    assert api.post(f"/api/suspect-runs/{sr.pk}/exclude/", {}, format="json").status_code == 403
    r = api_client_for(scientist).post(f"/api/suspect-runs/{sr.pk}/exclude/", {}, format="json")
    assert r.status_code == 200 and r.json()["excluded"] == 3
    r = api.get(f"/api/suspect-runs/{sr.pk}/near-duplicates/")
    assert r.status_code == 200
    assert api.get(f"/api/images/{images[0].id}/similar/").status_code == 200


def test_beat_advances_a_suspects_run_whose_folds_finished_elsewhere(db, monkeypatch,
                                                                     django_capture_on_commit_callbacks):
    """A fold re-sent by the stale-run check ends as a plain training run; the periodic
    advance notices that all folds are done and starts scoring."""
    project, task, labels, images, sr = make_world()
    folds = [TrainingRun.objects.create(project=project, task=task, state=TrainingRun.State.DONE, parent=sr.run)
             for _ in range(2)]
    SuspectRun.objects.filter(pk=sr.pk).update(state=SuspectRun.State.FOLDS, fold_run_ids=[f.pk for f in folds])
    sent = []
    monkeypatch.setattr(enqueue, "send", lambda name, *args, fail=None: sent.append((name, *args)))

    with django_capture_on_commit_callbacks(execute=True):
        assert suspects.advance_open_runs() == 1

    sr.refresh_from_db()
    assert sr.state == SuspectRun.State.SCORING
    assert sent == [("suspects_score", sr.pk)]
    assert suspects.advance_open_runs() == 0  # nothing left training folds


def test_undo_of_a_queue_decision_puts_the_label_back_and_reopens(tmp_path, annotator, scientist, api_client_for):
    from labeling.models import Annotation, LabelEvent, Suspect
    from labeling.services import suspects as svc

    project, task, labels, images, sr = make_world(folder=tmp_path / "pets")
    SuspectRun.objects.filter(pk=sr.pk).update(state=SuspectRun.State.DONE)
    given, scores = scores_for(12, flagged=[0, 1, 2])
    store(sr, images, given, scores)
    first = svc.lease_next(sr, annotator)
    ann = Annotation.objects.get(image=first.image, task=task)
    svc.resolve(first, user=annotator, action="accept", expected_version=ann.version)
    shown = svc.lease_next(sr, annotator)
    assert shown.pk != first.pk
    client = api_client_for(annotator)
    assert api_client_for(scientist).post(f"/api/suspects/{first.pk}/undo/").status_code == 400  # not theirs
    r = client.post(f"/api/suspects/{first.pk}/undo/")
    assert r.status_code == 200, r.content
    assert r.json()["status"] == "open"
    assert Annotation.objects.get(image=first.image, task=task).label == ann.label
    assert LabelEvent.objects.filter(image=first.image).first().reference == "undo"
    assert svc.lease_next(sr, annotator).pk == first.pk  # shown next
    assert client.post(f"/api/suspects/{first.pk}/undo/").status_code == 400  # open: nothing to undo
    # Decided again, then changed by someone else: undo is a 409 and writes nothing.
    now = Annotation.objects.get(image=first.image, task=task)
    svc.resolve(Suspect.objects.get(pk=first.pk), user=annotator, action="accept", expected_version=now.version)
    now = Annotation.objects.get(image=first.image, task=task)
    retag_image(image=first.image, task=task, label=ann.label, by=scientist, expected_version=now.version)
    r = client.post(f"/api/suspects/{first.pk}/undo/")
    assert r.status_code == 409 and "changed after your decision" in r.json()["detail"]
    assert Suspect.objects.get(pk=first.pk).status == Suspect.Status.RETAGGED


def test_test_time_flips_are_on_by_default_and_checked_as_the_fold_runs_option():
    assert suspects.validate_config({})["flip"] is True
    assert suspects.validate_config({"flip": "off"})["flip"] is False
    assert suspects.validate_config({"flip": False})["flip"] is False
    with pytest.raises(suspects.SuspectError, match="flip must be true or false"):
        suspects.validate_config({"flip": "maybe"})


def test_config_numbers_name_the_field_and_the_rule_not_the_value():
    for bad, says in (({"k": True}, "k must be an integer"), ({"k": 2.5}, "k must be an integer"),
                      ({"fold_epochs": "x" * 5000}, "fold_epochs must be an integer"),
                      ({"cluster_threshold": "NaN"}, "cluster_threshold is a cosine distance in (0, 2]")):
        with pytest.raises(suspects.SuspectError) as e:
            suspects.validate_config(bad)
        assert str(e.value) == says
    assert suspects.validate_config({"k": "3", "fold_epochs": "2"})["k"] == 3
