"""Who may call what (issue 11, item 6): one table of every URL pattern and API route,
each verb with the lowest role that may use it, checked as anonymous, annotator,
scientist and admin.

The routes come from the URL resolver: a route without an entry here (or an entry
without a route) fails :func:`test_the_matrix_names_every_route`, so a new page or
API route must say who may call it. Let in means: not 401/403/405, not sent to the
login page, not a 5xx. Kept out means: anonymous is sent to the login page (pages) or
gets 401/403 (API); a signed-in user below the role gets 403.
"""
from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest
from django.test import Client

from tests.fuzz_world import ROLES, build_world, is_format_suffix, normalize, site_routes

pytestmark = pytest.mark.django_db

ANY, A, S, AD = "anonymous", "annotator", "scientist", "admin"
SU = "superuser"  # above every role: a role alone never gets there

# route (OpenAPI syntax) -> {verb: the lowest role that may}
MATRIX = {
    # sign in and out
    "/accounts/login/": {"GET": ANY, "POST": ANY},
    "/accounts/logout/": {"POST": ANY},
    # the collected static files (settings.SERVE_STATIC)
    "/static/{path}": {"GET": ANY},
    # browsing and retagging
    "/": {"GET": A},
    "/p/{slug}/": {"GET": A},
    "/p/{slug}/problems/": {"GET": A},
    "/p/{slug}/labels/": {"GET": AD, "POST": AD},
    "/images/{image_id}/": {"GET": A},
    "/images/{image_id}/original": {"GET": A},
    "/images/{image_id}/thumb.jpg": {"GET": A},
    # admin pages
    "/imports/": {"GET": AD, "POST": AD},
    "/imports/{job_id}/": {"GET": AD},
    "/manage/users/": {"GET": AD, "POST": AD},
    "/manage/storage-roots/": {"GET": AD, "POST": AD},
    # runs and quality
    "/p/{slug}/runs/": {"GET": S},
    "/p/{slug}/runs/new/": {"GET": S, "POST": S},
    "/p/{slug}/runs/f1/": {"GET": S},
    "/runs/{run_id}/": {"GET": S},
    "/runs/{run_id}/progress/": {"GET": S},
    "/runs/{run_id}/confusion/": {"GET": S},
    "/runs/{run_id}/map/": {"GET": S},
    "/runs/{run_id}/images/": {"GET": S},
    "/runs/{run_id}/cancel/": {"POST": S},
    "/runs/{run_id}/retrain/": {"POST": S},
    # suspects
    "/p/{slug}/suspects/": {"GET": A},
    "/runs/{run_id}/suspects/start/": {"GET": S, "POST": S},
    "/runs/{run_id}/suspects/estimate": {"GET": S},
    "/suspects/{sr_id}/": {"GET": A},
    "/suspects/{sr_id}/queue/": {"GET": A},
    "/suspects/{sr_id}/clusters/": {"GET": A},
    "/suspects/{sr_id}/clusters/retag": {"POST": A},
    "/suspects/{sr_id}/exclude": {"POST": S},
    "/suspects/{sr_id}/restore": {"POST": S},
    "/suspects/{sr_id}/duplicates/": {"GET": A},
    "/runs/{run_id}/cleaning/start": {"POST": S},
    "/cleaning/{job_id}/": {"GET": A},
    "/cleaning/{job_id}/restore": {"POST": S},
    # Mechanical Turk pages
    "/mturk/": {"GET": AD},
    "/mturk/new/": {"GET": AD, "POST": AD},
    "/mturk/workers/": {"GET": AD, "POST": AD},
    "/mturk/{batch_id}/": {"GET": AD},
    "/mturk/{batch_id}/send/": {"POST": AD},
    "/mturk/{batch_id}/sync/": {"POST": AD},
    "/mturk/{batch_id}/apply/": {"POST": AD},
    "/mturk/{batch_id}/export/": {"GET": AD},
    "/mturk/{batch_id}/import/": {"POST": AD},
    # MTurk workers have no login: the signed, expiring link is the permission.
    "/mturk/image/{token}/": {"GET": ANY},
    # the API
    "/api/": {"GET": A},
    "/api/schema/": {"GET": A},
    "/api/docs/": {"GET": A},
    "/api/projects/": {"GET": A, "POST": AD},
    "/api/projects/{id}/": {"GET": A, "PUT": AD, "PATCH": AD},
    "/api/projects/{id}/label-counts/": {"GET": A},
    "/api/tasks/": {"GET": A, "POST": AD},
    "/api/tasks/{id}/": {"GET": A, "PUT": AD, "PATCH": AD},
    "/api/tasks/{id}/reorder-labels/": {"POST": AD},
    "/api/labels/": {"GET": A, "POST": AD},
    "/api/labels/{id}/": {"GET": A, "PUT": AD, "PATCH": AD},
    "/api/images/": {"GET": A},
    "/api/images/{id}/": {"GET": A},
    "/api/images/{id}/retag/": {"POST": A},
    "/api/images/{id}/history/": {"GET": A},
    "/api/annotations/": {"GET": A},
    "/api/annotations/{id}/": {"GET": A},
    "/api/events/": {"GET": A},
    "/api/events/{id}/": {"GET": A},
    "/api/imports/": {"GET": AD, "POST": AD},
    "/api/imports/{id}/": {"GET": AD},
    "/api/storage-roots/": {"GET": AD, "POST": AD},
    "/api/storage-roots/{id}/": {"GET": AD, "DELETE": AD},
    "/api/runs/": {"GET": S, "POST": S},
    "/api/runs/default-config/": {"GET": S},
    "/api/runs/{id}/": {"GET": S},
    "/api/runs/{id}/cancel/": {"POST": S},
    "/api/runs/{id}/class-metrics/": {"GET": S},
    "/api/runs/{id}/progress/": {"GET": S},
    "/api/runs/{id}/retrain/": {"POST": S},
    "/api/runs/{run_id}/dashboard/": {"GET": S},
    "/api/runs/{run_id}/confusion/": {"GET": S},
    "/api/runs/{run_id}/map/": {"GET": S},
    "/api/retag/bulk/": {"POST": A},
    "/api/retag/undo/": {"POST": A},
    "/api/runs/{run_id}/false-negatives/": {"GET": S},
    "/api/runs/{run_id}/false-positives/": {"GET": S},
    "/api/runs/{run_id}/confusion-cell/": {"GET": S},
    "/api/runs/{run_id}/pr-curves/": {"GET": S},
    "/api/tasks/{task_id}/f1-series/": {"GET": S},
    "/api/images/{image_id}/predictions/": {"GET": S},
    "/api/suspect-runs/": {"GET": A, "POST": S},
    "/api/suspect-runs/{id}/": {"GET": A},
    "/api/suspect-runs/{id}/suspects/": {"GET": A},
    "/api/suspect-runs/{id}/next/": {"POST": A},
    "/api/suspect-runs/{id}/clusters/": {"GET": A},
    "/api/suspect-runs/{id}/retag-group/": {"POST": A},
    "/api/suspect-runs/{id}/exclude/": {"POST": S},
    "/api/suspect-runs/{id}/restore/": {"POST": S},
    "/api/suspect-runs/{id}/near-duplicates/": {"GET": A},
    "/api/suspect-runs/{id}/quality/": {"GET": S},
    "/api/cleaning-runs/": {"GET": A, "POST": S},
    "/api/cleaning-runs/{id}/": {"GET": A},
    "/api/cleaning-runs/{id}/restore/": {"POST": S},
    "/api/suspects/{id}/resolve/": {"POST": A},
    "/api/suspects/{id}/undo/": {"POST": A},
    "/api/images/{id}/similar/": {"GET": A},
    "/api/mturk/batches/": {"GET": AD, "POST": AD},
    "/api/mturk/batches/{id}/": {"GET": AD},
    "/api/mturk/batches/{id}/apply/": {"POST": AD},
    "/api/mturk/batches/{id}/balance/": {"GET": AD},
    "/api/mturk/batches/{id}/export/": {"GET": AD},
    "/api/mturk/batches/{id}/results/": {"POST": AD},
    "/api/mturk/batches/{id}/send/": {"POST": AD},
    "/api/mturk/batches/{id}/summary/": {"GET": AD},
    "/api/mturk/batches/{id}/sync/": {"POST": AD},
    "/api/mturk/workers/": {"GET": AD},
    "/api/mturk/workers/{id}/block/": {"POST": AD},
    "/api/mturk/workers/{id}/unblock/": {"POST": AD},
    # Django's admin: every route is for staff (our admins), checked on its index and model lists;
    # users, groups and the login-attempt records only for superusers (createsuperuser).
    "/django-admin/*": {"GET": AD},
    "/django-admin/auth/*": {"GET": SU},
    "/django-admin/axes/*": {"GET": SU},
}
RANK = {**{role: i for i, role in enumerate(ROLES)}, SU: len(ROLES)}
VERBS = ("GET", "POST", "PUT", "PATCH", "DELETE")


