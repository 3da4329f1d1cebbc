"""A new scientist in a real browser, against a real Celery worker that really trains:
start a run on the demo's Fashion-MNIST project, watch it finish on the progress page,
read the dashboard, click a confusion cell, retag false negatives from the grid with the
keyboard (one of them changed by someone else meanwhile: 409, nothing overwritten),
retrain, and read the second run's per-class change and the retags between the runs.

Set RETAG_SCREENSHOT_DIR to keep screenshots of the pages the test walks through.
"""
import re

import pytest
from playwright.sync_api import expect

from labeling.models import Annotation, LabelEvent, TrainingRun
from labeling.services.retag import retag_image
from tests.conftest import screenshot

pytestmark = [pytest.mark.browser, pytest.mark.integration, pytest.mark.django_db(transaction=True)]

WORKER_ENV = {"RUN_HEARTBEAT_S": "1", "OMP_NUM_THREADS": "2"}
RUN_TIMEOUT = 150


def shot(page, name):
    screenshot(page, f"runs-{name}")


def wait_done(page):
    """The progress page updates itself (no reload) until the run is done."""
    expect(page.get_by_test_id("done-banner")).to_be_visible(timeout=RUN_TIMEOUT * 1000)
    expect(page.get_by_test_id("run-state")).to_have_text("done")


