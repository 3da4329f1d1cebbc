"""The collected static files, served by the app itself with DEBUG off (settings.SERVE_STATIC;
`make run` runs runserver with --nostatic): a file of STATIC_ROOT to anyone, and a path that
climbs out of the folder (``..``, encoded or not) a 400 or 404, never a 500."""
import pytest
from django.test import Client


@pytest.fixture
def static_root(tmp_path, settings):
    root = tmp_path / "static"
    (root / "css").mkdir(parents=True)
    (root / "css" / "site.css").write_text("body { color: black }")
    (tmp_path / "settings.py").write_text("SECRET_KEY = 'x'")  # what a climb out would read
    settings.STATIC_ROOT = root
    settings.DEBUG = False
    return root


@pytest.fixture
def anonymous():
    return Client(raise_request_exception=False)


def test_a_static_file_is_served_to_anyone(db, static_root, anonymous):
    r = anonymous.get("/static/css/site.css")
    assert r.status_code == 200 and b"".join(r.streaming_content) == b"body { color: black }"
    assert anonymous.get("/static/css/none.css").status_code == 404


@pytest.mark.parametrize("path", ["/static/..%2f..%2fsettings.py", "/static/%2e%2e/%2e%2e/labeling/settings.py",
                                  "/static/../../labeling/settings.py", "/static/%2e%2e%2f%2e%2e%2fmanage.py",
                                  "/static/..%5c..%5csettings.py", "/static/%00"])
def test_a_path_out_of_the_static_folder_is_not_a_500(db, static_root, anonymous, path):
    r = anonymous.get(path)
    assert r.status_code in (400, 404), (path, r.status_code)
    assert b"SECRET_KEY" not in r.content and b"DATABASES" not in r.content


def test_post_to_a_static_file_is_not_allowed(db, static_root, anonymous):
    assert anonymous.post("/static/css/site.css").status_code == 405