def routes() -> list[str]:
    return sorted({normalize(r) for r in site_routes() if not is_format_suffix(r)})


def test_the_matrix_names_every_route():
    ours = {r for r in routes() if not r.startswith("/django-admin/")}
    assert sorted(ours - set(MATRIX)) == [], "routes without an entry: say who may call them"
    assert sorted(set(MATRIX) - ours - {r for r in MATRIX if r.startswith("/django-admin/")}) == [], \
        "entries without a route"


@pytest.fixture
def world(make_user, tmp_path, settings, monkeypatch):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return build_world(make_user, tmp_path)


def _url(route: str, world) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: str(world.id_for(route, m.group(1))), route)


def _client(world, role) -> Client:
    client = Client(raise_request_exception=False)
    if world.users[role] is not None:
        client.force_login(world.users[role])
    return client


def _to_login(response) -> bool:
    return response.status_code == 302 and urlsplit(response["Location"]).path in ("/accounts/login/",
                                                                                   "/django-admin/login/")


def _verdict(route, verb, role, response) -> str | None:
    """What is wrong with ``response`` to ``role`` (None: as the table says)."""
    group = next((g for g in ("/django-admin/auth/*", "/django-admin/axes/*") if route.startswith(g[:-1])),
                 "/django-admin/*")
    needed = MATRIX[route if route in MATRIX else group][verb]
    code = response.status_code
    if code >= 500 and code != 502:  # 502: MTurk unreachable (offline), an answer past the gate
        return f"answered {code}"
    if RANK[role] >= RANK[needed]:
        if code in (401, 403, 405) or (needed != ANY and _to_login(response)):
            return f"let in by the table ({needed}+) but got {code}"
        return None
    if role == ANY:
        # /api/docs/ is a page people open in a browser: to the login page, like the pages.
        ok = code in (401, 403) if route.startswith("/api/") and route != "/api/docs/" else _to_login(response)
    else:
        ok = code == 403 or (route.startswith("/django-admin/") and _to_login(response))
    return None if ok else f"kept out by the table ({needed}+) but got {code}"


