"""What a newcomer's walk of `make run` found, as the user now sees it: Ctrl+Z right after a
keyboard bulk retag in the project grid (focus still on a ticked box) undoes it, while in the
search box it is the field's own undo; the sidebar's label counts follow the bulk retag and
its undo; a selection holding test images warns that the retag changes the test set; the
"Find suspects" estimate follows K and epochs as they are typed; the run progress says what
its share counts and in which phase the run is; the users page counts only retags.
"""
import re

import pytest
from playwright.sync_api import expect

from labeling.models import Annotation, EventSource, Image, LabelEvent, TrainingRun
from labeling.services.labels import label_key, ordered_labels
from tests.factories import make_image, make_project
from tests.test_browser import demo, open_category_grid  # noqa: F401 - the fixture
from tests.test_quality import two_runs  # noqa: F401 - the fixture

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def sidebar_counts(page, labels):
    side = page.get_by_test_id("label-filter")
    return {lb.id: int(side.locator(f"[data-count-of='{lb.id}'] .count").inner_text().replace(",", "")) for lb in labels}


def test_keyboard_bulk_retag_then_ctrl_z_undoes_it_and_the_sidebar_counts_follow(page, login, annotator, demo):
    login(annotator)
    task = open_category_grid(page, demo)
    labels = ordered_labels(task)
    cells = page.locator("li.cell")
    before = sidebar_counts(page, labels)
    cells.nth(1).locator("input.pick").click()
    cells.nth(4).locator("input.pick").click(modifiers=["Shift"])
    expect(page.get_by_test_id("selected-count")).to_have_text("4 selected")
    ids = [int(cells.nth(i).get_attribute("data-image")) for i in range(1, 5)]
    was = {i: Annotation.objects.get(image_id=i, task=task).label_id for i in ids}
    target = next(k for k, lb in enumerate(labels) if lb.id not in was.values())
    assert page.evaluate("document.activeElement.matches('input.pick')")  # the focus is on the ticked box

    page.keyboard.press(label_key(target))
    notice = page.get_by_test_id("bulk-notice")
    expect(notice).to_contain_text(f"Retagged 4 to {labels[target].name}")
    after = dict(before)
    for i in ids:
        after[was[i]] -= 1
    after[labels[target].id] += 4
    side = page.get_by_test_id("label-filter")
    for lb in labels:  # without a reload
        expect(side.locator(f"[data-count-of='{lb.id}'] .count")).to_have_text(f"{after[lb.id]:,}")

    # In the search box Ctrl+Z is the field's own undo: the retag stays.
    search = page.get_by_test_id("grid-search")
    search.click()
    search.type("abc")
    page.keyboard.press("Control+z")
    page.wait_for_timeout(300)
    expect(notice).not_to_contain_text("Undone")
    assert all(Annotation.objects.get(image_id=i, task=task).label_id == labels[target].id for i in ids)

    # Back on a selection box (where the keyboard retag left the focus) Ctrl+Z undoes it.
    cells.nth(4).locator("input.pick").focus()
    page.keyboard.press("Control+z")
    expect(notice).to_contain_text("Undone: 4 back to the label each had")
    assert {i: Annotation.objects.get(image_id=i, task=task).label_id for i in ids} == was
    for lb in labels:
        expect(side.locator(f"[data-count-of='{lb.id}'] .count")).to_have_text(f"{before[lb.id]:,}")


def test_a_selection_with_test_images_warns_that_the_retag_changes_the_test_set(page, login, annotator, demo):
    login(annotator)
    task = open_category_grid(page, demo)
    cells = page.locator("li.cell")
    splits = [cells.nth(i).get_attribute("data-split") for i in range(cells.count())]
    train, test = splits.index("train"), splits.index("test")
    warning = page.get_by_test_id("test-split-notice")
    expect(warning).to_be_hidden()

    cells.nth(train).locator("input.pick").click()
    expect(page.get_by_test_id("selected-count")).to_have_text("1 selected")
    expect(warning).to_be_hidden()  # train images only: no test set changes
    cells.nth(test).locator("input.pick").click()
    expect(warning).to_be_visible()
    expect(warning).to_contain_text("1 of the 2 selected images is in the test split")
    expect(warning).to_contain_text("changes the test set")
    page.keyboard.press("Escape")
    expect(warning).to_be_hidden()

    page.goto(f"/p/{demo.slug}/?task={task.id}&split=test")
    page.get_by_test_id("select-all").click()
    n = page.locator("li.cell").count()
    expect(warning).to_contain_text(f"All {n} selected images are in the test split")


def test_the_suspects_estimate_follows_k_and_epochs(page, login, scientist, two_runs):
    run = two_runs["run2"]
    TrainingRun.objects.filter(pk=run.pk).update(timings={"execute_s": 120.0, "train_s": 100.0},
                                                 config={**(run.config or {}), "epochs": 3})
    login(scientist)
    page.goto(f"/runs/{run.id}/suspects/start/")
    estimate = page.get_by_test_id("estimate")
    expect(estimate).to_contain_text("4 folds of about")
    expect(estimate).to_contain_text("3 epochs each")
    first = estimate.inner_text()
    page.fill("#k", "2")
    page.fill("#fold_epochs", "1")
    expect(estimate).to_contain_text("2 folds of about")
    expect(estimate).to_contain_text("1 epoch each")
    assert estimate.inner_text() != first
    page.fill("#k", "1")  # a value the start would refuse: no figure for it
    expect(estimate).to_contain_text("No estimate: k (folds) must be between 2 and 20")


def test_run_progress_says_what_its_share_counts_and_the_phase(page, login, scientist, two_runs):
    run = two_runs["run2"]
    TrainingRun.objects.filter(pk=run.pk).update(
        state=TrainingRun.State.RUNNING, finished_at=None, config={**(run.config or {}), "epochs": 3},
        n_train=1000, n_test=200,
        progress={"phase": "train", "epoch": 2, "epochs": 3, "step": 13, "steps": 46, "t": 60})
    login(scientist)
    page.goto(f"/runs/{run.id}/progress/")
    expect(page.get_by_test_id("run-share")).to_have_text("37 %")
    expect(page.get_by_test_id("run-phase")).to_have_text("training · epoch 2 of 3 (43 % of the training)")
    covers = page.get_by_test_id("run-covers")
    expect(covers).to_contain_text("of the whole run: 3 epochs of training (83 % of the work)")
    expect(covers).to_contain_text("a validation pass after each and a final prediction pass over every image")

    TrainingRun.objects.filter(pk=run.pk).update(progress={"phase": "eval", "epoch": 2, "step": 1, "steps": 4, "t": 70})
    expect(page.get_by_test_id("run-phase")).to_have_text("evaluating · validation after epoch 2 of 3")


def test_users_page_counts_only_retags_as_the_last_retag(page, login, admin_user, annotator):
    project, task, (a, b, _) = make_project()
    im = make_image(project, "x.jpg", task=task, label=a)
    # The demo import names the admin who ran it: an import, no retag.
    LabelEvent.objects.create(image=im, task=task, from_label=None, to_label=a, by=admin_user,
                              source=EventSource.IMPORT, reference="import 1")
    LabelEvent.objects.create(image=im, task=task, from_label=a, to_label=b, by=annotator,
                              source=EventSource.ANNOTATOR)
    login(admin_user)
    page.goto("/manage/users/")
    expect(page.get_by_test_id(f"worked-{admin_user.username}")).to_have_text("never")
    expect(page.get_by_test_id(f"worked-{annotator.username}")).to_have_text(re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d$"))
    assert Image.objects.filter(pk=im.pk).exists()
