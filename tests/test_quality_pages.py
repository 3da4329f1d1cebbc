"""The runs and quality pages and their API: who may open them, and that they show the
numbers of known data (the two runs of tests/test_quality.py).

Roles: run list, start form, progress, dashboard, confusion, FN/FP grids, F1 over runs and
the quality API are for scientists and admins; annotators get 403 (they retag from the
image page, where the prediction panel is shown to scientists and admins only).
"""
from __future__ import annotations

import json
import re

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from labeling.models import Label, TrainingRun
from tests.test_quality import RUN2_TEST, make_run, two_runs  # noqa: F401 - the fixture

pytestmark = pytest.mark.django_db


def client_for(user) -> Client:
    c = Client()
    if user is not None:
        c.force_login(user)
    return c


def page_urls(w) -> list[str]:
    run, lb = w["run2"], w["labels"]
    slug = w["project"].slug
    return [f"/p/{slug}/runs/", f"/p/{slug}/runs/new/", f"/p/{slug}/runs/f1/", f"/runs/{run.id}/",
            f"/runs/{run.id}/progress/", f"/runs/{run.id}/confusion/",
            f"/runs/{run.id}/images/?kind=fn&label={lb[0].id}"]


def api_urls(w) -> list[str]:
    run, lb = w["run2"], w["labels"]
    return [f"/api/runs/{run.id}/dashboard/", f"/api/runs/{run.id}/confusion/",
            f"/api/runs/{run.id}/false-negatives/?label={lb[0].id}", f"/api/runs/{run.id}/false-positives/?label={lb[1].id}",
            f"/api/runs/{run.id}/confusion-cell/?given={lb[0].id}&predicted={lb[1].id}",
            f"/api/tasks/{w['task'].id}/f1-series/", f"/api/images/{w['test'][0].id}/predictions/",
            f"/api/runs/{run.id}/progress/"]


# --- who may open what ------------------------------------------------------------------

def test_annotators_get_403_scientists_and_admins_the_pages(two_runs, annotator, scientist, admin_user):
    anonymous = Client()
    for url in page_urls(two_runs):
        assert anonymous.get(url).status_code == 302, url
        assert client_for(annotator).get(url).status_code == 403, url
        assert client_for(scientist).get(url).status_code == 200, url
        assert client_for(admin_user).get(url).status_code == 200, url
    run = two_runs["run2"]
    for action in ("cancel", "retrain"):
        assert client_for(annotator).post(f"/runs/{run.id}/{action}/").status_code == 403
    assert client_for(scientist).get(f"/runs/{run.id}/retrain/").status_code == 405


def test_quality_api_is_for_scientists_and_admins(two_runs, annotator, scientist, admin_user, api_client_for):
    for url in api_urls(two_runs):
        assert api_client_for(None).get(url).status_code in (401, 403), url
        assert api_client_for(annotator).get(url).status_code == 403, url
        assert api_client_for(scientist).get(url).status_code == 200, url
        assert api_client_for(admin_user).get(url).status_code == 200, url
        assert api_client_for(admin_user).post(url, {}).status_code == 405, url


def test_nav_shows_runs_to_scientists_only(two_runs, annotator, scientist):
    url = f"/p/{two_runs['project'].slug}/"
    assert "Runs &amp; quality" in client_for(scientist).get(url).content.decode()
    assert "Runs &amp; quality" not in client_for(annotator).get(url).content.decode()


# --- the numbers ------------------------------------------------------------------------------

def row_of(html: str, label: str) -> str:
    m = re.search(rf'<tr data-label="{re.escape(label)}".*?</tr>', html, re.S)
    assert m, label
    return m.group(0)


