"""The suspects queue in a real browser, keyboard only: accept (a), keep (k), a number key, skip
(s), and a 409 when someone else changed the label underneath (nothing overwritten; a second
press then decides on the new label). Also the cluster view's group retag and exclusions,
and the similar-images strip on the image page.

Set RETAG_SCREENSHOT_DIR to keep screenshots of the pages the test walks through.
"""
import os
import re
from pathlib import Path

import numpy as np
import pytest
from django.utils import timezone
from playwright.sync_api import expect

from labeling.models import Annotation, LabelEvent, Suspect, SuspectRun, TrainingExclusion
from labeling.services.retag import retag_image
from tests.test_suspects import make_world, scores_for, store

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def shot(page, name):
    folder = os.environ.get("RETAG_SCREENSHOT_DIR")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"suspects-{name}.png"), full_page=True)


@pytest.fixture
def world(tmp_path):
    project, task, labels, images, sr = make_world(folder=tmp_path / "pets")
    SuspectRun.objects.filter(pk=sr.pk).update(state=SuspectRun.State.DONE, finished_at=timezone.now())
    sr.refresh_from_db()
    given, scores = scores_for(12, flagged=[0, 1, 2, 3, 4, 5])
    store(sr, images, given, scores)
    return project, task, labels, images, sr


def current_image(page) -> int:
    return int(page.get_by_test_id("suspect").get_attribute("data-image"))


def test_queue_with_the_keyboard(world, login, page, annotator, make_user):
    project, task, labels, images, sr = world
    login(annotator)
    page.goto(f"/suspects/{sr.id}/queue/")
    expect(page.get_by_test_id("remaining")).to_have_text("6")

    # a: accept the suggestion (image 0: cat, suggested dog).
    assert current_image(page) == images[0].id
    expect(page.get_by_test_id("given")).to_have_text("cat")
    expect(page.get_by_test_id("suggested")).to_have_text("dog")
    expect(page.get_by_test_id("typical-given").locator("img")).to_have_count(3)
    shot(page, "queue")
    page.keyboard.press("a")
    page.wait_for_function(f"document.querySelector('[data-testid=suspect]').dataset.image != '{images[0].id}'")
    assert Annotation.objects.get(image=images[0], task=task).label == labels["dog"]
    event = LabelEvent.objects.filter(image=images[0]).first()
    assert event.by == annotator and event.to_label == labels["dog"]

    # k: keep the given label (image 1: dog) -> verified, no event.
    assert current_image(page) == images[1].id
    expect(page.get_by_test_id("throughput")).to_contain_text("1 done")
    page.keyboard.press("k")
    page.wait_for_function(f"document.querySelector('[data-testid=suspect]').dataset.image != '{images[1].id}'")
    ann = Annotation.objects.get(image=images[1], task=task)
    assert ann.verified and ann.label == labels["dog"] and ann.version == 1
    assert Suspect.objects.get(suspect_run=sr, image=images[1]).status == "kept"

    # 1: pick the first label (image 2: fox -> cat).
    assert current_image(page) == images[2].id
    page.keyboard.press("1")
    page.wait_for_function(f"document.querySelector('[data-testid=suspect]').dataset.image != '{images[2].id}'")
    assert Annotation.objects.get(image=images[2], task=task).label == labels["cat"]

    # s: skip (image 3 keeps its label, its suspect is skipped).
    assert current_image(page) == images[3].id
    page.keyboard.press("s")
    page.wait_for_function(f"document.querySelector('[data-testid=suspect]').dataset.image != '{images[3].id}'")
    assert Suspect.objects.get(suspect_run=sr, image=images[3]).status == "skipped"
    assert Annotation.objects.get(image=images[3], task=task).version == 1

    # Someone else changes image 4 (dog) to cat while it is shown: a is refused with a 409.
    assert current_image(page) == images[4].id
    other = make_user("annotator")
    retag_image(image=images[4], task=task, label=labels["cat"], by=other, expected_version=1)
    page.keyboard.press("a")
    expect(page.locator("#notice")).to_contain_text("Someone else changed this label")
    expect(page.locator("#notice")).to_have_class(re.compile("notice-conflict"))
    expect(page.get_by_test_id("given")).to_have_text("cat")
    assert Annotation.objects.get(image=images[4], task=task).label == labels["cat"]  # not overwritten
    assert Annotation.objects.get(image=images[4], task=task).updated_by == other
    shot(page, "conflict")
    # Pressing again now decides on the label as it is: keep cat, confirmed.
    page.keyboard.press("k")
    page.wait_for_function(f"document.querySelector('[data-testid=suspect]').dataset.image != '{images[4].id}'")
    assert Annotation.objects.get(image=images[4], task=task).verified
    expect(page.get_by_test_id("throughput")).to_contain_text("5 done")
    shot(page, "queue-after")


def test_two_annotators_see_different_suspects(world, browser, live_server, login, page, make_user):
    project, task, labels, images, sr = world
    a = make_user("annotator")
    login(a)
    page.goto(f"/suspects/{sr.id}/queue/")
    first = current_image(page)
    from django.test import Client

    b = Client()
    b.force_login(make_user("annotator"))
    html = b.get(f"/suspects/{sr.id}/queue/").content.decode()
    second = int(re.search(r'data-image="(\d+)"', html).group(1))
    assert first != second


def test_clusters_group_retag_and_exclusions(world, login, page, scientist):
    project, task, labels, images, sr = world
    login(scientist)
    page.goto(f"/suspects/{sr.id}/clusters/?label={labels['cat'].id}")
    expect(page.get_by_test_id("core").locator("img")).to_have_count(3)
    group = page.get_by_test_id("outlier-group")
    expect(group).to_have_count(1)
    group.locator("select").select_option(str(labels["fox"].id))  # options read "3 · fox": the key, then the name
    shot(page, "clusters")
    group.get_by_test_id("retag-group").click()
    expect(page.locator(".flash")).to_contain_text("1 image(s) set to fox")
    assert Annotation.objects.get(image=images[9], task=task).label == labels["fox"]
    page.get_by_test_id("exclude-all").click()
    expect(page.get_by_test_id("excluded-total")).to_have_text("3")
    assert TrainingExclusion.objects.filter(task=task, active=True).count() == 3
    page.get_by_test_id("restore-all").click()
    expect(page.get_by_test_id("excluded-total")).to_have_text("0")


def test_similar_images_on_the_image_page(world, login, page, annotator, monkeypatch):
    from labeling.services import similar

    project, task, labels, images, sr = world
    SuspectRun.objects.filter(pk=sr.pk).update(index_uri="file:///nowhere.npz")

    class FakeIndex:
        def query(self, key, k):
            return np.array([images[3].id, images[6].id]), np.array([0.99, 0.95])

    monkeypatch.setattr(similar, "load_index", lambda uri: FakeIndex())
    login(annotator)
    page.goto(f"/images/{images[0].id}/")
    strip = page.get_by_test_id("similar")
    expect(strip.locator("img")).to_have_count(2)
    expect(strip).to_contain_text("cat · 0.99")
    shot(page, "similar")
