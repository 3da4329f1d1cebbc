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


OUR_MODULES = [f"labeling/api/{m}.py" for m in ("views", "serializers", "filters", "urls", "permissions")]
OUR_VIEWS = ["ProjectViewSet", "TaskViewSet", "LabelViewSet", "ImageViewSet", "AnnotationViewSet",
             "LabelEventViewSet", "ImportJobViewSet", "StorageRootViewSet"]


def test_no_spectacular_warnings_for_our_views(tmp_path, capsys):
    """``manage.py spectacular --validate``: the document is valid, and drf-spectacular
    had to guess nothing about these views. (Each warning names its source file and
    view; other modules' warnings are their authors' to fix.)"""
    from drf_spectacular.drainage import GENERATOR_STATS

    GENERATOR_STATS.reset()
    out = tmp_path / "schema.yaml"
    call_command("spectacular", "--validate", "--file", str(out))
    problems = [line for line in capsys.readouterr().err.splitlines() if "Warning [" in line or "Error [" in line]
    assert all(": Warning [" in line or ": Error [" in line for line in problems), problems  # each says where
    ours = [line for line in problems
            if any(m in line for m in OUR_MODULES) or any(f"[{v}" in line for v in OUR_VIEWS)]
    assert ours == []
    assert "/api/images/{id}/retag/" in out.read_text()


@pytest.mark.parametrize("url", ["/api/schema/", "/api/docs/"])
def test_anonymous_gets_no_schema(api_client_for, url):
    assert api_client_for(None).get(url).status_code in (401, 403)


def test_docs_page_loads_swagger_from_this_server(annotator, api_client_for):
    """Offline: Swagger UI's files come from our static files, not from a CDN."""
    r = api_client_for(annotator).get("/api/docs/")
    assert r.status_code == 200
    html = r.content.decode()
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in html
    assert "cdn" not in html.lower() and "https://" not in html
    assert "/api/schema/" in html
