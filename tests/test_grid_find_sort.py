"""Find and sort in the project grid (services.browse) on the known runs of
tests/test_quality.py: search by part of the key, sort by the latest finished run's
confidence, by the latest suspects run's score, by the date of last change, each way,
paged by key forward and back; bad sorts and cursors are ignored, not a 500."""
from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from labeling.models import Annotation, Suspect, SuspectRun
from labeling.services import browse
from tests.test_quality import RUN2_TEST, two_runs  # noqa: F401 - the fixture

pytestmark = pytest.mark.django_db

RUN2_TRAIN = [.9, .8, .7, .6]


def walk(f, size):
    """Every page forward, then every page back from the last one: the keys in order, twice."""
    forward, after, pages = [], None, []
    while True:
        page = browse.grid_page(f, after=after, size=size)
        pages.append([c.image.key for c in page.cells])
        forward += pages[-1]
        if page.next_after is None:
            break
        after = page.next_after
    back, before = [], page.prev_before
    while before is not None:
        page = browse.grid_page(f, before=before, size=size)
        back = [c.image.key for c in page.cells] + back
        before = page.prev_before
    assert back == forward[:len(forward) - len(pages[-1])]
    return forward


def expected_by_confidence(w, descending):
    rows = [(conf, im.id, im.key) for (_, _, conf), im in zip(RUN2_TEST, w["test"])]
    rows += [(conf, im.id, im.key) for conf, im in zip(RUN2_TRAIN, w["train"])]
    return [k for _, _, k in sorted(rows, reverse=descending)]


def test_search_finds_keys_by_part_in_any_case(two_runs):
    f = browse.parse_filter(two_runs["project"], {"q": "TEST/0"})
    assert [c.image.key for c in browse.grid_page(f).cells] == [f"test/{i:02d}.jpg" for i in range(10)]
    f = browse.parse_filter(two_runs["project"], {"q": "03.jp", "split": "train"})
    assert [c.image.key for c in browse.grid_page(f).cells] == ["train/03.jpg"]
    assert browse.parse_filter(two_runs["project"], {"q": "x" * 500}).search == "x" * browse.SEARCH_MAX


@pytest.mark.parametrize("descending", [True, False])
def test_sort_by_confidence_of_the_latest_run_pages_both_ways(two_runs, descending):
    sort = ("-" if descending else "") + "confidence"
    f = browse.parse_filter(two_runs["project"], {"sort": sort})
    assert walk(f, size=3) == expected_by_confidence(two_runs, descending)
    first = browse.grid_page(f, size=3)
    assert [c.sort_value for c in first.cells] == sorted(
        [c for _, _, c in RUN2_TEST] + RUN2_TRAIN, reverse=descending)[:3]


def test_sort_with_search_and_split(two_runs):
    f = browse.parse_filter(two_runs["project"], {"sort": "-confidence", "split": "train", "q": "train/0"})
    assert walk(f, size=1) == [f"train/{i:02d}.jpg" for i in range(4)]  # .9 .8 .7 .6


def test_sort_by_suspect_score_keeps_the_images_with_one(two_runs):
    w = two_runs
    sr = SuspectRun.objects.create(project=w["project"], task=w["task"], run=w["run2"],
                                   state=SuspectRun.State.DONE, finished_at=timezone.now())
    scores = {3: .9, 4: .5, 8: .7, 5: .5}
    Suspect.objects.bulk_create([Suspect(suspect_run=sr, image=w["test"][i], task=w["task"], score=s)
                                 for i, s in scores.items()])
    f = browse.parse_filter(w["project"], {"sort": "-suspect"})
    assert walk(f, size=2) == ["test/03.jpg", "test/08.jpg", "test/05.jpg", "test/04.jpg"]
    f = browse.parse_filter(w["project"], {"sort": "suspect"})
    assert walk(f, size=3) == ["test/04.jpg", "test/05.jpg", "test/08.jpg", "test/03.jpg"]


def test_sort_by_last_change(two_runs):
    w = two_runs
    base = timezone.now() - timedelta(days=30)
    images = w["test"] + w["train"]
    for n, im in enumerate(images):  # test/00 oldest ... train/03 newest, then touch one
        Annotation.objects.filter(image=im, task=w["task"]).update(updated_at=base + timedelta(hours=n))
    Annotation.objects.filter(image=w["test"][2], task=w["task"]).update(updated_at=timezone.now())
    keys = [im.key for im in images]
    newest = ["test/02.jpg"] + [k for k in reversed(keys) if k != "test/02.jpg"]
    assert walk(browse.parse_filter(w["project"], {"sort": "-changed"}), size=4) == newest
    assert walk(browse.parse_filter(w["project"], {"sort": "changed"}), size=5) == newest[::-1]


def test_unknown_sort_or_cursor_is_ignored_and_a_sort_without_a_run_is_said(two_runs, scientist):
    w = two_runs
    assert browse.parse_filter(w["project"], {"sort": "-price"}).sort is None
    f = browse.parse_filter(w["project"], {"sort": "-confidence"})
    assert browse.grid_page(f, after="garbage", size=3).cells == browse.grid_page(f, size=3).cells
    no_suspects = browse.grid_page(browse.parse_filter(w["project"], {"sort": "-suspect"}), size=3)
    assert "no finished suspects run" in no_suspects.note
    assert [c.image.key for c in no_suspects.cells] == ["test/00.jpg", "test/01.jpg", "test/02.jpg"]
    c = Client()
    c.force_login(scientist)
    slug = w["project"].slug
    for qs in ("sort=-suspect", "sort=confidence&after=1.5~x", "sort=-changed&before=yesterday~3", "q=%00", "q=a%00b&sort=-confidence",
               "sort=confidence&after=nan~1", "sort=changed&after=2026-13-01~1"):
        assert c.get(f"/p/{slug}/?{qs}").status_code == 200, qs


def test_api_search_is_the_same_rule(two_runs, scientist, api_client_for):
    api = api_client_for(scientist)
    project = two_runs["project"]
    body = api.get("/api/images/", {"project": project.id, "search": "TRAIN/0"}).json()
    assert sorted(r["key"] for r in body["results"]) == [f"train/{i:02d}.jpg" for i in range(4)]
    assert api.get("/api/images/", {"project": project.id, "search": "a\x00b"}).status_code == 400  # told, not a 500


def test_a_set_larger_than_the_sort_limit_is_not_sorted_and_says_so(two_runs, monkeypatch):
    monkeypatch.setattr(browse.grid, "SORT_LIMIT", 5)
    w = two_runs
    page = browse.grid_page(browse.parse_filter(w["project"], {"sort": "-confidence"}), size=3)
    assert "14 images are more than the 5 a grid sorts" in page.note
    assert [c.image.key for c in page.cells] == ["test/00.jpg", "test/01.jpg", "test/02.jpg"]
    narrow = browse.parse_filter(w["project"], {"sort": "-confidence", "split": "train"})  # 4 images
    assert walk(narrow, size=3) == [f"train/{i:02d}.jpg" for i in range(4)]


def test_the_grid_says_its_order(two_runs, scientist):
    c = Client()
    c.force_login(scientist)
    html = c.get(f"/p/{two_runs['project'].slug}/?sort=-changed").content.decode()
    assert "by last change, newest first" in html
    assert '<option value="-changed" selected>last change, newest first</option>' in html
