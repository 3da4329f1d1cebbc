"""Fuzzing the API from its own OpenAPI schema (issue 11, item 5): no request may answer 500.

schemathesis generates valid and invalid requests (wrong types, missing fields, huge
numbers, NUL bytes ...) for every operation the schema documents, and each is sent as
every role (anonymous, annotator, scientist, admin) through the WSGI app, with the ids
in the path both as generated and pointing at real objects. Anything but a 5xx passes:
a 400, 403, 404 or 409 is the API saying no. A route under /api/ that the schema does
not document fails :func:`test_every_api_route_is_in_the_schema`, so a new route cannot
hide from the fuzzer.

Kept small (a few examples per operation, no shrinking) to run in a couple of minutes.
"""
from __future__ import annotations

import re

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from django.test import Client
from drf_spectacular.generators import SchemaGenerator
from hypothesis import HealthCheck, settings

from tests.fuzz_world import ROLES, api_routes, build_world

EXAMPLES = 6


def _schema() -> dict:
    return SchemaGenerator().get_schema(request=None, public=True)


schema = schemathesis.openapi.from_dict(_schema())
schema.config.generation.update(modes=["positive", "negative"], max_examples=EXAMPLES, no_shrink=True,
                                deterministic=True, allow_x00=True)

CSRF = "fuzzfuzzfuzzfuzzfuzzfuzzfuzzfuzz"  # 32 characters: Django takes it as the cookie's secret


@pytest.fixture
def wsgi_app(db):
    """The WSGI app inside the test's transaction: like Django's test client, do not close
    the connection at the end of each request."""
    from django.core.wsgi import get_wsgi_application

    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield get_wsgi_application()
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def world(wsgi_app, make_user, tmp_path):
    return build_world(make_user, tmp_path)


def _cookies(user) -> dict:
    cookies = {"csrftoken": CSRF}
    if user is not None:
        client = Client()
        client.force_login(user)
        cookies["sessionid"] = client.cookies["sessionid"].value
    return cookies


def _real_path_parameters(case, world) -> dict | None:
    """The case's path parameters pointing at the world's objects (None when it has none)."""
    if not case.path_parameters:
        return None
    path = case.operation.path
    values = {}
    for name in case.path_parameters:
        values[name] = world.id_for(path, name)
    return values


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_no_api_request_answers_500(case, wsgi_app, world):
    headers = {"X-CSRFToken": CSRF, "Host": "testserver"}
    variants = [dict(case.path_parameters or {})]
    real = _real_path_parameters(case, world)
    if real is not None:
        variants.append(real)
    for role in ROLES:
        cookies = _cookies(world.users[role])
        for params in variants:
            case.path_parameters = params
            response = case.call(app=wsgi_app, headers=headers, cookies=cookies)
            assert response.status_code < 500, (
                f"{role}: {case.method} {case.formatted_path} answered {response.status_code}\n"
                f"{case.as_curl_command()}\n{response.text[:2000]}")


def test_every_api_route_is_in_the_schema():
    """Each URL pattern under /api/ is documented (and so fuzzed), or named here with why not."""
    documented = set(_schema()["paths"])
    undocumented = {
        "/api/": "the router's index page (links only, no input)",
        "/api/schema/": "the schema itself",
        "/api/docs/": "Swagger UI's page",
    }
    missing = []
    for route in api_routes():
        openapi = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", route)
        if openapi.endswith(r"\.(?P<format>[a-z0-9]+)/?$") or "(?P<format>" in openapi:
            continue  # DRF's format-suffix twins of documented routes
        if openapi not in documented and openapi not in undocumented:
            missing.append(openapi)
    assert missing == []
