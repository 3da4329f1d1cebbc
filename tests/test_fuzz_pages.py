"""A corpus of hostile inputs against every page URL pattern and page JSON endpoint
(issue 11, item 5): no response may be a 500, and no redirect may leave the site.

The URL patterns come from the resolver (tests/fuzz_world.py), so a new page is fuzzed
without anyone adding it here. Each pattern is called as an admin (the role that gets
past every gate, into the parsing) with:

- its path ids pointing at real objects, at none, and beyond the database's range;
- every hostile value in each query parameter the views read, by GET and by POST (form);
- hostile JSON bodies (a list where an object belongs, ``1e400``, NUL bytes, deep
  nesting, bytes that are not JSON).

The API has its own fuzzer (tests/test_fuzz_api.py); Django's admin is Django's.
"""
from __future__ import annotations

import re
from urllib.parse import urlencode, urlsplit

import pytest
from django.test import Client

from tests.fuzz_world import build_world, page_routes

pytestmark = pytest.mark.django_db

# Values that have crashed parsers: wrong types, numbers no column holds, NUL bytes,
# paths, markup, open redirects.
HOSTILE = ["x", "-1.5", "1e400", "99999999999999999999999", "a\x00b", "é" * 300, "https://evil.example/",
           "/\\evil.example/"]
# The names the pages read from a query or a form (a wrong one is ignored, never fatal).
PARAMS = ["task", "label", "split", "status", "after", "before", "kind", "given", "predicted", "page_size", "since",
          "k", "fold_epochs", "what", "next", "project", "corrupt_after", "missing_after", "action", "order", "move",
          "user", "role", "root", "uri", "note", "image", "reviewed", "final", "worker_id", "reason", "selection",
          "username", "password", "new_project", "source_uri", "image_ids", "gold_image_ids", "epochs", "lr",
          "batch_size", "arch", "weights", "image_size", "expected_version", "q", "sort", "view"]
JSON_BODIES = [b"[1, 2]", b"{", b"\xff\xfe", b"[" * 5000 + b"]" * 5000,
               b'{"task": 1e400, "label": 1e400, "expected_version": 1e400, "action": "accept"}',
               b'{"task": [1], "label": {"a": 1}, "expected_version": "1\\u0000", "action": ["accept"]}',
               b'{"task": 99999999999999999999999, "label": true, "expected_version": 99999999999999999999999}']
CONVERTER = re.compile(r"<(?:(\w+):)?(\w+)>")


def _paths(route: str, world) -> list[str]:
    """The route with its ids real, missing, and out of range."""
    names = [(conv or "str", name) for conv, name in CONVERTER.findall(route)]
    if not names:
        return [route]
    variants = [{name: world.id_for(route, name) for _, name in names},
                {name: (999999 if conv == "int" else "no-such-thing") for conv, name in names},
                {name: ("99999999999999999999999" if conv == "int" else "x" * 300) for conv, name in names}]
    return [CONVERTER.sub(lambda m: str(v[m.group(2)]), route) for v in variants]


def _local(response) -> bool:
    if not 300 <= response.status_code < 400:
        return True
    target = response["Location"]
    parts = urlsplit(target)
    # A path, absolute or relative, of this site: no scheme, no host, no "//" or "/\\" that
    # browsers read as another host.
    return not parts.scheme and not parts.netloc and not target.startswith(("//", "/\\", "\\"))


@pytest.fixture
def admin_client(make_user, tmp_path, monkeypatch, settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # users made per route
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # MTurk calls fail at once, offline
    world = build_world(make_user, tmp_path)
    client = Client(raise_request_exception=False)
    client.force_login(world.users["admin"])
    return client, world


def test_the_corpus_covers_every_page_route():
    routes = page_routes()
    assert len(routes) >= 40 and "/images/<int:image_id>/" in routes
    assert "/suspects/<int:sr_id>/clusters/retag" in routes


def _check(response, what: str, failures: list):
    if response.status_code >= 500:
        failures.append(f"{what} -> {response.status_code}: {response.content[:300]!r}")
    elif not _local(response):
        failures.append(f"{what} -> redirect off the site: {response['Location']}")


@pytest.mark.parametrize("route", page_routes())
def test_no_page_answers_500_to_hostile_input(route, admin_client):
    client, world = admin_client
    failures: list[str] = []
    for path in _paths(route, world):
        _check(client.get(path), f"GET {path}", failures)
    path = _paths(route, world)[0]
    for value in HOSTILE:
        params = {name: value for name in PARAMS}
        _check(client.get(path + "?" + urlencode(params)), f"GET {path} all params={value!r}", failures)
        _check(client.post(path, params), f"POST {path} form all={value!r}", failures)
    for body in JSON_BODIES:
        _check(client.post(path, body, content_type="application/json"), f"POST {path} json={body[:60]!r}",
               failures)
    assert failures == []
