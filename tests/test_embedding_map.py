"""The embeddings map (a run's images as points of a 2-D layout of their embeddings) and
bulk retag from its selection: the layout, the API's columns for known data, the bulk
rule (one event per image, a conflict per image), and the page in a real browser."""
from __future__ import annotations

import numpy as np
import pytest
from playwright.sync_api import expect

from labeling.models import Annotation, LabelEvent, Prediction
from labeling.services import embedding_map
from labeling.services.projects import project_storage_uri
from mlcore import storage
from mlcore.projection import project_2d
from tests.factories import make_image, make_project
from tests.test_quality import two_runs  # noqa: F401  (fixture)


def test_projection_is_deterministic_scaled_and_keeps_groups_apart():
    rng = np.random.default_rng(1)
    a = rng.normal(0, .05, (300, 64)) + np.eye(64)[0] * 3
    b = rng.normal(0, .05, (200, 64)) + np.eye(64)[1] * 3
    emb = np.vstack([a, b]).astype(np.float32)
    rows, xy = project_2d(emb)
    assert rows.tolist() == list(range(500)) and xy.shape == (500, 2) and xy.dtype == np.float32
    assert np.abs(xy).max() == pytest.approx(1.0)
    # The two groups fall on either side of the first axis.
    assert (np.sign(xy[:300, 0]) == np.sign(xy[0, 0])).all() and (np.sign(xy[300:, 0]) == -np.sign(xy[0, 0])).all()
    rows2, xy2 = project_2d(emb)
    assert np.array_equal(xy, xy2)
    sampled, sxy = project_2d(emb, max_points=100)
    assert len(sampled) == 100 and (np.diff(sampled) > 0).all() and sxy.shape == (100, 2)
    assert project_2d(np.zeros((0, 8)))[1].shape == (0, 2)


def with_embeddings(run, images, side):
    """Write the run's embeddings.npz: image i near +e0 when side[i] else near +e1."""
    run.output_uri = project_storage_uri(run.project, "runs", str(run.id))
    run.save(update_fields=["output_uri"])
    rng = np.random.default_rng(0)
    emb = np.stack([np.eye(16)[0 if s else 1] * 2 + rng.normal(0, .05, 16) for s in side]).astype(np.float32)
    storage.write_bytes(storage.join(run.output_uri, "embeddings.npz"),
                        storage.npz_bytes({"uri": np.asarray([im.uri for im in images]), "emb": emb}))


@pytest.fixture
def mapped(two_runs):  # noqa: F811
    images = two_runs["test"] + two_runs["train"]
    side = [i % 2 == 0 for i in range(len(images))]
    with_embeddings(two_runs["run2"], images, side)
    return dict(two_runs, images=images, side=side)


def test_map_columns_are_the_runs_predictions_and_the_labels_now(mapped, scientist, annotator, api_client_for):
    run, images, labels = mapped["run2"], mapped["images"], mapped["labels"]
    r = api_client_for(scientist).get(f"/api/runs/{run.id}/map/")
    assert r.status_code == 200
    d = r.json()
    assert sorted(d["image"]) == sorted(im.id for im in images) and d["method"] == "pca" and not d["sampled"]
    names = [lb["name"] for lb in d["labels"]]
    assert names == ["v-neck", "round", "square"]
    for k, image_id in enumerate(d["image"]):
        p = Prediction.objects.get(run=run, image_id=image_id)
        a = Annotation.objects.get(image_id=image_id, task=run.task)
        assert names[d["given"][k]] == p.given_label.name and names[d["predicted"][k]] == p.predicted_label.name
        assert d["confidence"][k] == pytest.approx(p.confidence, abs=1e-4)
        assert names[d["current"][k]] == a.label.name and d["version"][k] == a.version
        assert d["suspect"][k] is None
    # The layout puts the two groups of embeddings on either side.
    side = {im.id: s for im, s in zip(images, mapped["side"])}
    xs = {s: {np.sign(x) for x, i in zip(d["x"], d["image"]) if side[i] == s} for s in (True, False)}
    assert len(xs[True]) == len(xs[False]) == 1 and xs[True] != xs[False]
    # Stored once: the second request reads map2d.npz.
    assert storage.exists(storage.join(run.output_uri, "map2d.npz"))
    assert api_client_for(scientist).get(f"/api/runs/{run.id}/map/").json()["x"] == d["x"]
    assert api_client_for(annotator).get(f"/api/runs/{run.id}/map/").status_code == 403
    assert api_client_for(scientist).get(f"/api/runs/{mapped['run1'].id}/map/").status_code == 409  # no embeddings
    assert "embeddings" in api_client_for(scientist).get(f"/api/runs/{mapped['run1'].id}/map/").json()["detail"]
    assert api_client_for(scientist).get("/api/runs/999999/map/").status_code == 404


