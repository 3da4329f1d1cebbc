"""Find and sort in the project grid, a saved view, and the dashboard's PR curve and
confidence histogram, in a real browser, on the known runs of tests/test_quality.py.

Set RETAG_SCREENSHOT_DIR to keep the screenshots (docs/screenshots/ holds the README's).
"""

import pytest
from playwright.sync_api import expect

from tests.conftest import screenshot

from labeling.services import browse
from tests.test_grid_find_sort import expected_by_confidence
from tests.test_quality import two_runs  # noqa: F401 - the fixture
from tests.test_quality_curves import expected_ap

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def shot(target, name):
    screenshot(target, name, full_page=False)


def keys(page):
    return page.locator("[data-testid=grid] .cell-key").all_inner_texts()


def test_search_sort_pages_and_a_saved_view_comes_back(page, login, scientist, two_runs, monkeypatch):
    monkeypatch.setattr(browse.grid, "PAGE_SIZE", 5)
    slug = two_runs["project"].slug
    login(scientist)
    page.goto(f"/p/{slug}/")
    page.get_by_test_id("grid-search").fill("TRAIN/0")
    page.get_by_test_id("grid-search").press("Enter")
    expect(page.get_by_test_id("search-chip")).to_have_text("TRAIN/0")
    assert keys(page) == [f"train/{i:02d}.jpg" for i in range(4)]

    page.get_by_test_id("grid-search").fill("")
    page.get_by_test_id("grid-sort").select_option("-confidence")
    page.wait_for_url("**sort=-confidence**")
    want = expected_by_confidence(two_runs, descending=True)
    assert keys(page) == want[:5]
    page.locator("a[rel=next]").first.click()
    page.wait_for_url("**after=**")
    assert keys(page) == want[5:10]
    page.locator("a[rel=next]").first.click()
    expect(page.locator("[data-testid=grid] .cell-key")).to_have_count(4)
    assert keys(page) == want[10:]
    page.locator("a[rel=prev]").first.click()
    page.wait_for_url("**before=**")
    assert keys(page) == want[5:10]

    page.get_by_test_id("grid-sort").select_option("confidence")
    page.wait_for_url("**sort=confidence**")
    assert keys(page) == expected_by_confidence(two_runs, descending=False)[:5]

    page.get_by_test_id("grid-sort").select_option("-confidence")
    page.wait_for_url("**sort=-confidence**")
    page.locator("[data-testid=save-view] input[name=name]").fill("confident first")
    page.locator("[data-testid=save-view] button").click()
    link = page.locator("[data-testid=saved-views] a[data-view='confident first']")
    expect(link).to_be_visible()
    assert "view=confident+first" in page.url

    page.goto(f"/p/{slug}/?q=test/03")  # elsewhere, then back through the saved view's link
    assert keys(page) == ["test/03.jpg"]
    page.locator("[data-testid=saved-views] a[data-view='confident first']").click()
    expect(page.get_by_test_id("view-name")).to_have_text("confident first")
    expect(page.get_by_test_id("grid-sort")).to_have_value("-confidence")
    assert keys(page) == want[:5]
    expect(page.locator("[data-testid=saved-views] a.active")).to_have_text("confident first")
    page.get_by_role("button", name="Forget confident first").click()
    expect(page.locator("[data-testid=saved-views] a")).to_have_count(0)


def test_dashboard_pr_curve_and_histogram_of_known_probabilities(page, login, scientist, two_runs):
    run, labels = two_runs["run2"], two_runs["labels"]
    login(scientist)
    page.set_viewport_size({"width": 1400, "height": 900})
    page.goto(f"/runs/{run.id}/")
    summary = page.get_by_test_id("pr-summary")
    expect(summary).to_contain_text("Average precision")
    expect(summary).to_contain_text("all 10 test predictions")
    assert float(summary.get_attribute("data-ap")) == pytest.approx(expected_ap(0))
    note = page.get_by_test_id("hist-note")
    expect(note).to_have_attribute("data-correct", "3")
    expect(note).to_have_attribute("data-wrong", "1")
    assert page.locator("[data-testid=pr-chart] polyline").count() == 1
    bars = page.locator("[data-testid=hist-chart] rect.bar[data-series=wrong]")
    assert sum(int(c) for c in (bars.nth(i).get_attribute("data-count") for i in range(bars.count()))) == 1

    page.get_by_test_id("pr-label").select_option(label="round")
    expect(summary).to_contain_text("3 round images")
    assert float(summary.get_attribute("data-ap")) == pytest.approx(expected_ap(1))
    expect(note).to_have_attribute("data-correct", "2")  # round predicted: .88 .66 right, .95 .60 wrong
    expect(note).to_have_attribute("data-wrong", "2")
    shot(page.get_by_test_id("pr-curves"), "dashboard-pr-curve")
    page.get_by_test_id("hist-of").select_option("all")
    expect(note).to_have_attribute("data-correct", "6")
    expect(note).to_have_attribute("data-wrong", "4")
    shot(page.get_by_test_id("hist-chart"), "dashboard-confidence-histogram")