def test_dashboard_shows_per_class_numbers_deltas_and_retags(two_runs, scientist):
    run1, run2 = two_runs["run1"], two_runs["run2"]
    html = client_for(scientist).get(f"/runs/{run2.id}/").content.decode()
    assert f"Run {run2.id}" in html
    assert re.search(r'data-testid="retags">2<', html)
    assert f'href="/runs/{run1.id}/"' in html  # compared with run 1
    v = row_of(html, "v-neck")
    assert 'data-testid="f1">0.600<' in v
    assert '<span class="delta up" data-delta="0.100000">+0.100</span>' in v  # F1 .5 -> .6
    assert '<span class="v">0.750</span><span class="delta down" data-delta="-0.250000">-0.250</span>' in v  # precision
    assert re.search(r'data-testid="fn-link">3<', v) and re.search(r'data-testid="fp-link">1<', v)
    r = row_of(html, "round")
    assert 'data-testid="f1">0.571<' in r and 'class="delta down" data-delta="-0.178571">-0.179<' in r
    assert html.index('data-label="v-neck"') < html.index('data-label="round"') < html.index('data-label="square"')
    macro = (.6 + 4 / 7 + 2 / 3) / 3
    assert f'<div class="n">{macro:.3f}</div>' in html  # test macro-F1 card
    # The train split.
    html = client_for(scientist).get(f"/runs/{run2.id}/?split=train").content.decode()
    assert 'data-testid="f1">1.000<' in row_of(html, "v-neck")
    assert client_for(scientist).get(f"/runs/{run2.id}/?split=val").status_code == 404


def test_first_run_dashboard_says_there_is_nothing_to_compare(two_runs, scientist):
    html = client_for(scientist).get(f"/runs/{two_runs['run1'].id}/").content.decode()
    assert "first finished run of neckline" in html
    assert 'class="delta up"' not in row_of(html, "v-neck")


def test_dashboard_and_confusion_never_read_predictions(two_runs, scientist):
    """O(classes): the pages read the run's metrics JSON and ClassMetric rows only."""
    c = client_for(scientist)
    run = two_runs["run2"]
    for url in (f"/runs/{run.id}/", f"/runs/{run.id}/confusion/", f"/api/runs/{run.id}/dashboard/",
                f"/api/runs/{run.id}/confusion/", f"/api/tasks/{two_runs['task'].id}/f1-series/"):
        with CaptureQueriesContext(connection) as ctx:
            assert c.get(url).status_code == 200
        assert not [q for q in ctx.captured_queries if "labeling_prediction" in q["sql"]], url


def test_confusion_page_links_each_cell_to_its_images(two_runs, scientist):
    run, lb = two_runs["run2"], two_runs["labels"]
    html = client_for(scientist).get(f"/runs/{run.id}/confusion/").content.decode()
    cells = dict(((g, p), int(n)) for g, p, n in re.findall(
        r'data-given="([^"]+)" data-predicted="([^"]+)" data-count="(\d+)"', html))
    assert cells[("v-neck", "v-neck")] == 3 and cells[("v-neck", "round")] == 2 and cells[("round", "v-neck")] == 1
    assert cells[("square", "v-neck")] == 0
    assert f'/runs/{run.id}/images/?kind=cell&amp;given={lb[0].id}&amp;predicted={lb[1].id}&amp;split=test' in html
    assert 'data-testid="cm-total">10<' in html


def test_false_negative_grid_in_confidence_order_with_the_label_today(two_runs, scientist):
    run, lb, test = two_runs["run2"], two_runs["labels"], two_runs["test"]
    html = client_for(scientist).get(f"/runs/{run.id}/images/?kind=fn&label={lb[0].id}").content.decode()
    assert "False negatives of v-neck" in html
    ids = [int(i) for i in re.findall(r'<li class="pcell[^"]*"[^>]*data-image="(\d+)"', html)]
    assert ids == [test[3].id, test[5].id, test[4].id]
    assert re.findall(r'class="conf-tag"[^>]*>(\d+%)<', html) == ["95%", "75%", "60%"]
    # The version each cell posts with a retag is the annotation's version now.
    versions = dict((int(i), int(v)) for i, v in re.findall(r'data-image="(\d+)" data-version="(\d+)"', html))
    assert versions == {test[3].id: 1, test[5].id: 2, test[4].id: 2}
    assert f'data-retag-url="/api/images/{test[3].id}/retag/"' in html
    # Keys 1.. pick labels in the task's order.
    assert re.findall(r'data-label-name="([^"]+)" data-key="([^"]+)"><kbd>\2</kbd>', html) == [("v-neck", "1"), ("round", "2"), ("square", "3")]
    # A confusion cell and false positives.
    html = client_for(scientist).get(f"/runs/{run.id}/images/?kind=cell&given={lb[1].id}&predicted={lb[0].id}").content.decode()
    assert "Given round, predicted v-neck" in html and html.count('<li class="pcell') == 1
    html = client_for(scientist).get(f"/runs/{run.id}/images/?kind=fp&label={lb[1].id}").content.decode()
    assert "False positives of round" in html and html.count('<li class="pcell') == 2
    assert client_for(scientist).get(f"/runs/{run.id}/images/?kind=fn&label=999999").status_code == 404


