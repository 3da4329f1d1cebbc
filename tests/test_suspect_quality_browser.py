"""The suspects run page in a real browser: the quality figures (people's verdicts with their
intervals, the truth task's precision/recall/F1/P@k/AUROC) updated as the queue is worked, and
the weak-evidence warning of a run whose fold models collapsed to one class.

Set RETAG_SCREENSHOT_DIR to keep screenshots."""
import pytest
from playwright.sync_api import expect

from labeling.models import TrainingRun
from tests.test_suspect_quality import add_truth, done_world, make_folds
from tests.test_suspects_browser import shot

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_suspects_run_page_shows_quality_and_follows_the_queue(tmp_path, login, page, scientist):
    project, task, labels, images, sr = done_world(tmp_path)
    add_truth(project, task, images)
    make_folds(sr, [0.7, 0.72])
    login(scientist)
    page.goto(f"/suspects/{sr.id}/")
    expect(page.get_by_test_id("truth-f1")).to_have_text("0.750")
    expect(page.get_by_test_id("truth-pak")).to_have_text("0.250")
    expect(page.get_by_test_id("truth-auroc")).to_have_text("0.469")
    expect(page.get_by_test_id("human-overall")).to_contain_text("No suspect reviewed yet")
    expect(page.get_by_test_id("weak-evidence")).to_have_count(0)

    # Work the queue in the browser: accept the first suspect (image 0, cat -> dog), keep the next.
    page.goto(f"/suspects/{sr.id}/queue/")
    page.keyboard.press("a")
    page.wait_for_function(f"document.querySelector('[data-testid=suspect]').dataset.image != '{images[0].id}'")
    page.keyboard.press("k")
    page.wait_for_function(f"document.querySelector('[data-testid=suspect]').dataset.image != '{images[1].id}'")
    page.goto(f"/suspects/{sr.id}/")
    expect(page.get_by_test_id("human-overall")).to_contain_text("1 of 2 reviewed suspects were changed")
    expect(page.get_by_test_id("human-overall")).to_contain_text("0.09–0.91")  # Wilson, 1 of 2
    cat = page.get_by_test_id("human-by-class").locator("tr", has_text="cat")
    expect(cat).to_contain_text("1.00")
    signal = page.get_by_test_id("human-by-signal").locator("tr", has_text="model")
    expect(signal).to_contain_text("0.50")
    shot(page, "quality")


def test_weak_evidence_warning_for_collapsed_fold_models(tmp_path, login, page, scientist):
    project, task, labels, images, sr = done_world(tmp_path)
    TrainingRun.objects.filter(pk=sr.run_id).update(test_macro_f1=0.766)
    ids = make_folds(sr, [0.019, 0.019, 0.7, 0.019], collapsed=[0, 1, 3])
    login(scientist)
    page.goto(f"/suspects/{sr.id}/")
    warning = page.get_by_test_id("weak-evidence")
    expect(warning).to_contain_text("Weak evidence: 3 of 4 fold models learnt little")
    expect(warning).to_contain_text(f"runs {ids[0]}, {ids[1]}, {ids[3]}: held-out macro-F1 0.019, 0.019, 0.019 "
                                    "against the main run's 0.766")
    expect(page.locator("tr.weak").first).to_contain_text("predicts a single class")
    expect(page.get_by_test_id("main-f1")).to_have_text("0.766")
    expect(page.get_by_test_id("fold-f1")).to_have_text(["0.019", "0.019", "0.700", "0.019"])
    expect(page.locator("tr.weak")).to_have_count(3)
    shot(page, "weak-evidence")
    # The queue says so too, before anyone works it.
    page.goto(f"/suspects/{sr.id}/queue/")
    expect(page.get_by_test_id("weak-evidence")).to_contain_text("Weak evidence: 3 of 4")