def test_bulk_retag_writes_one_event_per_image_and_reports_each_conflict(mapped, annotator, scientist, api_client_for):
    task, labels, images = mapped["task"], mapped["labels"], mapped["images"][:4]
    seen = {im.id: Annotation.objects.get(image=im, task=task).version for im in images}
    # Someone retags images[1] after the page loaded.
    from labeling.services.retag import retag_image

    target = labels[2]
    now = Annotation.objects.get(image=images[1], task=task).label_id
    other = next(lb for lb in labels if lb.id != now and lb != target)
    retag_image(image=images[1], task=task, label=other, by=scientist, expected_version=seen[images[1].id])
    already = [im for im in images if Annotation.objects.get(image=im, task=task).label_id == target.id]
    before = LabelEvent.objects.count()
    r = api_client_for(annotator).post("/api/retag/bulk/", {
        "task": task.id, "label": target.id,
        "items": [{"image": im.id, "expected_version": seen[im.id]} for im in images] + [
            {"image": 999999, "expected_version": 0}]}, format="json")
    assert r.status_code == 200, r.content
    body = r.json()
    assert [c["image"] for c in body["conflicts"]] == [images[1].id]
    assert body["conflicts"][0]["seen"] == seen[images[1].id] and body["conflicts"][0]["label"] == other.id
    assert body["missing"] == [999999]
    moved = {c["image"] for c in body["changed"]}
    assert moved == {im.id for im in images} - {images[1].id} - {im.id for im in already}
    assert LabelEvent.objects.count() - before == len(moved)
    for im in images:
        a = Annotation.objects.get(image=im, task=task)
        assert a.label_id == (other.id if im == images[1] else target.id)


@pytest.mark.parametrize("body, says", [
    ({"task": 1, "label": None, "items": []}, "items"),
    ({"items": [{"image": 1, "expected_version": 0}]}, "task"),
    ({"task": "x", "label": None, "items": [{"image": 1, "expected_version": 0}]}, "task"),
    ({"task": None, "label": None, "items": [{"image": 1.5, "expected_version": -1}]}, "items"),
    ({"task": 1, "label": None, "items": [{"image": 1, "expected_version": 0}] * 1001}, "items"),
    ([1, 2], "non_field_errors"),
])
def test_bulk_retag_bodies_that_are_wrong_are_400_and_say_why(mapped, annotator, api_client_for, body, says):
    if isinstance(body, dict) and body.get("task") == 1:
        body = dict(body, task=mapped["task"].id)
    r = api_client_for(annotator).post("/api/retag/bulk/", body, format="json")
    assert r.status_code == 400 and says in r.json(), r.content


def test_bulk_retag_refuses_a_label_of_another_task(mapped, annotator, api_client_for):
    _, other_task, other_labels = make_project(name="Shoes", task="kind", labels=("boot",))
    r = api_client_for(annotator).post("/api/retag/bulk/", {
        "task": mapped["task"].id, "label": other_labels[0].id,
        "items": [{"image": mapped["images"][0].id, "expected_version": 1}]}, format="json")
    assert r.status_code == 400 and "not a label of task" in r.json()["detail"]


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_scientist_box_selects_on_the_map_and_retags_the_selection(page, login, scientist):
    from tests.test_browser import shot
    from tests.test_quality import make_run

    project, task, labels = make_project()
    n = 90
    group = [i % 3 for i in range(n)]                      # three groups of embeddings...
    given = [g if i % 10 else (g + 1) % 3 for i, g in enumerate(group)]  # ...and a tenth mislabelled
    images = [make_image(project, f"test/{i:03d}.jpg", split="test", task=task, label=labels[given[i]])
              for i in range(n)]
    run = make_run(task, labels, {"test": images}, {"test": [(given[i], group[i], .8) for i in range(n)]}, by=scientist)
    run.output_uri = project_storage_uri(run.project, "runs", str(run.id))
    run.save(update_fields=["output_uri"])
    rng = np.random.default_rng(0)
    emb = np.stack([np.eye(16)[g] * 2 + rng.normal(0, .15, 16) for g in group]).astype(np.float32)
    storage.write_bytes(storage.join(run.output_uri, "embeddings.npz"),
                        storage.npz_bytes({"uri": np.asarray([im.uri for im in images]), "emb": emb}))
    ids, xy = embedding_map.layout(run)
    right = {int(i) for i, (x, _) in zip(ids, xy) if x > 0}
    assert 0 < len(right) < n

    login(scientist)
    page.goto(f"/runs/{run.id}/")
    page.get_by_role("link", name="Embeddings map").click()
    expect(page.get_by_test_id("map-status")).to_contain_text(f"{n} images · layout: pca")
    expect(page.get_by_test_id("map-legend")).to_contain_text("v-neck")
    box = page.get_by_test_id("map").bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2 + 1, box["y"] + 2)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] - 2, box["y"] + box["height"] / 2, steps=5)
    page.mouse.move(box["x"] + box["width"] - 2, box["y"] + box["height"] - 2, steps=5)
    page.mouse.up()
    expect(page.get_by_test_id("sel-count")).to_have_text(str(len(right)))
    shown = {int(a.get_attribute("data-image")) for a in page.locator("#sel-grid a").all()}
    assert shown == right
    page.get_by_test_id("map-colour").select_option("predicted")
    shot(page, "embeddings-map")
    page.get_by_test_id("bulk-label").select_option(label="square")
    page.get_by_test_id("bulk-go").click()
    expect(page.get_by_test_id("bulk-result")).to_contain_text(f"Retagged {len(right) - sum(1 for im in images if im.id in right and given[images.index(im)] == 2)} to square")
    assert {a.image_id for a in Annotation.objects.filter(task=task, label=labels[2])} >= right
    moved = LabelEvent.objects.filter(task=task, to_label=labels[2], by=scientist).count()
    assert moved == sum(1 for i, im in enumerate(images) if im.id in right and given[i] != 2)
    # The map's retag goes through bulk_select.js like the grids': its Undo takes each back.
    page.get_by_test_id("bulk-result").get_by_test_id("undo").click()
    expect(page.get_by_test_id("bulk-result")).to_contain_text(f"Undone: {moved} back to the label each had")
    now = dict(Annotation.objects.filter(task=task).values_list("image_id", "label_id"))
    assert now == {im.id: labels[given[i]].id for i, im in enumerate(images)}
