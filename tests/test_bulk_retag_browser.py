"""Bulk retag and undo in a real browser (issue 15, items 2 and 8): a shift-click range in
the project grid retagged in one action with one conflict shown on its card; select all
in the false-negative grid, a label's key retags them; the undo of a bulk retag and of a
single retag (grid and image page), each an event of its own in the history.

Set RETAG_SCREENSHOT_DIR to keep the screenshots (docs/screenshots/ holds the README's).
"""
import re

import pytest
from playwright.sync_api import expect

from labeling.models import Annotation, Image, LabelEvent
from labeling.services.labels import label_key, ordered_labels
from labeling.services.retag import UNDO_REFERENCE, retag_image
from tests.test_browser import demo, open_category_grid, shot  # noqa: F401 - the fixture
from tests.test_quality import two_runs  # noqa: F401 - the fixture

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _ann(image_id, task):
    return Annotation.objects.get(image_id=image_id, task=task)


def test_shift_click_range_bulk_retag_with_a_conflict_then_undo(page, login, annotator, scientist, demo):
    login(annotator)
    task = open_category_grid(page, demo)
    cells = page.locator("li.cell")
    expect(page.get_by_test_id("bulk-help")).to_contain_text("a label's key retags all of them")
    cells.nth(1).locator("input.pick").click()
    cells.nth(4).locator("input.pick").click(modifiers=["Shift"])
    expect(page.get_by_test_id("selected-count")).to_have_text("4 selected")
    expect(page.locator("li.cell.picked")).to_have_count(4)
    ids = [int(cells.nth(i).get_attribute("data-image")) for i in range(1, 5)]
    before = {i: _ann(i, task).label_id for i in ids}
    labels = ordered_labels(task)
    target = next(lb for lb in labels if lb.id not in before.values())
    # Someone else retags the second selected image after the page was rendered.
    other = next(lb for lb in labels if lb.id not in (before[ids[1]], target.id))
    retag_image(image=Image.objects.get(id=ids[1]), task=task, label=other, by=scientist,
                expected_version=_ann(ids[1], task).version)

    page.get_by_test_id("bulk-label").select_option(str(target.id))
    page.get_by_test_id("bulk-go").click()
    notice = page.get_by_test_id("bulk-notice")
    expect(notice).to_contain_text(f"Retagged 3 to {target.name}")
    expect(notice).to_contain_text("1 changed by someone since: not retagged")
    conflict = page.locator(f"li.cell[data-image='{ids[1]}']")
    expect(conflict).to_have_class(re.compile(r"\bconflict\b"))
    expect(conflict.locator(".cell-label")).to_have_text(other.name)
    expect(page.get_by_test_id("selected-count")).to_have_text("1 selected")  # the conflict stays selected
    for i in ids:
        assert _ann(i, task).label_id == (other.id if i == ids[1] else target.id)
    assert LabelEvent.objects.filter(task=task, to_label=target, by=annotator).count() == 3
    shot(page, "bulk-retag-grid")

    page.get_by_test_id("undo").click()
    expect(notice).to_contain_text("Undone: 3 back to the label each had")
    for i in ids:
        assert _ann(i, task).label_id == (other.id if i == ids[1] else before[i])
    undo = LabelEvent.objects.filter(task=task, reference=UNDO_REFERENCE)
    assert sorted(undo.values_list("image_id", flat=True)) == sorted(set(ids) - {ids[1]})
    expect(page.locator(f"li.cell[data-image='{ids[0]}'] .cell-label")).to_have_text(
        next(lb.name for lb in labels if lb.id == before[ids[0]]))

    page.keyboard.press("Escape")
    expect(page.get_by_test_id("selected-count")).to_have_text("none selected")


def test_select_all_in_the_fn_grid_a_key_retags_them_and_undo_takes_each_back(page, login, scientist, two_runs):
    run, task, labels = two_runs["run2"], two_runs["task"], two_runs["labels"]
    login(scientist)
    page.goto(f"/runs/{run.id}/images/?kind=fn&label={labels[0].id}&split=test")
    cells = page.locator(".pcell")
    n = cells.count()
    assert n >= 1
    ids = [int(cells.nth(i).get_attribute("data-image")) for i in range(n)]
    before = {i: _ann(i, task).label_id for i in ids}
    page.get_by_test_id("select-all").click()
    expect(page.get_by_test_id("selected-count")).to_have_text(f"{n} selected")
    page.keyboard.press(label_key(2))  # while a selection exists the key retags all of it
    notice = page.get_by_test_id("notice")
    changed = [i for i in ids if before[i] != labels[2].id]
    expect(notice).to_contain_text(f"Retagged {len(changed)} to {labels[2].name}")
    assert all(_ann(i, task).label_id == labels[2].id for i in ids)
    expect(cells.first.locator("[data-role=now]")).to_have_text(labels[2].name)
    expect(page.get_by_test_id("selected-count")).to_have_text("none selected")

    page.keyboard.press("Control+z")
    expect(notice).to_contain_text(f"Undone: {len(changed)} back")
    assert {i: _ann(i, task).label_id for i in ids} == before
    assert LabelEvent.objects.filter(task=task, reference=UNDO_REFERENCE, by=scientist).count() == len(changed)

    # Space selects the focused card; a click on a label of the panel retags the selection too.
    page.keyboard.press(" ")
    expect(page.get_by_test_id("selected-count")).to_have_text("1 selected")
    expect(cells.first).to_have_class(re.compile(r"\bpicked\b"))
    other = next(lb for lb in labels if lb.id != before[ids[0]])
    page.locator(f"#task-labels li[data-label='{other.id}']").click()
    expect(notice).to_contain_text(f"Retagged 1 to {other.name}")
    assert _ann(ids[0], task).label_id == other.id
    page.get_by_test_id("undo").click()
    expect(notice).to_contain_text("Undone:")
    assert _ann(ids[0], task).label_id == before[ids[0]]
    # Escape clears a selection; then a key retags the focused card alone.
    page.keyboard.press(" ")
    page.keyboard.press("Escape")
    expect(page.get_by_test_id("selected-count")).to_have_text("none selected")

    # A single retag of the focused card, and its undo.
    first = ids[0]
    target = next(i for i, lb in enumerate(labels) if lb.id != before[first])
    page.keyboard.press(label_key(target))
    expect(notice).to_contain_text(f"is now {labels[target].name}")
    page.get_by_test_id("undo").click()
    expect(notice).to_contain_text("Undone: 1 back to the label it had")
    assert _ann(first, task).label_id == before[first]
    assert list(LabelEvent.objects.filter(image_id=first, task=task).order_by("-id")
                .values_list("reference", flat=True)[:2]) == [UNDO_REFERENCE, ""]


def test_undo_on_the_image_page_goes_into_the_history(page, login, annotator, two_runs):
    task, labels, image = two_runs["task"], two_runs["labels"], two_runs["test"][0]
    login(annotator)
    page.goto(f"/images/{image.id}/?task={task.id}")
    was = _ann(image.id, task).label
    target = next(i for i, lb in enumerate(labels) if lb != was)
    page.keyboard.press(label_key(target))
    notice = page.locator("#notice")
    expect(notice).to_contain_text(f"is now {labels[target].name}")
    rows = page.locator("#history-rows tr")
    events = rows.count()
    page.get_by_test_id("undo").click()
    expect(notice).to_contain_text(f"Undone: {task.name} is back to {was.name}")
    expect(rows).to_have_count(events + 1)
    expect(rows.first).to_contain_text(UNDO_REFERENCE)
    assert _ann(image.id, task).label == was
