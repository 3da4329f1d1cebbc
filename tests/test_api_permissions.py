"""Every role against every endpoint class: the API's permissions are the pages'.

anonymous and a user without a role: nothing (schema and docs included);
annotator and scientist: read everything but storage roots, and retag;
admin: everything.
"""
import pytest

from labeling.models import ImportJob, StorageRoot

from tests.factories import make_image, make_project

pytestmark = pytest.mark.django_db

ROLES = ["anonymous", "norole", "annotator", "scientist", "admin"]
READERS = {"annotator", "scientist", "admin"}
ADMINS = {"admin"}


@pytest.fixture
def world(tmp_path):
    project, task, labels = make_project()
    image = make_image(project, "a.jpg", task=task, label=labels[0])
    job = ImportJob.objects.create(project=project, kind="manifest", source_uri="file:///m.csv")
    root = StorageRoot.objects.create(uri="s3://bucket/prefix/")
    return {"project": project, "task": task, "labels": labels, "image": image, "job": job, "root": root,
            "tmp": tmp_path}


def _retag_body(w):
    from labeling.services.retag import current_version
    return {"task": w["task"].id, "label": w["labels"][1].id,
            "expected_version": current_version(w["image"], w["task"])}


# (name, method, url(world), body(world) or None, roles allowed)
ENDPOINTS = [
    ("api root", "get", lambda w: "/api/", None, READERS),
    ("schema", "get", lambda w: "/api/schema/", None, READERS),
    ("docs", "get", lambda w: "/api/docs/", None, READERS),
    ("projects list", "get", lambda w: "/api/projects/", None, READERS),
    ("project detail", "get", lambda w: f"/api/projects/{w['project'].id}/", None, READERS),
    ("project create", "post", lambda w: "/api/projects/", lambda w: {"name": "New"}, ADMINS),
    ("project update", "patch", lambda w: f"/api/projects/{w['project'].id}/", lambda w: {"description": "d"}, ADMINS),
    ("tasks list", "get", lambda w: "/api/tasks/", None, READERS),
    ("task detail", "get", lambda w: f"/api/tasks/{w['task'].id}/", None, READERS),
    ("task create", "post", lambda w: "/api/tasks/", lambda w: {"project": w["project"].id, "name": "sleeve"}, ADMINS),
    ("reorder labels", "post", lambda w: f"/api/tasks/{w['task'].id}/reorder-labels/",
     lambda w: {"label_ids": [lb.id for lb in reversed(w["labels"])]}, ADMINS),
    ("labels list", "get", lambda w: "/api/labels/", None, READERS),
    ("label detail", "get", lambda w: f"/api/labels/{w['labels'][0].id}/", None, READERS),
    ("label create", "post", lambda w: "/api/labels/", lambda w: {"task": w["task"].id, "name": "boat"}, ADMINS),
    ("label rename", "patch", lambda w: f"/api/labels/{w['labels'][2].id}/", lambda w: {"name": "sq"}, ADMINS),
    ("images list", "get", lambda w: "/api/images/", None, READERS),
    ("image detail", "get", lambda w: f"/api/images/{w['image'].id}/", None, READERS),
    ("retag", "post", lambda w: f"/api/images/{w['image'].id}/retag/", _retag_body, READERS),
    ("annotations list", "get", lambda w: "/api/annotations/", None, READERS),
    ("events list", "get", lambda w: "/api/events/", None, READERS),
    ("imports list", "get", lambda w: "/api/imports/", None, ADMINS),
    ("import detail", "get", lambda w: f"/api/imports/{w['job'].id}/", None, ADMINS),
    # Outside every root: an admin is let in and refused by the service (400), others never get there.
    ("import create", "post", lambda w: "/api/imports/",
     lambda w: {"project": w["project"].id, "kind": "folder", "source_uri": "file:///etc/"}, ADMINS),
    ("storage roots list", "get", lambda w: "/api/storage-roots/", None, ADMINS),
    ("storage root detail", "get", lambda w: f"/api/storage-roots/{w['root'].id}/", None, ADMINS),
    ("storage root create", "post", lambda w: "/api/storage-roots/", lambda w: {"uri": w["tmp"].as_uri()}, ADMINS),
    ("storage root delete", "delete", lambda w: f"/api/storage-roots/{w['root'].id}/", None, ADMINS),
]

# What an allowed request answers; anything else (401/403 above all) fails the test.
ALLOWED_STATUS = {"get": {200}, "post": {200, 201}, "patch": {200}, "delete": {204}}
REFUSED_BY_SERVICE = {"import create": {400}}


@pytest.fixture
def client_as(make_user, api_client_for):
    def make(role):
        if role == "anonymous":
            return api_client_for(None)
        return api_client_for(make_user(None if role == "norole" else role))
    return make


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("name, method, url, body, allowed", ENDPOINTS, ids=[e[0] for e in ENDPOINTS])
def test_role_table(world, client_as, role, name, method, url, body, allowed):
    client = client_as(role)
    kwargs = {"format": "json", "data": body(world)} if body else {}
    response = getattr(client, method)(url(world), **kwargs)
    if role in allowed:
        expected = REFUSED_BY_SERVICE.get(name, ALLOWED_STATUS[method])
        assert response.status_code in expected, (role, name, response.status_code, response.content[:300])
    elif name == "docs" and role == "anonymous":  # a page for people: to the login page
        assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")
    else:
        assert response.status_code in (401, 403), (role, name, response.status_code)
        if role in ("annotator", "scientist"):
            assert response.status_code == 403


def test_wrong_basic_auth_password_is_refused(world, api_client_for):
    """A wrong password over basic auth is refused (403: session auth comes first and
    sends no WWW-Authenticate challenge), never data."""
    client = api_client_for(None)
    client.credentials(HTTP_AUTHORIZATION="Basic bm9ib2R5Ondyb25n")  # nobody:wrong
    r = client.get("/api/images/")
    assert r.status_code in (401, 403) and "results" not in r.json()
    assert "Invalid username/password" in r.json()["detail"]


def test_basic_auth_with_a_role_reads(world, make_user):
    """The real authentication path (no force_authenticate): HTTP basic auth, as the benchmark uses."""
    import base64

    from rest_framework.test import APIClient

    from tests.conftest import PASSWORD

    user = make_user("annotator")
    client = APIClient()
    token = base64.b64encode(f"{user.username}:{PASSWORD}".encode()).decode()
    client.credentials(HTTP_AUTHORIZATION=f"Basic {token}")
    assert client.get("/api/images/").status_code == 200
    assert client.get("/api/storage-roots/").status_code == 403
