"""Editing labels (add, rename, merge and take a merge back) and managing people
(deactivate, reset a password, when each last worked): the services, and the admin pages
in a real browser."""
from __future__ import annotations

import pytest
from playwright.sync_api import expect

from labeling.models import Annotation, EventSource, LabelEvent
from labeling.services import labels as label_svc
from labeling.services import users as user_svc
from labeling.services.retag import RetagConflict, retag_image
from tests.conftest import PASSWORD
from tests.factories import make_image, make_project


@pytest.fixture
def dresses(db):
    project, task, (v, rnd, sq) = make_project()
    images = [make_image(project, f"d{i}.jpg", task=task, label=[v, v, v, rnd, sq][i]) for i in range(5)]
    return project, task, (v, rnd, sq), images


def label_of(image, task):
    return Annotation.objects.get(image=image, task=task).label.name


def test_merge_retags_each_image_with_an_event_and_the_undo_keeps_later_retags(dresses, scientist, admin_user):
    project, task, (v, rnd, sq), images = dresses
    versions = {im.id: Annotation.objects.get(image=im, task=task).version for im in images}
    r = label_svc.merge_labels(source=v, target=rnd, by=admin_user)
    assert r.moved == 3 and [label_of(im, task) for im in images] == ["round"] * 4 + ["square"]
    events = LabelEvent.objects.filter(reference=r.reference)
    assert events.count() == 3 and {e.source for e in events} == {EventSource.RULE}
    assert {(e.from_label_id, e.to_label_id, e.by_id) for e in events} == {(v.id, rnd.id, admin_user.id)}
    # Every moved image's version went up: a retag made on what was seen before the merge is a 409.
    assert Annotation.objects.get(image=images[0], task=task).version == versions[images[0].id] + 1
    with pytest.raises(RetagConflict):
        retag_image(image=images[0], task=task, label=sq, by=scientist, expected_version=versions[images[0].id])
    # Someone retags one merged image to "square"; the undo leaves that one alone.
    now = Annotation.objects.get(image=images[1], task=task).version
    retag_image(image=images[1], task=task, label=sq, by=scientist, expected_version=now)
    assert label_svc.merges(task)[0] | {} == {**label_svc.merges(task)[0], "n": 3, "undone": False}
    back = label_svc.undo_merge(task=task, reference=r.reference, by=admin_user)
    assert (back.moved, back.skipped) == (2, 1)
    assert [label_of(im, task) for im in images] == ["v-neck", "square", "v-neck", "round", "square"]
    assert label_svc.merges(task)[0]["undone"] is True
    # The counts the pages show (kept by the database) followed the bulk moves.
    from labeling.services import counts

    assert counts.stored(project) == counts.counted(project)
    with pytest.raises(label_svc.LabelError, match="already taken back"):
        label_svc.undo_merge(task=task, reference=r.reference)


def test_label_edits_refuse_what_cannot_be(dresses):
    project, task, (v, rnd, sq), _ = dresses
    other_project, other_task, (x, *_) = make_project(name="Shoes", task="kind", labels=("boot", "flat"))
    with pytest.raises(label_svc.LabelError, match="already has a label 'round'"):
        label_svc.add_label(task, " ROUND ")
    with pytest.raises(label_svc.LabelError, match="needs a name"):
        label_svc.rename_label(v, "   ")
    with pytest.raises(label_svc.LabelError, match="into itself"):
        label_svc.merge_labels(source=v, target=v)
    with pytest.raises(label_svc.LabelError, match="same task"):
        label_svc.merge_labels(source=v, target=x)
    with pytest.raises(label_svc.LabelError, match="not a label merge"):
        label_svc.undo_merge(task=task, reference="import 3")
    assert label_svc.add_label(task, "boat").position == 4
    assert label_svc.rename_label(v, "V-neck").name == "V-neck"  # a new case of its own name is fine


def test_the_merge_form_chooses_no_labels_and_a_merge_needs_both(dresses, client, admin_user):
    """The form was preset to two real labels ("v-neck into round"): one click after the confirm
    merged them."""
    import re

    project, task, (v, rnd, sq), images = dresses
    client.force_login(admin_user)
    html = client.get(f"/p/{project.slug}/labels/").content.decode()
    form = re.search(r'<form[^>]*data-testid="merge-neckline".*?</form>', html, re.S).group(0)
    selects = re.findall(r"<select[^>]*>(.*?)</select>", form, re.S)
    assert len(selects) == 2
    for options in selects:
        assert re.findall(r"<option[^>]*selected[^>]*>([^<]*)<", options) == ["choose a label"]
        assert '<option value="" selected>choose a label</option>' in options
    assert form.count("required") == 2
    for post in ({"label": v.id}, {"into": rnd.id}, {"label": "", "into": ""}):
        r = client.post(f"/p/{project.slug}/labels/", {"task": task.id, "action": "merge", **post}, follow=True)
        assert "choose both labels" in r.content.decode() and "nothing was merged" in r.content.decode()
    assert [label_of(im, task) for im in images] == ["v-neck", "v-neck", "v-neck", "round", "square"]
    assert not LabelEvent.objects.filter(source=EventSource.RULE).exists()


def sign_in(client, user, password=PASSWORD) -> bool:
    """Through the login page (axes needs the request)."""
    return client.post("/accounts/login/", {"username": user.username, "password": password}).status_code == 302


