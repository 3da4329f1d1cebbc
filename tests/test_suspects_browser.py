"""The suspects queue in a real browser, keyboard only: accept (a), keep (k), a number key, skip
(s), and a 409 when someone else changed the label underneath (nothing overwritten; a second
press then decides on the new label). Also the cluster view's group retag and exclusions,
and the similar-images strip on the image page.

Set RETAG_SCREENSHOT_DIR to keep screenshots of the pages the test walks through.
"""
import re

import numpy as np
import pytest
from django.utils import timezone
from playwright.sync_api import expect

from tests.conftest import screenshot

from labeling.models import Annotation, LabelEvent, Suspect, SuspectRun, TrainingExclusion
from labeling.services.retag import retag_image
from tests.test_suspects import make_world, scores_for, store

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def shot(page, name):
    screenshot(page, f"suspects-{name}")


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

    # s: skip (image 3 keeps its label, its suspect stays open: see test_a_skip_is_not_done).
    assert current_image(page) == images[3].id
    page.keyboard.press("s")
    page.wait_for_function(f"document.querySelector('[data-testid=suspect]').dataset.image != '{images[3].id}'")
    assert Suspect.objects.get(suspect_run=sr, image=images[3]).status == "open"
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
    expect(page.get_by_test_id("throughput")).to_contain_text("4 done")
    shot(page, "queue-after")


def test_a_skip_is_not_done_and_does_not_lower_open(world, login, page, annotator):
    """#15: "in the queue a skip counts as done and lowers 'open'". A skip is not a decision:
    the suspect stays open (for the others), the count and the annotator's tally do not move,
    and it comes back to the one who skipped it once nothing else is left."""
    project, task, labels, images, sr = world
    login(annotator)
    page.goto(f"/suspects/{sr.id}/queue/")
    expect(page.get_by_test_id("remaining")).to_have_text("6")
    assert current_image(page) == images[0].id
    page.keyboard.press("s")
    page.wait_for_function(f"document.querySelector('[data-testid=suspect]').dataset.image != '{images[0].id}'")
    expect(page.get_by_test_id("remaining")).to_have_text("6")
    expect(page.get_by_test_id("throughput")).to_contain_text("0 done")
    skipped = Suspect.objects.get(suspect_run=sr, image=images[0])
    assert (skipped.status, skipped.skipped_by, skipped.resolved_by) == ("open", annotator, None)
    # A decision does count, and lowers open.
    assert current_image(page) == images[1].id
    page.keyboard.press("k")
    page.wait_for_function(f"document.querySelector('[data-testid=suspect]').dataset.image != '{images[1].id}'")
    expect(page.get_by_test_id("remaining")).to_have_text("5")
    expect(page.get_by_test_id("throughput")).to_contain_text("1 done")
    page.goto(f"/suspects/{sr.id}/")
    expect(page.get_by_test_id("open-count")).to_have_text("5")
    expect(page.get_by_test_id("queue-summary")).to_contain_text("1 of the open skipped once")
    # The skipped one comes back last: after the four others are decided.
    page.goto(f"/suspects/{sr.id}/queue/")
    for _ in range(4):
        shown = current_image(page)
        assert shown != images[0].id
        page.keyboard.press("k")
        page.wait_for_function(f"document.querySelector('[data-testid=suspect]').dataset.image != '{shown}'")
    assert current_image(page) == images[0].id
    expect(page.get_by_test_id("remaining")).to_have_text("1")


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


