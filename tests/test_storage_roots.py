"""Allowed roots: an import reads only inside the folders and buckets an admin allowed."""
import os

import pytest

from labeling.models import StorageRoot
from labeling.services.storage_roots import SourceRefused, add_root, allowed_roots, canonical, check_allowed

pytestmark = pytest.mark.django_db


@pytest.fixture
def root(tmp_path, settings):
    data = tmp_path / "data"
    (data / "train").mkdir(parents=True)
    (data / "train" / "a.jpg").write_bytes(b"x")
    settings.IMPORT_ROOTS = [str(data)]
    return data


def refused(uri, **kw) -> str:
    with pytest.raises(SourceRefused) as err:
        check_allowed(uri, **kw)
    return err.value.reason


def test_inside_a_root_gives_the_canonical_uri(root):
    assert check_allowed(str(root / "train" / "a.jpg")) == (root / "train" / "a.jpg").resolve().as_uri()
    assert check_allowed((root / "train" / "a.jpg").as_uri()) == (root / "train" / "a.jpg").as_uri()
    assert check_allowed(f"{root}/train/../train/./a.jpg") == (root / "train" / "a.jpg").as_uri()
    assert check_allowed(str(root)) == root.as_uri()


def test_nothing_is_allowed_without_roots(tmp_path, settings):
    settings.IMPORT_ROOTS = []
    assert "none is configured" in refused(str(tmp_path))


@pytest.mark.parametrize("uri", ["file:///etc/passwd", "/etc/passwd", "/", "file:///"])
def test_system_files_are_refused(root, uri):
    assert "outside every allowed storage root" in refused(uri)


def test_dotdot_escape_is_resolved_before_comparing(root):
    (root.parent / "secret.txt").write_text("s")
    reason = refused(f"{root}/train/../../secret.txt")
    assert str(root.parent / "secret.txt") in reason


def test_sibling_folder_with_the_same_prefix_is_refused(root):
    sibling = root.parent / (root.name + "2")
    sibling.mkdir()
    assert "outside" in refused(str(sibling / "a.jpg"))


def test_symlinks_are_followed_before_comparing(root, tmp_path):
    outside = tmp_path / "outside.jpg"
    outside.write_bytes(b"x")
    os.symlink(outside, root / "train" / "link.jpg")
    os.symlink(root / "train" / "a.jpg", root / "train" / "inner.jpg")
    assert "outside" in refused(str(root / "train" / "link.jpg"))
    assert check_allowed(str(root / "train" / "inner.jpg")).endswith("/train/a.jpg")


@pytest.mark.parametrize("uri", ["http://169.254.169.254/latest/meta-data/", "https://example.com/a.jpg",
                                 "ftp://host/a.jpg", "gs://bucket/a.jpg", "HTTP://169.254.169.254/"])
def test_other_schemes_are_refused(root, uri):
    assert "not allowed" in refused(uri)


def test_file_uri_with_a_host_is_refused(root):
    assert "host" in refused(f"file://evil.example{root}/train/a.jpg")


def test_s3_roots_match_bucket_and_prefix(settings):
    settings.IMPORT_ROOTS = ["s3://photos/data"]
    assert check_allowed("s3://photos/data/train/a.jpg") == "s3://photos/data/train/a.jpg"
    assert check_allowed("s3://photos/data/") == "s3://photos/data/"
    assert "outside" in refused("s3://other-bucket/data/train/a.jpg")
    assert "outside" in refused("s3://photos/private/a.jpg")
    assert "outside" in refused("s3://photos/data2/a.jpg")
    assert "'..'" in refused("s3://photos/data/../private/a.jpg")
    assert "without a bucket" in refused("s3:///data/a.jpg")


def test_whole_bucket_root(settings):
    settings.IMPORT_ROOTS = ["s3://photos"]
    assert check_allowed("s3://photos/any/key.jpg") == "s3://photos/any/key.jpg"
    assert "outside" in refused("s3://photos-other/key.jpg")