def test_grid_pages_by_cursor(two_runs, scientist, monkeypatch):
    from labeling.services import quality

    run, lb = two_runs["run2"], two_runs["labels"]
    c = client_for(scientist)
    first = c.get(f"/api/runs/{run.id}/false-negatives/", {"label": lb[0].id, "page_size": 2}).json()
    assert first["count"] == 3 and len(first["results"]) == 2 and first["previous"] is None
    second = c.get(f"/api/runs/{run.id}/false-negatives/", {"label": lb[0].id, "page_size": 2,
                                                           "after": first["next"]}).json()
    assert [r["confidence"] for r in second["results"]] == [.6] and second["next"] is None
    back = c.get(f"/api/runs/{run.id}/false-negatives/", {"label": lb[0].id, "page_size": 2,
                                                         "before": second["previous"]}).json()
    assert back["results"] == first["results"]
    assert c.get(f"/api/runs/{run.id}/false-negatives/", {"label": lb[0].id, "after": "x"}).status_code == 400
    # The page's Next link carries the same cursor.
    monkeypatch.setattr(quality.grids, "PAGE_SIZE", 2)
    html = c.get(f"/runs/{run.id}/images/?kind=fn&label={lb[0].id}").content.decode()
    assert html.count('<li class="pcell') == 2
    assert f'rel="next" data-testid="next-page" href="?kind=fn&amp;label={lb[0].id}&amp;split=test&amp;after=' in html


def test_api_numbers_match_the_pages(two_runs, scientist, api_client_for):
    from labeling.services import quality

    api = api_client_for(scientist)
    run = two_runs["run2"]
    data = api.get(f"/api/runs/{run.id}/dashboard/").json()
    assert data == json.loads(json.dumps(quality.dashboard(run)))
    assert data["retags_since_previous"] == 2
    v = next(c for c in data["splits"]["test"]["classes"] if c["name"] == "v-neck")
    assert v["f1"] == pytest.approx(.6) and v["delta"]["f1"] == pytest.approx(.1)
    cm = api.get(f"/api/runs/{run.id}/confusion/", {"split": "test"}).json()
    assert cm["matrix"] == [[3, 2, 1], [1, 2, 0], [0, 0, 1]]
    assert api.get(f"/api/runs/{run.id}/confusion/", {"split": "nope"}).status_code == 400
    series = api.get(f"/api/tasks/{two_runs['task'].id}/f1-series/").json()
    assert [r["id"] for r in series["runs"]] == [two_runs["run1"].id, run.id]
    preds = api.get(f"/api/images/{two_runs['test'][3].id}/predictions/").json()
    assert preds["tasks"][0]["prediction"]["predicted_name"] == "round"


def test_image_page_shows_predictions_to_scientists(two_runs, scientist, annotator):
    image = two_runs["test"][3]
    html = client_for(scientist).get(f"/images/{image.id}/").content.decode()
    panel = re.search(r'data-testid="predictions".*?</section>', html, re.S).group(0)
    assert "neckline" in panel and "disagrees" in panel
    assert re.findall(r'<span class="name[^"]*"[^>]*>([^<]+)</span>', panel) == ["round", "v-neck", "square"]
    assert ">95%<" in panel and ">2%<" in panel
    assert 'data-testid="predictions"' not in client_for(annotator).get(f"/images/{image.id}/").content.decode()


def test_f1_page_and_run_list(two_runs, scientist):
    c = client_for(scientist)
    html = c.get(f"/p/{two_runs['project'].slug}/runs/f1/?task={two_runs['task'].id}").content.decode()
    data = json.loads(re.search(r'<script id="f1-series" type="application/json">(.*?)</script>', html, re.S).group(1))
    assert [r["id"] for r in data["runs"]] == [two_runs["run1"].id, two_runs["run2"].id]
    html = c.get(f"/p/{two_runs['project'].slug}/runs/").content.decode()
    rows = re.findall(r'<tr data-run="(\d+)">', html)
    assert rows == [str(two_runs["run2"].id), str(two_runs["run1"].id)]
    assert "0.613" in html  # run 2's test macro-F1
    assert two_runs["run2"].created_by.username in html


