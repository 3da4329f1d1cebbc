"""A new annotator in a real browser: sign in, open the demo project, filter the grid,
open an image, retag it with the keyboard and see the event in the history; and the
same retag when someone else changed the label first (409: nothing overwritten).

Set RETAG_SCREENSHOT_DIR to keep screenshots of the pages the test walks through.
"""
import re

import pytest
from django.core.management import call_command
from playwright.sync_api import expect

from tests.conftest import screenshot

from labeling.models import Annotation, LabelEvent, Project
from labeling.services.retag import retag_image

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

DEMO_LIMIT = 48


@pytest.fixture
def demo(settings, tmp_path):
    """The shipped demo, its first images, unpacked under this test's own var folder."""
    settings.VAR_DIR = tmp_path / "var"
    call_command("load_demo", "--limit", str(DEMO_LIMIT), "--quiet")
    return Project.objects.get(name="Clothing")


def shot(page, name):
    screenshot(page, name, full_page=False)


def open_category_grid(page, project):
    """Home -> the project -> the category task, as a person clicks through it."""
    page.goto("/")
    page.get_by_role("link", name=project.name, exact=True).first.click()
    expect(page.locator("h1")).to_have_text(project.name)
    category = project.tasks.get(name="category")
    page.select_option("select[name=task]", str(category.id))  # submits the filter form
    page.wait_for_url(re.compile(rf"task={category.id}"))
    return category


def facet(page, task):
    return page.locator(f'.facet[data-task="{task.id}"]')


def test_annotator_filters_opens_and_retags_with_the_keyboard(page, login, annotator, demo):
    login(annotator)
    expect(page.get_by_test_id("role-badge")).to_have_text("annotator")
    category = open_category_grid(page, demo)

    # Filter by the label that has the most images; every cell then shows that label.
    counts = {lb.name: Annotation.objects.filter(task=category, label=lb).count() for lb in category.labels.all()}
    name = max(counts, key=counts.get)
    page.get_by_test_id("label-filter").locator(f'a[data-label="{name}"]').click()
    page.wait_for_url(re.compile(r"label=\d+"))
    cells = page.locator('[data-testid=grid] .cell')
    expect(cells).to_have_count(counts[name])
    assert set(page.locator(".cell-label").all_inner_texts()) == {name}
    expect(page.get_by_test_id("shown-count")).to_have_text(str(counts[name]))
    page.locator(".cell img").first.wait_for()
    page.wait_for_function("Array.from(document.querySelectorAll('.cell img')).every(i => i.complete)")
    shot(page, "grid")
    cells.first.hover()  # hover details: every facet's label of that image
    expect(cells.first.locator(".details")).to_be_visible()
    expect(cells.first.locator(".details")).to_contain_text(f"category{name}")
    shot(page, "grid-hover")

    # Open the first image; its original is shown, the history has the import event.
    cells.first.locator("a").click()
    page.wait_for_url(re.compile(r"/images/\d+/"))
    image_id = int(re.search(r"/images/(\d+)/", page.url).group(1))
    expect(page.locator("#original")).to_be_visible()
    page.wait_for_function("document.getElementById('original').naturalWidth > 0")
    rows = page.locator("#history-rows tr")
    before = rows.count()
    assert before >= 1

    # The page came from the category filter, so the category facet is the selected one; a
    # number key sets the category label in the task's order: the first label that is not
    # the current one.
    labels = list(category.labels.order_by("position", "id"))
    target_index = next(i for i, lb in enumerate(labels) if lb.name != name and i < 10)
    target = labels[target_index]
    expect(facet(page, category)).to_have_class(re.compile(r"\bselected\b"))
    page.keyboard.press(str((target_index + 1) % 10))

    expect(page.locator("#notice")).to_have_text(f"category is now {target.name}.")
    expect(facet(page, category).locator("[data-role=current]")).to_have_text(target.name)
    expect(rows).to_have_count(before + 1)
    newest = rows.first.locator("td")
    expect(newest.nth(1)).to_have_text("category")
    expect(newest.nth(2)).to_have_text(name)
    expect(newest.nth(3)).to_have_text(target.name)
    expect(newest.nth(4)).to_have_text(annotator.username)
    expect(newest.nth(5)).to_have_text("annotator")
    shot(page, "image")
    event = LabelEvent.objects.filter(image_id=image_id, task=category).first()
    assert (event.from_label.name, event.to_label.name, event.by, event.source) == (
        name, target.name, annotator, "annotator")
    assert Annotation.objects.get(image_id=image_id, task=category).label == target

    # j walks to the next image of the same filter (still labelled `name`); the retagged
    # image has left that filter, so g goes back to a grid without it.
    next_url = page.locator("#image-page").get_attribute("data-next-url")
    assert next_url and f"/images/{image_id}/" not in next_url
    page.keyboard.press("j")
    expect(page).to_have_url(re.compile(re.escape(next_url) + "$"))
    expect(facet(page, category).locator("[data-role=current]")).to_have_text(name)
    page.keyboard.press("g")
    page.wait_for_url(re.compile(r"/p/clothing/\?"))
    expect(cells).to_have_count(counts[name] - 1)
    expect(page.locator(f'[data-image-id="{image_id}"]')).to_have_count(0)
    page.go_back()
    expect(page).to_have_url(re.compile(re.escape(next_url) + "$"))

    # The keyboard help opens with ? and closes with Escape.
    page.keyboard.press("?")
    expect(page.locator("#help")).to_be_visible()
    page.keyboard.press("Escape")
    expect(page.locator("#help")).to_be_hidden()