def test_put_back_a_class_returns_every_excluded_outlier(tmp_path, login, page, scientist):
    """#15: "exclude 42 outliers in the cluster view, retag one, 'put back' the class: 41 return".
    Cat's outliers are images 3, 6 and 9; image 6 was already left out for another class (an
    earlier run, when it was a dog). Exclude cat's outliers, retag image 3 to dog, put cat back:
    all three return, and the button said how many would."""
    from labeling.models import TrainingExclusion as TE

    project, task, labels, images, sr = make_world(folder=tmp_path / "pets")
    SuspectRun.objects.filter(pk=sr.pk).update(state=SuspectRun.State.DONE, finished_at=timezone.now())
    sr.refresh_from_db()
    given, scores = scores_for(12, flagged=[0, 1, 2])
    outlier = scores["cluster_outlier"] | ((given == 0) & (np.arange(12) > 0))
    scores.update(cluster_outlier=outlier, cluster_id=np.where(outlier, 1, 0), is_core=~outlier)
    store(sr, images, given, scores)
    TE.objects.create(task=task, image=images[6], label=labels["dog"], reason="an earlier run")
    login(scientist)
    page.goto(f"/suspects/{sr.id}/clusters/?label={labels['cat'].id}")
    expect(page.get_by_test_id("outliers-shown")).to_contain_text("3 images")
    page.get_by_test_id("exclude-class").click()
    expect(page.get_by_test_id("restore-class")).to_have_text("Put cat back (3)")
    assert set(TE.objects.filter(task=task, active=True, label=labels["cat"]).values_list("image_id", flat=True)) \
        == {images[3].id, images[6].id, images[9].id}
    group = page.get_by_test_id("outlier-group")
    for i in (6, 9):
        group.locator(f"input[type=checkbox][value='{images[i].id}']").uncheck()
    group.locator("select").select_option(str(labels["dog"].id))  # options read "<key> · dog"
    group.get_by_test_id("retag-group").click()
    expect(page.locator(".flash")).to_contain_text("1 image(s) set to dog")
    assert Annotation.objects.get(image=images[3], task=task).label == labels["dog"]
    expect(page.get_by_test_id("restore-class")).to_have_text("Put cat back (3)")
    shot(page, "put-back")
    page.get_by_test_id("restore-class").click()
    expect(page.locator(".flash")).to_contain_text("3 image(s) are back in training")
    expect(page.get_by_test_id("excluded-total")).to_have_text("0")
    assert not TE.objects.filter(task=task, active=True).exists()


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


def test_undo_takes_back_the_last_decision_and_refuses_over_a_later_change(world, login, page, annotator,
                                                                          scientist):
    project, task, labels, images, sr = world
    login(annotator)
    page.goto(f"/suspects/{sr.id}/queue/")
    expect(page.get_by_test_id("remaining")).to_have_text("6")
    assert current_image(page) == images[0].id
    page.keyboard.press("a")  # accept: cat -> dog
    page.wait_for_function(f"document.querySelector('[data-testid=suspect]').dataset.image != '{images[0].id}'")
    expect(page.get_by_test_id("last-decision")).to_contain_text("retagged to dog")
    expect(page.get_by_test_id("remaining")).to_have_text("5")

    # Undo (Ctrl+Z): the label goes back as an event of its own, the suspect is open again and
    # the queue shows it to this person next.
    page.keyboard.press("Control+z")
    page.wait_for_function(f"document.querySelector('[data-testid=suspect]').dataset.image == '{images[0].id}'")
    expect(page.get_by_test_id("remaining")).to_have_text("6")
    assert Annotation.objects.get(image=images[0], task=task).label == labels["cat"]
    undo = LabelEvent.objects.filter(image=images[0]).first()
    assert (undo.from_label, undo.to_label, undo.by, undo.reference) == (labels["dog"], labels["cat"], annotator, "undo")
    assert Suspect.objects.get(suspect_run=sr, image=images[0]).status == Suspect.Status.OPEN

    # Decide again; someone else changes the label after; Undo then writes nothing and says why.
    page.keyboard.press("a")
    page.wait_for_function(f"document.querySelector('[data-testid=suspect]').dataset.image != '{images[0].id}'")
    ann = Annotation.objects.get(image=images[0], task=task)
    retag_image(image=images[0], task=task, label=labels["cat"], by=scientist, expected_version=ann.version)
    page.get_by_test_id("undo-decision").click()
    expect(page.get_by_test_id("undo-says")).to_contain_text("the label changed after your decision")
    assert Annotation.objects.get(image=images[0], task=task).label == labels["cat"]
    assert Suspect.objects.get(suspect_run=sr, image=images[0]).status == Suspect.Status.RETAGGED
