"""The OpenAPI schema: it renders for people with a role, is a valid OpenAPI 3 document,
describes every resource, and drf-spectacular has nothing to warn about."""
import json

import pytest
import yaml
from django.core.management import call_command
from openapi_spec_validator import validate

pytestmark = pytest.mark.django_db

PATHS = [
    "/api/projects/", "/api/projects/{id}/", "/api/tasks/", "/api/tasks/{id}/", "/api/tasks/{id}/reorder-labels/",
    "/api/labels/", "/api/labels/{id}/", "/api/images/", "/api/images/{id}/", "/api/images/{id}/retag/",
    "/api/annotations/", "/api/annotations/{id}/", "/api/events/", "/api/events/{id}/", "/api/imports/",
    "/api/imports/{id}/", "/api/storage-roots/", "/api/storage-roots/{id}/",
]


def test_schema_renders_and_validates(annotator, api_client_for):
    r = api_client_for(annotator).get("/api/schema/", {"format": "json"})
    assert r.status_code == 200
    schema = json.loads(r.content)
    validate(schema)
    assert schema["openapi"].startswith("3.")
    for path in PATHS:
        assert path in schema["paths"], path

    retag = schema["paths"]["/api/images/{id}/retag/"]["post"]
    assert {"200", "400", "409"} <= set(retag["responses"])
    params = {p["name"] for p in schema["paths"]["/api/images/"]["get"]["parameters"]}
    assert {"cursor", "project", "task", "label", "split", "status", "search"} <= params
    assert set(schema["paths"]["/api/imports/"]) == {"get", "post"}


def test_schema_yaml_is_the_default(annotator, api_client_for):
    r = api_client_for(annotator).get("/api/schema/")
    assert r.status_code == 200
    assert "/api/images/{id}/retag/" in yaml.safe_load(r.content)["paths"]


def test_schema_builds_without_a_warning(tmp_path, capsys):
    """``manage.py spectacular --validate --fail-on-warn``: the document is valid, and
    drf-spectacular had to guess nothing about any API view (a guess is an undocumented
    body: it exits non-zero)."""
    from drf_spectacular.drainage import GENERATOR_STATS

    GENERATOR_STATS.reset()
    out = tmp_path / "schema.yaml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(out))
    err = capsys.readouterr().err
    assert "Warning" not in err and "Error" not in err, err
    paths = yaml.safe_load(out.read_text())["paths"]
    # Every API module is in it: runs, quality, suspects, cleaning, Mechanical Turk.
    for path in ["/api/runs/{id}/progress/", "/api/runs/{run_id}/false-negatives/", "/api/suspects/{id}/resolve/",
                 "/api/suspect-runs/{id}/", "/api/cleaning-runs/{id}/", "/api/mturk/batches/",
                 "/api/mturk/workers/", "/api/images/{id}/history/"]:
        assert path in paths, path
    resolve = paths["/api/suspects/{id}/resolve/"]["post"]
    assert {"200", "400", "409"} <= set(resolve["responses"])
    assert "requestBody" in resolve


def test_the_api_root_lists_every_module_and_says_what_retag_is(annotator, api_client_for):
    r = api_client_for(annotator).get("/api/", HTTP_ACCEPT="application/json")
    assert r.status_code == 200
    assert {"projects", "tasks", "labels", "images", "annotations", "events", "imports", "storage-roots", "runs",
            "suspect-runs", "cleaning-runs", "mturk/batches", "mturk/workers"} <= set(r.json())
    browser = api_client_for()
    browser.force_login(annotator)  # a browser has the session (the login middleware sends one without it to the login)
    html = browser.get("/api/", HTTP_ACCEPT="text/html").content.decode()
    assert "Retag API" in html and "annotation version" in html
    assert "The default basic root view" not in html


def test_anonymous_gets_no_schema_and_the_docs_send_to_the_login(api_client_for):
    assert api_client_for(None).get("/api/schema/").status_code in (401, 403)
    r = api_client_for(None).get("/api/docs/")
    assert r.status_code == 302 and r["Location"] == "/accounts/login/?next=/api/docs/"


def test_docs_page_loads_swagger_from_this_server(annotator, api_client_for):
    """Offline: Swagger UI's files come from our static files, not from a CDN."""
    r = api_client_for(annotator).get("/api/docs/")
    assert r.status_code == 200
    html = r.content.decode()
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in html
    assert "cdn" not in html.lower() and "https://" not in html
    assert "/api/schema/" in html