def test_retag_when_the_label_changed_underneath_shows_the_conflict(page, login, annotator, scientist, demo):
    category = demo.tasks.get(name="category")
    note = Annotation.objects.filter(task=category, label__isnull=False).select_related("image", "label").first()
    image, seen = note.image, note.label
    labels = list(category.labels.order_by("position", "id"))
    theirs = next(lb for lb in labels if lb != seen)
    mine_index = next(i for i, lb in enumerate(labels) if lb not in (seen, theirs) and i < 10)

    login(annotator)
    page.goto(f"/images/{image.id}/?task={category.id}")
    facet(page, category).locator("header").click()
    expect(facet(page, category).locator("[data-role=current]")).to_have_text(seen.name)

    # Someone else retags while the page is open.
    retag_image(image=image, task=category, label=theirs, by=scientist, expected_version=note.version)

    page.keyboard.press(str((mine_index + 1) % 10))
    notice = page.locator("#notice")
    expect(notice).to_contain_text("Someone else changed category")
    expect(notice).to_contain_text(f"it is now “{theirs.name}”")
    expect(notice).to_contain_text("nothing was overwritten")
    expect(facet(page, category).locator("[data-role=current]")).to_have_text(theirs.name)
    expect(page.locator("#history-rows tr").first.locator("td").nth(4)).to_have_text(scientist.username)
    shot(page, "conflict")
    assert Annotation.objects.get(image=image, task=category).label == theirs
    assert not LabelEvent.objects.filter(image=image, by=annotator).exists()

    # Pressing again now sends the version the page has seen since: it is saved.
    page.keyboard.press(str((mine_index + 1) % 10))
    expect(notice).to_have_text(f"category is now {labels[mine_index].name}.")
    assert Annotation.objects.get(image=image, task=category).label == labels[mine_index]


def test_admin_imports_a_folder_watches_it_finish_and_reorders_labels(page, login, admin_user, tmp_path,
                                                                      monkeypatch):
    import io

    from PIL import Image as PILImage

    from labeling import tasks
    from labeling.models import ImportJob
    from labeling.services.imports import run_import
    from labeling.services.storage_roots import add_root

    folder = tmp_path / "coats"
    for split, label, colours in [("train", "parka", [(150, 30, 30), (120, 40, 40)]),
                                  ("train", "trench", [(190, 160, 110)]), ("test", "parka", [(90, 20, 20)])]:
        (folder / split / label).mkdir(parents=True, exist_ok=True)
        for i, colour in enumerate(colours):
            out = io.BytesIO()
            PILImage.new("RGB", (64, 80), colour).save(out, "JPEG")
            (folder / split / label / f"{i}.jpg").write_bytes(out.getvalue())
    (folder / "train" / "trench" / "torn.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    add_root(tmp_path.as_uri())
    queued = []
    monkeypatch.setattr(tasks.run_import_job, "delay", queued.append)  # no broker: the test runs it

    login(admin_user)
    expect(page.get_by_test_id("role-badge")).to_have_text("admin")
    page.get_by_test_id("admin-menu").locator("summary").click()  # the admin pages are in the Manage menu
    page.get_by_role("link", name="Imports").click()
    # A source outside every root is refused with its reason, and nothing is created.
    page.select_option("#id_project", "__new__")
    page.fill("#id_new_project", "Coats")
    page.select_option("#id_kind", "folder")
    page.fill("#id_source_uri", "/etc")
    page.fill("#id_task", "type")
    page.get_by_role("button", name="Start import").click()
    expect(page.locator("[data-field=source_uri] .field-error")).to_contain_text(
        "Refused: /etc is outside every allowed storage root")
    assert not Project.objects.filter(name="Coats").exists()

    page.select_option("#id_project", "__new__")
    page.fill("#id_new_project", "Coats")
    page.fill("#id_source_uri", folder.as_uri())
    page.get_by_role("button", name="Start import").click()
    page.wait_for_url(re.compile(r"/imports/\d+/$"))
    job = ImportJob.objects.get()
    assert queued == [job.id]
    expect(page.locator("#job-state")).to_have_text("queued")
    shot(page, "import-queued")

    # The page polls: it shows the finished job without a reload.
    run_import(job)
    expect(page.locator("#job-state")).to_have_text("done", timeout=10000)
    expect(page.locator('[data-k="added"]')).to_have_text("4")  # the corrupt file is counted once, as corrupt
    expect(page.locator('[data-k="corrupt"]')).to_have_text("1")
    expect(page.locator("#job-processed")).to_have_text("5")
    shot(page, "import-done")

    # Label order: move trench above parka; the grid's label filter follows.
    page.get_by_role("link", name="Coats").first.click()
    page.get_by_role("link", name="Labels", exact=True).click()
    order = page.get_by_test_id("order-type")
    expect(order.locator(".name")).to_have_text(["parka", "trench"])
    order.locator("li", has_text="trench").get_by_title("Move up").click()
    expect(page.get_by_test_id("order-type").locator(".name")).to_have_text(["trench", "parka"])
    shot(page, "label-order")
    page.get_by_role("link", name="Images").click()
    expect(page.get_by_test_id("label-filter").locator(".name")).to_have_text(
        ["All labels", "trench", "parka", "no label"])
    expect(page.get_by_test_id("label-filter").locator(".count")).to_have_text(["5", "2", "3", "0"])
    page.get_by_role("link", name="Corrupt & missing").click()
    expect(page.get_by_test_id("corrupt")).to_contain_text("train/trench/torn.jpg")
    shot(page, "problems")