def test_deactivate_and_password_reset_end_sessions_and_guard_the_last_admin(db, client, annotator, admin_user):
    assert sign_in(client, annotator)
    assert client.get("/").status_code == 200
    user_svc.set_active(annotator, False, by=admin_user)
    assert client.get("/").status_code == 302  # signed out at once
    assert not sign_in(client, annotator)
    user_svc.set_active(annotator, True, by=admin_user)
    with pytest.raises(user_svc.UserError, match="your own account"):
        user_svc.set_active(admin_user, False, by=admin_user)
    with pytest.raises(user_svc.UserError, match="last active admin"):
        user_svc.set_active(admin_user, False, by=annotator)
    with pytest.raises(user_svc.UserError):
        user_svc.reset_password(annotator, "1")  # the password validators say why
    assert sign_in(client, annotator)
    user_svc.reset_password(annotator, "a new long passphrase 42")
    assert client.get("/").status_code == 302
    assert sign_in(client, annotator, "a new long passphrase 42")


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_admin_adds_renames_merges_and_takes_back_labels_in_the_browser(page, login, admin_user, annotator):
    project, task, (v, rnd, sq) = make_project()
    images = [make_image(project, f"d{i}.jpg", task=task, label=[v, v, rnd][i]) for i in range(3)]
    login(admin_user)
    page.goto(f"/p/{project.slug}/")
    page.get_by_role("link", name="Labels", exact=True).click()
    page.get_by_label("New label of neckline").fill("boat")
    page.get_by_test_id("add-neckline").get_by_role("button", name="Add").click()
    expect(page.locator(".messages, .message, [role=status]").first).to_contain_text("Added the label 'boat'")
    expect(page.get_by_test_id("order-neckline").locator(".name")).to_have_text(["v-neck", "round", "square", "boat"])

    page.get_by_test_id("rename-square").locator("summary").click()
    page.get_by_label("New name of square").fill("square neck")
    page.get_by_test_id("rename-square").get_by_role("button", name="Save").click()
    expect(page.get_by_test_id("order-neckline").locator(".name")).to_have_text(["v-neck", "round", "square neck", "boat"])

    merge = page.get_by_test_id("merge-neckline")
    expect(merge.get_by_label("Label to merge", exact=True)).to_have_value("")
    expect(merge.get_by_label("Label to merge into")).to_have_value("")
    merge.get_by_role("button", name="Merge").click()  # nothing chosen: the browser stops it, no confirm
    assert [label_of(im, task) for im in images] == ["v-neck", "v-neck", "round"]
    merge.get_by_label("Label to merge", exact=True).select_option(label="v-neck")
    merge.get_by_label("Label to merge into").select_option(label="round")
    page.once("dialog", lambda d: d.accept())
    merge.get_by_role("button", name="Merge").click()
    expect(page.locator("body")).to_contain_text("Merged 'v-neck' into 'round': 2 images retagged")
    assert [label_of(im, task) for im in images] == ["round", "round", "round"]
    expect(page.get_by_test_id("merges-neckline")).to_contain_text("v-neck -> round")
    page.get_by_test_id("merges-neckline").get_by_role("button", name="Take back").click()
    expect(page.locator("body")).to_contain_text("Took the merge back: 2 images back on their label")
    expect(page.get_by_test_id("merges-neckline")).to_contain_text("taken back")
    assert [label_of(im, task) for im in images] == ["v-neck", "v-neck", "round"]
    # The image page's history shows the merge and its undo, each as an event.
    page.goto(f"/images/{images[0].id}/")
    expect(page.locator("body")).to_contain_text("label merge")


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_admin_deactivates_resets_and_sees_when_people_last_worked(page, login, admin_user, annotator):
    project, task, (v, rnd, _) = make_project()
    im = make_image(project, "d.jpg", task=task, label=v)
    retag_image(image=im, task=task, label=rnd, by=annotator, expected_version=1)
    login(admin_user)
    page.goto("/manage/users/")
    expect(page.get_by_test_id(f"worked-{annotator.username}")).not_to_have_text("never")
    expect(page.get_by_test_id(f"worked-{admin_user.username}")).to_have_text("never")
    row = page.locator(f'tr[data-user="{annotator.username}"]')
    row.get_by_role("button", name="Deactivate").click()
    expect(page.locator("body")).to_contain_text(f"Deactivated {annotator.username}")
    expect(page.locator(f'tr[data-user="{annotator.username}"]')).to_contain_text("(inactive)")
    expect(page.locator(f'tr[data-user="{annotator.username}"]')).to_contain_text("annotator")  # the role it holds
    page.locator(f'tr[data-user="{annotator.username}"]').get_by_role("button", name="Reactivate").click()
    row = page.locator(f'tr[data-user="{annotator.username}"]')
    row.get_by_label(f"New password for {annotator.username}").fill("short")
    row.get_by_role("button", name="Reset password").click()
    expect(page.locator("body")).to_contain_text(f"{annotator.username}: This password is too short")
    row = page.locator(f'tr[data-user="{annotator.username}"]')
    row.get_by_label(f"New password for {annotator.username}").fill("a new long passphrase 42")
    row.get_by_role("button", name="Reset password").click()
    expect(page.locator("body")).to_contain_text(f"Set a new password for {annotator.username}")
    annotator.refresh_from_db()
    assert annotator.is_active and annotator.check_password("a new long passphrase 42")
