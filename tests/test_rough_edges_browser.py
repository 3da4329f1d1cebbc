"""The rough edges a new user saw (issue 15), each in a real browser: zoom on the image page,
a key for every one of the Clothing category's 14 labels on every page that retags by key
(and chords past 24 labels),
the prediction grid's help and its answer to a key no label has, a one-line top bar inside
a project at 1,280 and 1,400 px, 403 pages that name the roles, the grid's first task and the
image page's focused task, the retagger's role as the source badge, the test-split notices
and the dashboard's count of changed test labels.

Set RETAG_SCREENSHOT_DIR to keep the screenshots (docs/screenshots/ holds the README's).
"""
import re

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from tests.conftest import screenshot

from labeling.models import Annotation, Image, LabelEvent, TrainingRun
from labeling.services.labels import ensure_labels, label_key, ordered_labels
from tests.test_browser import demo, facet  # noqa: F401 - the fixture
from tests.test_quality import two_runs  # noqa: F401 - the fixture
from tests.test_suspects_browser import world  # noqa: F401 - the fixture

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def shot(target, name):
    """A screenshot of a page or of one element of it."""
    screenshot(target, name, full_page=False)


def keys(n):
    return [label_key(i) for i in range(n)]


def test_scientist_zooms_and_retags_with_the_fourteenth_key(page, login, scientist, demo):
    category, audience = demo.tasks.get(name="category"), demo.tasks.get(name="audience")
    labels = ordered_labels(category)
    assert len(labels) == 14
    login(scientist)

    # The grid opens on the project's first task (category, the demo's first), not audience.
    page.goto(f"/p/{demo.slug}/")
    expect(page.locator("select[name=task]")).to_have_value(str(category.id))

    # Arriving from an audience filter, the image page focuses audience.
    page.goto(f"/p/{demo.slug}/?task={audience.id}")
    page.locator("[data-testid=grid] .cell a").first.click()
    page.wait_for_url(re.compile(r"/images/\d+/\?.*task="))
    expect(facet(page, audience)).to_have_class(re.compile(r"\bselected\b"))
    expect(facet(page, category)).not_to_have_class(re.compile(r"\bselected\b"))
    image_id = int(re.search(r"/images/(\d+)/", page.url).group(1))

    # Every category label has a key, shown on its button: 1..9, 0, then b c d e.
    bar = facet(page, category)
    assert bar.locator(".choice kbd").all_inner_texts() == keys(14) == list("1234567890bcde")
    facet(page, category).locator("header").click()
    shot(bar, "retag-bar-14-labels")
    page.keyboard.press("e")
    expect(page.locator("#notice")).to_have_text(f"category is now {labels[13].name}.")
    assert Annotation.objects.get(image_id=image_id, task=category).label == labels[13]
    # A scientist's retag is shown as a scientist's (the event keeps the in-app source).
    badge = page.locator("#history-rows tr").first.locator(".source")
    expect(badge).to_have_text("scientist")
    expect(badge).to_have_class(re.compile(r"\bsource-scientist\b"))
    assert LabelEvent.objects.filter(image_id=image_id, by=scientist).get().source == "annotator"
    page.reload()
    expect(page.locator("#history-rows tr").first.locator(".source")).to_have_text("scientist")

    # A key no label has is told, not ignored.
    facet(page, category).locator("header").click()
    page.keyboard.press("q")
    expect(page.locator("#notice")).to_contain_text("No label has the key “q”")
    assert Annotation.objects.get(image_id=image_id, task=category).label == labels[13]

    # Zoom: + zooms in, the wheel zooms around the pointer, a drag pans, z fits again.
    page.wait_for_function("document.getElementById('original').naturalWidth > 0")
    level, box = page.get_by_test_id("zoom-level"), page.get_by_test_id("zoom-box")
    expect(level).to_have_text("100 %")
    page.keyboard.press("+")
    expect(level).to_have_text("125 %")
    b = box.bounding_box()
    page.mouse.move(b["x"] + b["width"] * 0.5, b["y"] + b["height"] * 0.3)
    page.mouse.wheel(0, -400)
    page.wait_for_function("Number(document.querySelector('[data-testid=zoom-box]').dataset.scale) > 2")
    before = page.locator("#original").evaluate("i => i.style.transform")
    page.mouse.down()
    page.mouse.move(b["x"] + b["width"] * 0.5 + 60, b["y"] + b["height"] * 0.3 + 40, steps=4)
    page.mouse.up()
    after = page.locator("#original").evaluate("i => i.style.transform")
    assert after != before and "scale(" in after
    shot(page, "image-zoom")
    page.keyboard.press("z")
    expect(level).to_have_text("100 %")
    assert page.locator("#original").evaluate("i => i.style.transform") == ""

    # A test image says that a retag changes the test set; a train image does not.
    test_image = Image.objects.filter(project=demo, split="test", status="ok").first()
    page.goto(f"/images/{test_image.id}/")
    expect(page.get_by_test_id("test-split-notice")).to_contain_text("changes the test set")
    train_image = Image.objects.filter(project=demo, split="train", status="ok").first()
    page.goto(f"/images/{train_image.id}/")
    expect(page.get_by_test_id("test-split-notice")).to_have_count(0)


