"""Fuzzing the API from its own OpenAPI schema (issue 11, item 5): no request may answer 500.

schemathesis generates valid and invalid requests (wrong types, missing fields, huge
numbers, NUL bytes ...) for every operation the schema documents, and each is sent as
every role (anonymous, annotator, scientist, admin; past each operation's first
cases only the annotator and the admin) through the WSGI app, with the ids
in the path pointing at real objects (and, for the admin, as generated). Anything but a 5xx passes:
a 400, 403, 404 or 409 is the API saying no. A route under /api/ that the schema does
not document fails :func:`test_every_api_route_is_in_the_schema`, so a new route cannot
hide from the fuzzer.

Kept small (a few examples per operation, no shrinking) to run in a couple of minutes.
"""
from __future__ import annotations

import collections

import pytest
import schemathesis
import werkzeug
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from django.test import Client
from drf_spectacular.generators import SchemaGenerator
from hypothesis import HealthCheck, settings

from tests.fuzz_world import ROLES, api_routes, build_world, is_format_suffix, normalize

EXAMPLES = 3
# Every case is sent as the annotator (the least a signed-in user may do) and as the admin
# (whom no role gate stops, so the body is read all the way). The anonymous user, refused
# before a body is read, and the scientist, who passes the gates the admin passes save the
# admin's own, get each operation's first SAMPLED cases: the coverage phase sends hundreds of
# bodies to an operation with many fields, and each would tell them nothing new.
SAMPLED = 4
_sent: collections.Counter = collections.Counter()


def _schema() -> dict:
    return SchemaGenerator().get_schema(request=None, public=True)


SCHEMA = _schema()
schema = schemathesis.openapi.from_dict(SCHEMA)
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
def world(wsgi_app, make_user, tmp_path, settings, monkeypatch):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # sessions here, not passwords
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # MTurk calls fail at once, offline
    world = build_world(make_user, tmp_path)
    world.cookies = {role: _cookies(user) for role, user in world.users.items()}
    return world


def _cookies(user) -> dict:
    """``call()``'s arguments for a session of ``user`` (none for anonymous): its cookie,
    and a CSRF cookie that the header repeats. (The WSGI client sets cookies for
    localhost, which ALLOWED_HOSTS holds; a Host header of another name would lose them.)"""
    cookies = {"csrftoken": CSRF}
    if user is not None:
        client = Client()
        client.force_login(user)
        cookies["sessionid"] = client.cookies["sessionid"].value
    return {"headers": {"X-CSRFToken": CSRF}, "cookies": cookies}


def _real_path_parameters(case, world) -> dict | None:
    """The case's path parameters pointing at the world's objects (None when it has none)."""
    if not case.path_parameters:
        return None
    path = case.operation.path
    values = {}
    for name in case.path_parameters:
        values[name] = world.id_for(path, name)
    return values


def _server_error(case, code: int) -> bool:
    """A 500, or another 5xx the operation does not document (a 502 "MTurk unreachable" is
    an answer: the upstream failed, not our code)."""
    # (Negative cases also use verbs the operation does not have, TRACE and the like.)
    documented = SCHEMA["paths"].get(case.operation.path, {}).get(case.method.lower(), {}).get("responses", {})
    return code == 500 or (code >= 500 and str(code) not in documented)


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_no_api_request_answers_500(case, wsgi_app, world):
    generated = dict(case.path_parameters or {})
    real = _real_path_parameters(case, world)
    operation = f"{case.method} {case.operation.path}"
    _sent[operation] += 1
    for role in ROLES if _sent[operation] <= SAMPLED else ("annotator", "admin"):
        auth = world.cookies[role]
        # Every role with real ids (past the 404s, into the parsing); the admin, whom no
        # role gate stops, with the generated ids too.
        variants = [real if real is not None else generated] + ([generated] if role == "admin" and real else [])
        for params in variants:
            case.path_parameters = params
            # A fresh WSGI client each call: a cookie one role's answer set must not ride along
            # with the next role's request.
            response = case.call(app=wsgi_app, session=werkzeug.Client(wsgi_app), **auth)
            if _server_error(case, response.status_code):
                message = (f"{role}: {case.method} {case.formatted_path} answered {response.status_code}\n"
                           f"{case.as_curl_command()}\n{response.text[:2000]}")
                print(message, flush=True)  # seen at once with -s; the assert reports it at the end
                raise AssertionError(message)


def test_every_api_route_is_in_the_schema():
    """Each URL pattern under /api/ is documented (and so fuzzed), or named here with why not."""
    documented = set(SCHEMA["paths"])
    undocumented = {
        "/api/": "the router's index page (links only, no input)",
        "/api/schema/": "the schema itself",
        "/api/docs/": "Swagger UI's page",
    }
    undocumented["/api/mturk/"] = "the MTurk router's index page (links only)"
    routes = [normalize(r) for r in api_routes() if not is_format_suffix(r)]
    missing = [r for r in routes if r not in documented and r not in undocumented]
    assert missing == []
    assert len(documented) >= 50


def test_the_fuzzer_gets_past_authentication(wsgi_app, world):
    """The session and CSRF cookies work: the admin is let in (a fuzzer that only ever
    got 403 would find nothing), the anonymous user is not."""
    op = schema["/api/projects/"]["POST"]
    case = op.Case(body={"name": "Fuzzed"}, media_type="application/json")
    r = case.call(app=wsgi_app, session=werkzeug.Client(wsgi_app), **world.cookies["admin"])
    assert r.status_code == 201, r.text
    assert case.call(app=wsgi_app, session=werkzeug.Client(wsgi_app), **world.cookies["annotator"]).status_code == 403
    assert case.call(app=wsgi_app, session=werkzeug.Client(wsgi_app),
                     **world.cookies["anonymous"]).status_code in (401, 403)


def _forged(text: str) -> str:
    import base64

    return base64.b64encode(text.encode()).decode()


@pytest.mark.parametrize("url", ["/api/images/", "/api/annotations/", "/api/events/", "/api/imports/",
                                 "/api/runs/", "/api/mturk/batches/"])
@pytest.mark.parametrize("cursor", ["p=abc", "p=1e400", "p=99999999999999999999999", "p=-5&r=1", "p=\x00",
                                    "p=2026-13-45T99:99", "o=-1&p=1"])
def test_a_forged_cursor_is_a_404_not_a_500(url, cursor, world):
    """A cursor is base64 of ``p=<position>``: anyone can write one; the position is checked."""
    client = Client(raise_request_exception=False)
    client.force_login(world.users["admin"])
    r = client.get(url, {"cursor": _forged(cursor)})
    assert r.status_code in (200, 404), (url, cursor, r.status_code, r.content[:300])
