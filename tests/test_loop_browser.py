"""The whole loop in a real browser, against a real Celery worker that really trains (tiny runs):
train a run -> find suspects (2 fold models) -> work the queue -> retrain -> the retrained run's
dashboard compares with the run it retrains (never with a fold model), names it, says which way
each figure moved, and every figure it shows is the difference of the two runs' numbers.
On the way: the fold models show only with their suspects run (not in the run list, not as
the image page's latest run), and the progress page ends at 100 %.

Set RETAG_SCREENSHOT_DIR to keep screenshots of the pages the test walks through.
"""
import re

import pytest
from playwright.sync_api import expect

from labeling.models import ClassMetric, EventSource, Image, LabelEvent, SuspectRun, TrainingRun
from labeling.services import quality
from tests.conftest import screenshot, wait_for

pytestmark = [pytest.mark.browser, pytest.mark.integration, pytest.mark.django_db(transaction=True)]

WORKER_ENV = {"RUN_HEARTBEAT_S": "1", "OMP_NUM_THREADS": "2"}
RUN_TIMEOUT = 240
RETAGS = 2


def shot(page, name):
    screenshot(page, f"loop-{name}")


def wait_done(page):
    expect(page.get_by_test_id("done-banner")).to_be_visible(timeout=RUN_TIMEOUT * 1000)
    expect(page.get_by_test_id("run-state")).to_have_text("done")
    # The bar ends full (it stayed at 31 % before), with no ETA left.
    expect(page.get_by_test_id("run-share")).to_have_text("100 %")
    assert page.locator("#run-bar").get_attribute("data-share") == "100.0"
    expect(page.locator("#p-eta")).to_have_text("—")


def f1(run, split, avg):
    return (quality.split_metrics(run, split).get(avg) or {}).get("f1")