def test_prediction_grid_help_unknown_key_next_card_and_test_set_change(page, login, scientist, two_runs):
    run, labels = two_runs["run2"], two_runs["labels"]
    TrainingRun.objects.filter(pk=run.pk).update(snapshot_at=timezone.now())  # the fixture's retags are before it
    login(scientist)
    page.goto(f"/runs/{run.id}/")
    expect(page.get_by_test_id("test-set-changes")).to_have_attribute("data-images", "0")

    page.goto(f"/runs/{run.id}/images/?kind=fn&label={labels[0].id}&split=test")
    expect(page.get_by_test_id("grid-help")).to_contain_text("then the next image is selected")
    expect(page.get_by_test_id("test-split-notice")).to_contain_text("These images are in the test split")
    assert page.locator("#task-labels kbd").all_inner_texts() == keys(3)
    cells = page.locator(".pcell")
    expect(cells.first).to_have_class(re.compile(r"\bselected\b"))
    page.keyboard.press("x")
    expect(page.locator("#notice")).to_contain_text("No label has the key “x”")
    expect(cells.first).to_have_class(re.compile(r"\bselected\b"))  # nothing moved

    first = cells.first
    current = first.get_attribute("data-current")
    target = next(i for i, lb in enumerate(labels) if str(lb.id) != current)
    page.keyboard.press(label_key(target))
    expect(page.locator("#notice")).to_contain_text(f"is now {labels[target].name}")
    expect(cells.nth(1)).to_have_class(re.compile(r"\bselected\b"))  # the next card, as the help says
    image_id = int(first.get_attribute("data-image"))
    assert Annotation.objects.get(image_id=image_id, task=two_runs["task"]).label == labels[target]

    page.goto(f"/runs/{run.id}/")
    changes = page.get_by_test_id("test-set-changes")
    expect(changes).to_have_attribute("data-images", "1")
    expect(changes).to_contain_text("1 test image changed label since this run's snapshot")
    expect(changes).to_contain_text(f"{labels[target].name} +1")
    shot(page, "dashboard-test-set-changed")


def test_queue_and_clusters_have_a_key_for_each_label_chords_past_24(page, login, annotator, scientist, world):
    project, task, labels, images, sr = world
    ensure_labels(task, [f"extra {i}" for i in range(23)])
    many = ordered_labels(task)
    assert len(many) == 26
    login(annotator)
    page.goto(f"/suspects/{sr.id}/queue/")
    assert page.locator("#task-labels .choice kbd").all_inner_texts() == keys(26)
    assert keys(26)[-3:] == ["y", ";1", ";2"]
    shown = int(page.get_by_test_id("suspect").get_attribute("data-image"))
    page.keyboard.press(";")
    page.keyboard.press("x")  # ";x" would be the 47th label
    expect(page.locator("#notice")).to_contain_text("No label has the key “;x”")
    page.keyboard.press(";")
    expect(page.locator("#notice")).to_contain_text("the next key picks the label")
    page.keyboard.press("2")
    page.wait_for_function(f"document.querySelector('[data-testid=suspect]').dataset.image != '{shown}'")
    assert Annotation.objects.get(image_id=shown, task=task).label == many[25]

    login(scientist)
    page.goto(f"/suspects/{sr.id}/clusters/?label={labels['fox'].id}")
    group = page.get_by_test_id("outlier-group")
    expect(group).to_have_count(1)
    options = group.locator("select[name=label] option")
    assert [t.split(" · ")[0] for t in options.all_inner_texts()] == keys(26)
    page.keyboard.press("d")
    expect(group.locator("select[name=label]")).to_have_value(str(many[12].id))
    expect(page.locator("#notice")).to_contain_text("press Enter")
    page.keyboard.press("Enter")
    expect(page.locator(".flash")).to_contain_text(f"set to {many[12].name}")
    assert Annotation.objects.get(image=images[11], task=task).label == many[12]


@pytest.mark.parametrize("width", [1280, 1400])
def test_admin_top_bar_is_one_line_inside_a_project(page, login, admin_user, demo, width):
    page.set_viewport_size({"width": width, "height": 900})
    login(admin_user)
    page.goto(f"/p/{demo.slug}/")
    bar = page.locator(".topbar")
    assert bar.evaluate("b => b.offsetHeight") == 48
    # No link breaks onto a second line, and none is cut off.
    heights = page.locator(".topbar .mainnav a, .topbar summary").evaluate_all("els => els.map(e => e.offsetHeight)")
    assert heights and max(heights) <= 34, heights
    assert bar.evaluate("b => b.scrollWidth <= b.clientWidth")
    assert page.locator(".mainnav").evaluate("n => n.scrollWidth <= n.clientWidth")
    shot(bar, f"topbar-admin-{width}")
    # The admin pages are one click away, in the Manage menu.
    menu = page.get_by_test_id("admin-menu")
    menu.locator("summary").click()
    expect(menu.get_by_role("link", name="Users")).to_be_visible()
    page.locator("h1").click()  # a click elsewhere closes it
    expect(menu.get_by_role("link", name="Users")).to_be_hidden()
    menu.locator("summary").click()
    page.get_by_role("link", name="Mechanical Turk").click()
    page.wait_for_url(re.compile(r"/mturk/$"))


def test_403_names_the_roles_and_anonymous_docs_go_to_the_login(page, login, annotator, browser, live_server, demo):
    login(annotator)
    page.goto(f"/p/{demo.slug}/runs/")
    forbidden = page.get_by_test_id("forbidden")
    expect(forbidden.get_by_test_id("needed-role")).to_have_text("scientist")
    expect(forbidden.get_by_test_id("your-role")).to_have_text("annotator")
    expect(forbidden).not_to_contain_text("for admins")
    page.goto("/manage/users/")
    expect(page.get_by_test_id("needed-role")).to_have_text("admin")

    anonymous = browser.new_context(base_url=live_server.url)
    try:
        other = anonymous.new_page()
        other.goto("/api/docs/")
        expect(other).to_have_url(re.compile(r"/accounts/login/\?next=/api/docs/$"))
        expect(other.locator("body")).not_to_contain_text("no role")
    finally:
        anonymous.close()