def test_label_names_are_escaped(two_runs, scientist):
    xss = "<script>alert(1)</script>"
    Label.objects.filter(id=two_runs["labels"][0].id).update(name=xss)
    run = two_runs["run2"]
    c = client_for(scientist)
    for url in (f"/runs/{run.id}/", f"/runs/{run.id}/confusion/",
                f"/runs/{run.id}/images/?kind=fn&label={two_runs['labels'][0].id}",
                f"/images/{two_runs['test'][3].id}/"):
        html = c.get(url).content.decode()
        assert xss not in html and "&lt;script&gt;" in html, url


# --- starting, cancelling, retraining ----------------------------------------------------------------

def test_start_form_shows_validation_errors(two_runs, scientist):
    c = client_for(scientist)
    url = f"/p/{two_runs['project'].slug}/runs/new/"
    base = {"task": two_runs["task"].id, "arch": "resnet18", "epochs": 2, "batch_size": 8, "class_weights": "inverse",
            "image_size": 32}
    r = c.post(url, {**base, "epochs": 0})
    assert r.status_code == 200 and "Ensure this value is greater than or equal to 1." in r.content.decode()
    r = c.post(url, {**base, "weights": "NO_SUCH_WEIGHTS_V9"})
    html = r.content.decode()
    assert r.status_code == 200 and "has-error" in html
    assert TrainingRun.objects.count() == 2


def test_start_cancel_and_retrain_from_the_pages(two_runs, scientist, django_capture_on_commit_callbacks):
    c = client_for(scientist)
    url = f"/p/{two_runs['project'].slug}/runs/new/"
    r = c.post(url, {"task": two_runs["task"].id, "arch": "resnet18", "epochs": 2, "batch_size": 8,
                     "class_weights": "none", "image_size": 32, "small_input": "on"})
    assert r.status_code == 302
    run = TrainingRun.objects.order_by("-id").first()
    assert r["Location"] == f"/runs/{run.id}/progress/"
    assert run.state == "queued" and run.created_by == scientist
    assert run.config["epochs"] == 2 and run.config["small_input"] is True and run.config["class_weights"] == "none"
    assert f'data-status-url="/api/runs/{run.id}/progress/"' in c.get(f"/runs/{run.id}/progress/").content.decode()
    status = c.get(f"/api/runs/{run.id}/progress/").json()  # what static/runs_progress.js polls
    assert status["state"] == "queued" and status["finished"] is False and {"overall", "loss_curve"} <= set(status)
    assert c.get(f"/runs/{run.id}/").status_code == 302  # no dashboard before it is done

    r = c.post(f"/runs/{run.id}/cancel/")
    assert r.status_code == 302
    run.refresh_from_db()
    assert run.state == "cancelled"
    r = c.post(f"/runs/{run.id}/cancel/", follow=True)
    assert "cannot be cancelled" in r.content.decode()

    r = c.post(f"/runs/{two_runs['run2'].id}/retrain/")
    new = TrainingRun.objects.order_by("-id").first()
    assert r.status_code == 302 and r["Location"] == f"/runs/{new.id}/progress/"
    assert new.parent_id == two_runs["run2"].id and new.state == "queued"


def test_progress_page_shows_the_failure_reason(two_runs, scientist):
    task = two_runs["task"]
    run = TrainingRun.objects.create(project=task.project, task=task, state="failed",
                                     state_reason="RuntimeError: CUDA out of memory")
    html = client_for(scientist).get(f"/runs/{run.id}/progress/").content.decode()
    assert "CUDA out of memory" in html
    assert re.search(r'<div class="failure" id="failure" role="alert"\s+data-testid="failure">', html)


def test_quality_api_has_no_schema_warnings(tmp_path, capsys):
    from django.core.management import call_command
    from drf_spectacular.drainage import GENERATOR_STATS

    GENERATOR_STATS.reset()
    out = tmp_path / "schema.yaml"
    call_command("spectacular", "--validate", "--file", str(out))
    problems = [line for line in capsys.readouterr().err.splitlines()
                if ("Warning [" in line or "Error [" in line) and "api/quality.py" in line]
    assert problems == []
    text = out.read_text()
    for path in ("/api/runs/{run_id}/dashboard/", "/api/runs/{run_id}/confusion/",
                 "/api/runs/{run_id}/false-negatives/", "/api/tasks/{task_id}/f1-series/",
                 "/api/images/{image_id}/predictions/"):
        assert path in text, path