def test_scientist_trains_reads_retags_and_retrains(page, login, make_user, untrained_demo, celery_worker_factory):
    celery_worker_factory("redis", extra_env=WORKER_ENV)
    scientist = make_user("scientist")
    other = make_user("annotator")
    task = untrained_demo.tasks.get(name="category")
    labels = list(task.labels.order_by("position", "id"))
    login(scientist)

    # Home -> the project -> Runs & quality -> New run.
    page.goto("/")
    page.get_by_role("link", name="Fashion-MNIST", exact=True).first.click()
    page.get_by_role("link", name="Runs & quality").click()
    expect(page.locator("h1")).to_have_text("Training runs")
    page.get_by_test_id("new-run").click()
    form = page.get_by_test_id("run-form")
    expect(form.locator("select[name=task]")).to_have_value(str(task.id))
    # The form starts from the task's default config: 28 px images, the small-input stem.
    expect(form.locator("input[name=image_size]")).to_have_value("28")
    expect(form.locator("input[name=small_input]")).to_be_checked()
    # A bad value is refused on the form, nothing is started.
    form.locator("input[name=epochs]").fill("0")
    page.get_by_test_id("start-run").click()
    expect(page.locator(".field-error").first).to_contain_text("greater than or equal to 1")
    assert not TrainingRun.objects.exists()
    form.locator("input[name=epochs]").fill("2")
    form.locator("input[name=batch_size]").fill("32")
    # The standard stem (a sixteenth of the small-input stem's work at 28 px): this test is
    # about the pages around a run, on two shared cores; the form's own fields are above.
    form.locator("input[name=small_input]").uncheck()
    shot(page, "new-run")
    page.get_by_test_id("start-run").click()

    # The progress page follows the run to the end without a reload.
    page.wait_for_url(re.compile(r"/runs/\d+/progress/$"))
    run1 = TrainingRun.objects.get()
    page.evaluate("window.__sameDocument = true")
    expect(page.locator("#p-loss")).not_to_have_text("—", timeout=RUN_TIMEOUT * 1000)
    shot(page, "progress-running")
    wait_done(page)
    assert page.evaluate("window.__sameDocument") is True  # updated in place, never reloaded
    expect(page.locator("#loss-chart polyline")).to_have_count(2)  # training and validation loss
    expect(page.locator("#p-epoch")).to_have_text("2 / 2")
    shot(page, "progress-done")
    run1.refresh_from_db()
    assert run1.state == "done" and run1.config["epochs"] == 2

    # The dashboard: ten classes, test split, macro-F1; no previous run to compare with.
    page.get_by_test_id("open-dashboard").click()
    table = page.get_by_test_id("metric-table")
    expect(table.locator("tbody tr")).to_have_count(10)
    expect(page.get_by_test_id("kpi-test-macro")).to_contain_text(f"{run1.test_macro_f1:.3f}")
    expect(page.get_by_test_id("compare-note")).to_contain_text("first finished run")
    # Sorting by F1 (click twice: descending, then ascending) puts the weakest class first.
    f1_head = table.locator("thead th", has_text="F1").first
    f1_head.click()
    expect(f1_head).to_have_class(re.compile("sorted-desc"))
    shot(page, "dashboard-1")

    # The confusion matrix; the biggest off-diagonal cell opens its images.
    page.get_by_role("link", name="Confusion matrix").click()
    cells = page.locator("[data-testid=confusion] td.cm-cell:not(.diag)")
    counts = [int(c) for c in cells.evaluate_all("cs => cs.map(c => c.dataset.count)")]
    biggest = max(range(len(counts)), key=counts.__getitem__)
    assert counts[biggest] > 0
    given = cells.nth(biggest).get_attribute("data-given")
    predicted = cells.nth(biggest).get_attribute("data-predicted")
    shot(page, "confusion")
    cells.nth(biggest).locator("a").click()
    expect(page.get_by_test_id("grid-title")).to_have_text(f"Given {given}, predicted {predicted}")
    expect(page.locator(".pcell")).to_have_count(counts[biggest])
    expect(page.locator(".pcell").first.locator(".given b")).to_have_text(given)
    expect(page.locator(".pcell").first.locator(".pred b")).to_have_text(predicted)

    # The false negatives of that class, from the dashboard's FN link: retag with the keyboard.
    page.goto(f"/runs/{run1.id}/")
    row = page.locator(f'#metric-table tbody tr[data-label="{given}"]')
    row.get_by_test_id("fn-link").click()
    expect(page.get_by_test_id("grid-title")).to_have_text(f"False negatives of {given}")
    grid_cells = page.locator(".pcell")
    n = grid_cells.count()
    assert n >= 2
    confidences = [float(c.rstrip("%")) for c in page.locator(".conf-tag").all_inner_texts()]
    assert confidences == sorted(confidences, reverse=True)  # most confident first
    first_id = int(grid_cells.nth(0).get_attribute("data-image"))
    second_id = int(grid_cells.nth(1).get_attribute("data-image"))
    first_pred = grid_cells.nth(0).locator(".pred b").inner_text()
    key_of = {lb.name: str((i + 1) % 10) for i, lb in enumerate(labels)}

    page.keyboard.press(key_of[first_pred])  # the first cell is selected: take the model's label
    expect(page.locator("#notice")).to_have_text(f"Image {first_id}: category is now {first_pred}.")
    expect(grid_cells.nth(0).locator("[data-role=now]")).to_have_text(first_pred)
    expect(grid_cells.nth(1)).to_have_class(re.compile(r"\bselected\b"))  # moved on to the next one
    assert Annotation.objects.get(image_id=first_id, task=task).label.name == first_pred
    assert LabelEvent.objects.filter(image_id=first_id, task=task, by=scientist, source="annotator").exists()

    # Someone else retags the second image first: the key press is refused (409), nothing is overwritten.
    second_pred = grid_cells.nth(1).locator(".pred b").inner_text()
    ann = Annotation.objects.get(image_id=second_id, task=task)
    elsewhere = next(lb for lb in labels if lb.name not in (second_pred, ann.label.name))
    retag_image(image=ann.image, task=task, label=elsewhere, by=other, expected_version=ann.version)
    page.keyboard.press(key_of[second_pred])
    expect(page.locator("#notice")).to_contain_text("Someone else changed category")
    expect(grid_cells.nth(1)).to_have_class(re.compile(r"\bconflict\b"))
    expect(grid_cells.nth(1).locator("[data-role=now]")).to_have_text(elsewhere.name)
    assert Annotation.objects.get(image_id=second_id, task=task).label == elsewhere
    shot(page, "false-negatives")

    # Retrain on the new labels; the second run's dashboard shows the change per class.
    page.get_by_test_id("retrain").click()
    page.wait_for_url(re.compile(r"/runs/\d+/progress/$"))
    run2 = TrainingRun.objects.order_by("-id").first()
    assert run2.parent_id == run1.id and run2.id != run1.id
    wait_done(page)
    page.get_by_test_id("open-dashboard").click()
    expect(page.get_by_test_id("compare-note")).to_contain_text(f"run {run1.id}")
    expect(page.get_by_test_id("retags")).to_have_text("2")  # ours and the other annotator's
    deltas = page.locator("#metric-table tbody [data-testid=delta-f1] .delta")
    expect(deltas).to_have_count(10)
    assert all(d.get_attribute("data-delta") is not None for d in deltas.all())
    shot(page, "dashboard-2")

    # F1 over runs: two runs on the chart.
    page.get_by_role("link", name="F1 over runs").click()
    expect(page.get_by_test_id("f1-chart").locator("polyline").first).to_be_visible()
    expect(page.get_by_test_id("class-charts").locator(".chart-card")).to_have_count(10)
    shot(page, "f1")

    # The run list: both runs, the second a retrain of the first.
    page.goto(f"/p/{untrained_demo.slug}/runs/?task={task.id}")
    expect(page.locator("[data-testid=runs] tbody tr")).to_have_count(2)
    expect(page.locator(f'tr[data-run="{run2.id}"]')).to_contain_text(f"↻ {run1.id}")
    shot(page, "run-list")

    # The image page shows the latest run's prediction for the retagged image.
    page.goto(f"/images/{first_id}/")
    expect(page.get_by_test_id("predictions")).to_contain_text(f"run {run2.id}")
    shot(page, "image")
