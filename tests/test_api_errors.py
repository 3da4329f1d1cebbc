"""Errors a client sees under /api/: every one is JSON with a ``detail`` saying what is
wrong, also those raised before DRF runs (Django's body limits, a path no route matches)."""
from __future__ import annotations

import json

import pytest
from django.test import Client


pytestmark = pytest.mark.django_db


@pytest.fixture
def api(make_user):
    client = Client(raise_request_exception=False)
    client.force_login(make_user("annotator"))
    return client


def test_a_body_over_the_limit_is_json_and_says_the_limit(api, settings):
    items = [{"image": i, "expected_version": 1} for i in range(1, 100_001)]
    r = api.post("/api/retag/bulk/", json.dumps({"task": 1, "label": None, "items": items}),
                 content_type="application/json")
    assert r.status_code == 400 and r["Content-Type"] == "application/json", r.content[:200]
    mb = settings.DATA_UPLOAD_MAX_MEMORY_SIZE / 2**20
    assert r.json()["detail"].startswith(f"the body is larger than {mb:g} MB"), r.json()


def test_too_many_items_under_the_body_limit_is_a_field_error(api):
    items = [{"image": i, "expected_version": 1} for i in range(1, 1_002)]
    r = api.post("/api/retag/bulk/", {"task": 1, "label": None, "items": items}, content_type="application/json")
    assert r.status_code == 400 and "1000" in json.dumps(r.json()), r.json()


@pytest.mark.parametrize("path", ["/api/images/99999999999999999999/", "/api/no-such-thing/"])
def test_a_path_no_route_matches_is_a_json_404(api, path):
    r = api.get(path)
    assert r.status_code == 404 and r["Content-Type"] == "application/json"
    assert path in r.json()["detail"]


def test_pages_keep_their_html_404(api):
    r = api.get("/no-such-page/")
    assert r.status_code == 404 and "application/json" not in r["Content-Type"]