def test_storage_root_rows_count_too(settings, tmp_path):
    settings.IMPORT_ROOTS = []
    folder = tmp_path / "admin-added"
    folder.mkdir()
    assert "none is configured" in refused(str(folder / "x.jpg"))
    add_root(str(folder), note="test")
    assert StorageRoot.objects.get().uri == folder.as_uri() + "/"
    assert check_allowed(str(folder / "x.jpg")) == (folder / "x.jpg").as_uri()
    assert [r.uri for r in allowed_roots()] == [folder.as_uri() + "/"]
    roots = allowed_roots()
    StorageRoot.objects.all().delete()
    assert check_allowed(str(folder / "y.jpg"), roots=roots)  # a list read once serves many checks


def test_canonical_spellings_agree(root):
    assert canonical(str(root / "train" / "a.jpg")) == canonical((root / "train" / "a.jpg").as_uri())
    assert canonical("s3://b/k") == "s3://b/k"


# --- what an admin may add -----------------------------------------------------------

def add_refused(uri) -> str:
    with pytest.raises(SourceRefused) as err:
        add_root(uri)
    assert not StorageRoot.objects.exists()
    return err.value.reason


def test_a_root_written_with_dotdot_is_refused_naming_what_it_meant(tmp_path, settings):
    """``file:///tmp/x/var/demo/../../../`` was accepted and silently became ``file:///tmp/``."""
    demo = tmp_path / "x" / "var" / "demo"
    demo.mkdir(parents=True)
    reason = add_refused(demo.as_uri() + "/../../../")
    assert "'..'" in reason and f"resolves to {tmp_path.as_uri()}/" in reason
    assert "'..'" in add_refused(f"{demo}/..")
    assert "'..'" in add_refused(demo.as_uri() + "/%2E%2E/")  # percent-encoded, the same path
    assert "'..'" in add_refused("s3://photos/data/../private")
    assert add_root(demo.as_uri() + "/./").uri == demo.as_uri() + "/"  # '.' and '//' name the same folder


def test_a_root_holding_retags_var_folder_or_code_is_refused(tmp_path, settings):
    app = tmp_path / "app"
    (app / "var" / "demo").mkdir(parents=True)
    settings.BASE_DIR, settings.VAR_DIR = app, app / "var"
    for uri in [str(app / "var"), (app / "var").as_uri() + "/", str(tmp_path)]:
        assert "Retag's own var folder" in add_refused(uri) and "secret key" in add_refused(uri)
    settings.VAR_DIR = tmp_path / "elsewhere" / "var"  # RETAG_VAR_DIR outside the checkout
    assert "Retag's own code" in add_refused(str(app))
    os.symlink(app, tmp_path / "link")
    assert "Retag's own code" in add_refused(str(tmp_path / "link"))  # resolved before comparing
    settings.VAR_DIR = app / "var"
    assert add_root(str(app / "var" / "demo")).uri == (app / "var" / "demo").as_uri() + "/"  # load_demo's root


def test_the_real_checkout_and_var_are_refused(settings):
    assert "Retag's own" in add_refused(str(settings.BASE_DIR))
    assert "Retag's own var folder" in add_refused(str(settings.VAR_DIR))


def test_admin_page_and_api_say_why_a_root_is_refused(tmp_path, client, admin_user, api_client_for, settings):
    demo = tmp_path / "x" / "var" / "demo"
    demo.mkdir(parents=True)
    client.force_login(admin_user)
    r = client.post("/manage/storage-roots/", {"action": "add", "uri": demo.as_uri() + "/../../../", "note": ""})
    html = r.content.decode()
    assert r.status_code == 200 and "has &#x27;..&#x27; segments" in html and "field-error" in html
    r = client.post("/manage/storage-roots/", {"action": "add", "uri": str(settings.VAR_DIR), "note": ""})
    assert "Retag&#x27;s own var folder" in r.content.decode()
    api = api_client_for(admin_user)
    r = api.post("/api/storage-roots/", {"uri": demo.as_uri() + "/../../../"}, format="json")
    assert r.status_code == 400 and "'..'" in str(r.json())
    assert not StorageRoot.objects.exists()
