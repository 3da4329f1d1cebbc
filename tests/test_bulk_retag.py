"""Bulk retag from the grids and the undo of a retag (issue 15, items 2 and 8).

The undo rule (``services.retag.undo_retags``): an image goes back to the label it had
before the retag that returned the version sent, as an event of its own (reference
``undo``); an image someone changed in between is a conflict, left as it is. The browser
tests select in the project grid (shift-click range) and the false-negative grid
(select all), retag in one action, see a conflict per image, and undo.
"""
from __future__ import annotations

import pytest

from labeling.models import Annotation, LabelEvent
from labeling.services.retag import UNDO_REFERENCE, RetagError, retag_image, retag_many, undo_retags
from tests.factories import make_image, make_project


@pytest.fixture
def world(db):
    project, task, labels = make_project()
    # Labels in turn: v-neck, round, square, v-neck...
    images = [make_image(project, f"img{i:02d}.png", task=task, label=labels[i % 3]) for i in range(6)]
    return project, task, labels, images


def _now(image, task):
    return Annotation.objects.get(image=image, task=task)


def test_undo_of_a_bulk_retag_puts_each_image_back_to_its_own_label(world, annotator):
    project, task, labels, images = world
    before = {im.id: _now(im, task).label_id for im in images}
    done = retag_many(task=task, label=labels[1], by=annotator,
                      items=[(im.id, _now(im, task).version) for im in images])
    assert len(done.changed) == 4 and len(done.unchanged) == 2  # two were round already
    undone = undo_retags(task=task, by=annotator, items=[(c["image"], c["version"]) for c in done.changed])
    assert {c["image"] for c in undone.changed} == {c["image"] for c in done.changed}
    assert not undone.conflicts and not undone.missing
    for im in images:
        assert _now(im, task).label_id == before[im.id]
    undo_events = LabelEvent.objects.filter(task=task, reference=UNDO_REFERENCE)
    assert undo_events.count() == 4
    assert all(e.from_label_id == labels[1].id and e.by == annotator for e in undo_events)


def test_undo_after_someone_changed_the_image_is_a_conflict_and_overwrites_nothing(world, annotator, scientist):
    project, task, labels, images = world
    im = images[0]
    r = retag_image(image=im, task=task, label=labels[2], by=annotator, expected_version=_now(im, task).version)
    retag_image(image=im, task=task, label=labels[1], by=scientist, expected_version=r.annotation.version)
    events = LabelEvent.objects.filter(image=im).count()
    undone = undo_retags(task=task, by=annotator, items=[(im.id, r.annotation.version)])
    assert undone.conflicts == [{"image": im.id, "seen": r.annotation.version,
                                 "version": r.annotation.version + 1, "label": labels[1].id}]
    assert _now(im, task).label_id == labels[1].id
    assert LabelEvent.objects.filter(image=im).count() == events


def test_undo_of_a_first_label_removes_it(db, annotator):
    project, task, labels = make_project()
    im = make_image(project, "new.png")
    r = retag_image(image=im, task=task, label=labels[0], by=annotator, expected_version=0)
    undone = undo_retags(task=task, by=annotator, items=[(im.id, r.annotation.version)])
    assert undone.changed == [{"image": im.id, "version": 2, "label": None}]


def test_undo_refuses_a_version_no_retag_returns(world, annotator):
    project, task, labels, images = world
    with pytest.raises(RetagError, match=">= 1"):
        undo_retags(task=task, by=annotator, items=[(images[0].id, 0)])


def test_the_undo_api_answers_the_conflict_per_image_and_the_rest_go_back(world, annotator, scientist, api_client_for):
    project, task, labels, images = world
    client = api_client_for(annotator)
    r = client.post("/api/retag/bulk/", {"task": task.id, "label": labels[2].id, "items": [
        {"image": im.id, "expected_version": _now(im, task).version} for im in images[:2]]}, format="json")
    assert r.status_code == 200, r.content
    changed = r.json()["changed"]
    assert [c["label"] for c in changed] == [labels[2].id] * 2
    # Someone changes the second one before the undo.
    retag_image(image=images[1], task=task, label=labels[0], by=scientist, expected_version=changed[1]["version"])
    r = client.post("/api/retag/undo/", {"task": task.id, "items": [
        {"image": c["image"], "version": c["version"]} for c in changed] + [{"image": 999999, "version": 1}]},
        format="json")
    assert r.status_code == 200, r.content
    body = r.json()
    assert body["changed"] == [{"image": images[0].id, "version": 3, "label": labels[0].id}]
    assert [c["image"] for c in body["conflicts"]] == [images[1].id]
    assert body["missing"] == [999999]
    assert _now(images[1], task).label_id == labels[0].id


@pytest.mark.parametrize("body, says", [
    ({"task": 1, "items": []}, "items"),
    ({"items": [{"image": 1, "version": 1}]}, "task"),
    ({"task": "x", "items": [{"image": 1, "version": 1}]}, "task"),
    ({"task": 1, "items": [{"image": 1, "version": 0}]}, "items"),
    ({"task": 1, "items": [{"image": 1, "version": 1}] * 1001}, "items"),
    ([1, 2], "non_field_errors"),
])
def test_undo_bodies_that_are_wrong_are_400_and_say_why(world, annotator, api_client_for, body, says):
    if isinstance(body, dict) and body.get("task") == 1:
        body = dict(body, task=world[1].id)
    r = api_client_for(annotator).post("/api/retag/undo/", body, format="json")
    assert r.status_code == 400 and says in r.json(), r.content


def test_an_anonymous_undo_is_refused(world, client):
    r = client.post("/api/retag/undo/", {"task": world[1].id, "items": [{"image": world[3][0].id, "version": 1}]},
                    content_type="application/json")
    assert r.status_code in (401, 403)
    assert not LabelEvent.objects.filter(reference=UNDO_REFERENCE).exists()