def test_run_suspects_queue_retag_retrain(page, login, make_user, untrained_demo, celery_worker_factory):
    celery_worker_factory("redis", extra_env=WORKER_ENV)
    scientist = make_user("scientist")
    task = untrained_demo.tasks.get(name="category")
    login(scientist)

    # 1. Train: one epoch, from the start-run form.
    page.goto(f"/p/{untrained_demo.slug}/runs/new/?task={task.id}")
    form = page.get_by_test_id("run-form")
    form.locator("input[name=epochs]").fill("1")
    form.locator("input[name=batch_size]").fill("32")
    form.locator("input[name=small_input]").uncheck()  # the standard stem: the loop, not the model, is tested
    page.get_by_test_id("start-run").click()
    page.wait_for_url(re.compile(r"/runs/\d+/progress/$"))
    run1 = TrainingRun.objects.get()
    wait_done(page)
    # No validation split in Retag's manifests: the per-epoch curve is the test split's, and it says so.
    expect(page.get_by_test_id("loss-note")).to_contain_text("no validation split")
    expect(page.locator("#loss-legend")).to_contain_text("test-split loss")
    shot(page, "run1-done")

    # 2. Find suspects with two 1-epoch fold models.
    page.goto(f"/runs/{run1.id}/")
    page.get_by_test_id("find-suspects").click()
    page.fill("input[name=k]", "2")
    page.fill("input[name=fold_epochs]", "1")
    page.get_by_test_id("start-suspects").click()
    page.wait_for_url(re.compile(r"/suspects/\d+/$"))
    sr = SuspectRun.objects.get()
    sr = wait_for(lambda: SuspectRun.objects.filter(pk=sr.pk, state__in=SuspectRun.FINAL_STATES).first(),
                  timeout=3 * RUN_TIMEOUT, interval=1, what="the suspects run")
    assert sr.state == SuspectRun.State.DONE, sr.state_reason
    folds = list(TrainingRun.objects.filter(fold_of=sr).order_by("id"))
    assert [f.id for f in folds] == sr.fold_run_ids and len(folds) == 2
    assert all(f.state == "done" and f.parent_id == run1.id for f in folds)
    shot(page, "suspects")

    # The fold models finished after run 1, yet run 1 is still the task's latest run.
    page.goto(f"/p/{untrained_demo.slug}/runs/?task={task.id}")
    expect(page.locator("[data-testid=runs] tbody tr")).to_have_count(1)
    expect(page.locator(f'tr[data-run="{run1.id}"]')).to_be_visible()
    train_image = Image.objects.filter(project=untrained_demo, split="train").order_by("id").first()
    page.goto(f"/images/{train_image.id}/", wait_until="domcontentloaded", timeout=90000)
    expect(page.get_by_test_id("predictions")).to_contain_text(f"run {run1.id}")
    page.goto(f"/runs/{folds[0].id}/")
    expect(page.get_by_test_id("compare-note")).to_contain_text(f"fold model of suspects run {sr.id}")
    expect(page.get_by_test_id("retrain")).to_have_count(0)

    # 3. Work the queue: accept the suggestion of the first suspects ("a").
    page.goto(f"/suspects/{sr.id}/queue/")
    accepted = 0
    while accepted < RETAGS:
        card = page.get_by_test_id("suspect")
        expect(card).to_be_visible()
        shown = card.get_attribute("data-image")
        page.keyboard.press("a")
        page.wait_for_function(
            f"!document.querySelector('[data-testid=suspect]') || "
            f"document.querySelector('[data-testid=suspect]').dataset.image != '{shown}'")
        accepted += 1
    retags = LabelEvent.objects.filter(task=task, by=scientist, source=EventSource.ANNOTATOR).count()
    assert retags == RETAGS  # each accepted suggestion differs from the given label
    shot(page, "queue")

    # 4. Retrain run 1 on the new labels.
    page.goto(f"/runs/{run1.id}/")
    page.get_by_test_id("retrain").click()
    page.wait_for_url(re.compile(r"/runs/\d+/progress/$"))
    run2 = TrainingRun.objects.main().order_by("-id").first()
    assert run2.parent_id == run1.id and run2.id not in sr.fold_run_ids
    wait_done(page)
    run1.refresh_from_db()
    run2.refresh_from_db()

    # 5. Its dashboard compares with run 1 (not the later fold models), names it, says which way.
    page.get_by_test_id("open-dashboard").click()
    note = page.get_by_test_id("compare-note")
    assert note.get_attribute("data-baseline") == str(run1.id)
    expect(note).to_contain_text(f"Compared with run {run1.id}")
    expect(note).to_contain_text("the run this one retrains")
    expect(page.get_by_test_id("retags")).to_have_text(str(RETAGS))
    for split, avg, name in quality.HEADLINE:
        before, now = f1(run1, split, avg), f1(run2, split, avg)
        move = page.locator(f'[data-testid=moves] [data-name="{name}"]')
        change = now - before
        if abs(change) <= quality.FLAT:
            expect(move).to_have_attribute("data-direction", "flat")
            expect(move).to_contain_text(f"did not move ({now:.3f})")
        else:
            word = "rose" if change > 0 else "fell"
            expect(move).to_have_attribute("data-direction", "rose" if change > 0 else "fell")
            expect(move).to_contain_text(f"{word} from {before:.3f} to {now:.3f}")
    kpi = float(page.get_by_test_id("kpi-test-macro").locator(".delta").get_attribute("data-delta"))
    assert kpi == pytest.approx(f1(run2, "test", "macro") - f1(run1, "test", "macro"), abs=1e-6)
    expect(page.get_by_test_id("kpi-test-macro")).to_contain_text(f"{run2.test_macro_f1:.3f}")

    # Every class's ΔF1 is its F1 in run 2 minus its F1 in run 1 (never a fold model's).
    before = {m.label_id: m.f1 for m in ClassMetric.objects.filter(run=run1, split="test")}
    now = {m.label_id: m.f1 for m in ClassMetric.objects.filter(run=run2, split="test")}
    rows = page.locator("#metric-table tbody tr")
    expect(rows).to_have_count(10)
    for row in rows.all():
        label_id = int(row.get_attribute("data-label-id"))
        delta = float(row.get_by_test_id("delta-f1").locator(".delta").get_attribute("data-delta"))
        assert delta == pytest.approx(now[label_id] - before[label_id], abs=1e-6), row.get_attribute("data-label")
    shot(page, "dashboard-2")

    # F1 over runs and the run list hold the two training runs only.
    assert [r["id"] for r in quality.f1_series(task)["runs"]] == [run1.id, run2.id]
    page.goto(f"/p/{untrained_demo.slug}/runs/?task={task.id}")
    expect(page.locator("[data-testid=runs] tbody tr")).to_have_count(2)
    page.goto(f"/images/{train_image.id}/", wait_until="domcontentloaded", timeout=90000)
    expect(page.get_by_test_id("predictions")).to_contain_text(f"run {run2.id}")