def _call(client, verb, url):
    if verb == "GET":
        return client.get(url)
    return client.generic(verb, url, b"{}", content_type="application/json")


def test_every_route_and_verb_as_every_role(world):
    wrong = []
    admin_routes = [r for r in routes() if re.fullmatch(r"/django-admin/(\w+/\w+/)?", r)]
    todo = [(r, v) for r in MATRIX if not r.startswith("/django-admin/") for v in MATRIX[r]] + [(r, "GET") for r in admin_routes]
    assert len(admin_routes) > 5
    for route, verb in todo:
        url = _url(route, world)
        for role in ROLES:  # admin last: what it deletes or changes is no one else's test
            # A fresh session each time: a logout (or a lockout) must not carry over.
            why = _verdict(route, verb, role, _call(_client(world, role), verb, url))
            if why:
                wrong.append(f"{verb} {route} as {role}: {why}")
    assert wrong == [], "\n".join(wrong)


@pytest.mark.parametrize("route", [r for r in MATRIX if "POST" in MATRIX[r] and not r.startswith("/api/")])
def test_redirects_after_post_stay_on_the_site(route, world):
    """A hostile ``next`` is never followed off the site, on any page that redirects after a POST."""
    client = _client(world, AD)
    for target in ("https://evil.example/", "//evil.example/", "/\\evil.example/", "javascript:alert(1)"):
        r = client.post(_url(route, world) + "?next=" + target, {"next": target})
        if 300 <= r.status_code < 400:
            location = r["Location"]
            parts = urlsplit(location)
            assert not parts.scheme and not parts.netloc and not location.startswith(("//", "/\\")), (route, location)


def test_login_sends_only_to_local_next(world):
    user = world.users[A]
    user.set_password("correct horse battery staple")
    user.save()
    for target, expected in (("https://evil.example/", "/"), ("/p/fuzz/", "/p/fuzz/")):
        r = Client().post("/accounts/login/?next=" + target, {"username": user.username,
                                                               "password": "correct horse battery staple",
                                                               "next": target})
        assert r.status_code == 302 and r["Location"] == expected
