"""The DRF API: resources, filters, cursor pages, retag with its conflicts, reordering,
imports, storage roots; and that names come back exactly as they went in."""
import base64
from datetime import timedelta
from urllib.parse import parse_qs, urlparse

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from labeling.models import Annotation, Image, ImportJob, Label, LabelEvent, Project, StorageRoot, Task
from labeling.services.retag import retag_image

from tests.factories import make_image, make_project

pytestmark = pytest.mark.django_db

XSS = "<script>alert(1)</script>"


@pytest.fixture
def dresses():
    """A project with a neckline task (3 labels), a sleeve task (2 labels) and 6 images."""
    project, neck, (v, round_, square) = make_project()
    from labeling.services.labels import ensure_labels, get_or_create_task
    sleeve = get_or_create_task(project, "sleeve")
    short, long_ = (ensure_labels(sleeve, ["short", "long"])[n] for n in ("short", "long"))
    images = []
    for i, (split, label) in enumerate([("train", v), ("train", round_), ("test", v),
                                        ("test", square), ("train", v), ("train", None)]):
        images.append(make_image(project, f"img/{i:02d}.jpg", split=split, task=neck if label else None,
                                 label=label))
    retag_image(image=images[0], task=sleeve, label=long_, expected_version=0, source="import")
    return {"project": project, "neck": neck, "sleeve": sleeve, "v": v, "round": round_, "square": square,
            "short": short, "long": long_, "images": images}


def ids(response):
    return [row["id"] for row in response.json()["results"]]


# --- images ------------------------------------------------------------------------

def test_image_list_has_compact_current_labels(dresses, annotator, api_client_for):
    d = dresses
    r = api_client_for(annotator).get("/api/images/", {"project": d["project"].id})
    assert r.status_code == 200
    body = r.json()
    assert ids(r) == [i.id for i in d["images"]]
    first = body["results"][0]
    assert first["key"] == "img/00.jpg" and first["split"] == "train" and first["status"] == "ok"
    assert first["annotations"] == [{"task": d["neck"].id, "label": d["v"].id, "version": 1},
                                    {"task": d["sleeve"].id, "label": d["long"].id, "version": 1}]
    assert body["results"][5]["annotations"] == []


def test_image_list_queries_do_not_grow_with_the_page(dresses, annotator, api_client_for):
    d = dresses
    client = api_client_for(annotator)
    client.get("/api/images/")  # warm the user's role cache and the content types

    def count(page_size):
        with CaptureQueriesContext(connection) as ctx:
            r = client.get("/api/images/", {"page_size": page_size})
        assert r.status_code == 200 and len(r.json()["results"]) == page_size
        return len(ctx.captured_queries)

    for i in range(30):
        make_image(d["project"], f"more/{i}.jpg", task=d["neck"], label=d["round"])
    assert count(2) == count(30)
    assert count(30) <= 4  # (role,) images, their annotations


def test_image_cursor_pages_walk_in_id_order(dresses, annotator, api_client_for):
    client = api_client_for(annotator)
    seen, url = [], "/api/images/?page_size=4"
    while url:
        body = client.get(url).json()
        assert "count" not in body  # a cursor page never counts the table
        seen += [row["id"] for row in body["results"]]
        url = body["next"]
    assert seen == sorted(i.id for i in dresses["images"])


def test_image_deep_cursor_starts_after_the_encoded_id(dresses, annotator, api_client_for):
    """A client (or the benchmark) may jump deep: the cursor is the position ``p`` in id order."""
    images = dresses["images"]
    cursor = base64.b64encode(f"p={images[2].id}".encode()).decode()
    r = api_client_for(annotator).get("/api/images/", {"cursor": cursor, "page_size": 2})
    assert ids(r) == [images[3].id, images[4].id]
    assert parse_qs(urlparse(r.json()["next"]).query)["cursor"]


@pytest.mark.parametrize("params, expected", [
    ({"split": "test"}, [2, 3]),
    ({"task": "NECK", "label": "V"}, [0, 2, 4]),
    ({"task": "NECK", "label": "V", "split": "train"}, [0, 4]),
    ({"label": "SQUARE"}, [3]),
    ({"task": "NECK", "label": "none"}, [5]),
    ({"task": "SLEEVE"}, [0]),
    ({"search": "IMG/0"}, [0, 1, 2, 3, 4, 5]),
    ({"key": "img/03.jpg"}, [3]),
    ({"status": "corrupt"}, []),
])
def test_image_filters(dresses, annotator, api_client_for, params, expected):
    d = dresses
    lookup = {"NECK": d["neck"].id, "SLEEVE": d["sleeve"].id, "V": d["v"].id, "SQUARE": d["square"].id}
    params = {k: lookup.get(v, v) for k, v in params.items()}
    r = api_client_for(annotator).get("/api/images/", params)
    assert r.status_code == 200, r.content
    assert ids(r) == [d["images"][i].id for i in expected]


def test_image_filter_by_project_and_bad_values(dresses, annotator, api_client_for):
    other, _, _ = make_project(name="Shoes", task="type", labels=("boot",))
    make_image(other, "boot.jpg")
    client = api_client_for(annotator)
    assert len(ids(client.get("/api/images/", {"project": other.id}))) == 1
    assert client.get("/api/images/", {"split": "validation"}).status_code == 400
    assert client.get("/api/images/", {"label": "none"}).status_code == 400
    assert client.get("/api/images/", {"label": "abc"}).status_code == 400


def test_filtered_cursor_pages_walk_forward_and_back(dresses, annotator, api_client_for):
    """The filter repeats the cursor's bound on the annotation join (a hint for the
    planner): pages forward and back must still be exactly the filter's images."""
    d = dresses
    for i in range(7):
        make_image(d["project"], f"extra/{i}.jpg", split="train", task=d["neck"], label=d["v"] if i % 2 else d["round"])
    expected = list(Image.objects.filter(annotations__task=d["neck"], annotations__label=d["v"], split="train")
                    .order_by("id").values_list("id", flat=True))
    assert len(expected) == 5
    client = api_client_for(annotator)
    pages, url = [], f"/api/images/?task={d['neck'].id}&label={d['v'].id}&split=train&page_size=2"
    while url:
        body = client.get(url).json()
        pages.append([row["id"] for row in body["results"]])
        last, url = body, body["next"]
    assert [i for page in pages for i in page] == expected
    back, url = [], last["previous"]
    while url:
        body = client.get(url).json()
        back.insert(0, [row["id"] for row in body["results"]])
        url = body["previous"]
    assert [i for page in back for i in page] == expected[:-1]  # all but the last page's one
    assert client.get("/api/images/", {"task": d["neck"].id, "label": d["v"].id, "cursor": "junk"}).status_code == 404


def test_image_fast_representation_matches_drf(dresses):
    """ImageSerializer writes its dict by hand for speed; it must say what DRF's generic
    field-by-field walk says."""
    from rest_framework import serializers as drf

    from labeling.api.serializers import ImageSerializer

    for image in Image.objects.all():
        ser = ImageSerializer(image)
        assert ser.data == drf.ModelSerializer.to_representation(ser, image)
        assert list(ser.data) == ImageSerializer.Meta.fields


def test_image_detail(dresses, annotator, api_client_for):
    image = dresses["images"][1]
    r = api_client_for(annotator).get(f"/api/images/{image.id}/")
    assert r.status_code == 200
    assert r.json()["annotations"] == [{"task": dresses["neck"].id, "label": dresses["round"].id, "version": 1}]


# --- retag -------------------------------------------------------------------------

def test_retag_returns_the_new_annotation_and_event(dresses, annotator, api_client_for):
    d = dresses
    image = d["images"][0]
    r = api_client_for(annotator).post(f"/api/images/{image.id}/retag/",
                                       {"task": d["neck"].id, "label": d["round"].id, "expected_version": 1},
                                       format="json")
    assert r.status_code == 200, r.content
    body = r.json()
    assert body["annotation"]["label"] == d["round"].id and body["annotation"]["version"] == 2
    assert body["annotation"]["updated_by"] == annotator.username and body["annotation"]["verified"]
    assert body["event"]["from_label"] == d["v"].id and body["event"]["to_label"] == d["round"].id
    assert body["event"]["source"] == "annotator" and body["event"]["by"] == annotator.username
    assert Annotation.objects.get(image=image, task=d["neck"]).label == d["round"]


def test_retag_to_the_same_label_verifies_without_an_event(dresses, annotator, api_client_for):
    d = dresses
    image = d["images"][0]
    r = api_client_for(annotator).post(f"/api/images/{image.id}/retag/",
                                       {"task": d["neck"].id, "label": d["v"].id, "expected_version": 1},
                                       format="json")
    assert r.status_code == 200
    assert r.json()["event"] is None and r.json()["annotation"]["verified"] is True
    assert LabelEvent.objects.filter(image=image).count() == 2  # the two imports only


def test_retag_first_label_with_version_zero(dresses, annotator, api_client_for):
    d = dresses
    image = d["images"][5]
    r = api_client_for(annotator).post(f"/api/images/{image.id}/retag/",
                                       {"task": d["neck"].id, "label": d["square"].id, "expected_version": 0},
                                       format="json")
    assert r.status_code == 200
    assert r.json()["annotation"]["version"] == 1 and r.json()["event"]["from_label"] is None


def test_retag_stale_version_is_409_with_the_current_label(dresses, annotator, make_user, api_client_for):
    d = dresses
    image = d["images"][0]
    other = make_user("annotator", username="first-to-click")
    retag_image(image=image, task=d["neck"], label=d["round"], by=other, expected_version=1)

    r = api_client_for(annotator).post(f"/api/images/{image.id}/retag/",
                                       {"task": d["neck"].id, "label": d["square"].id, "expected_version": 1},
                                       format="json")
    assert r.status_code == 409
    body = r.json()
    assert "changed" in body["detail"]
    current = body["current"]
    assert current["label"] == d["round"].id and current["label_name"] == "round"
    assert current["version"] == 2 and current["updated_by"] == "first-to-click" and current["updated_at"]
    assert Annotation.objects.get(image=image, task=d["neck"]).label == d["round"]


def test_retag_conflict_when_no_label_yet(dresses, annotator, api_client_for):
    d = dresses
    r = api_client_for(annotator).post(f"/api/images/{d['images'][5].id}/retag/",
                                       {"task": d["neck"].id, "label": d["v"].id, "expected_version": 3},
                                       format="json")
    assert r.status_code == 409
    assert r.json()["current"] == {"label": None, "label_name": None, "version": 0, "verified": False,
                                   "updated_by": None, "updated_at": None}


def test_retag_label_of_another_task_is_400(dresses, annotator, api_client_for):
    d = dresses
    image = d["images"][0]
    r = api_client_for(annotator).post(f"/api/images/{image.id}/retag/",
                                       {"task": d["neck"].id, "label": d["short"].id, "expected_version": 1},
                                       format="json")
    assert r.status_code == 400
    assert "not a label of task" in r.json()["detail"]
    assert Annotation.objects.get(image=image, task=d["neck"]).label == d["v"]


def test_retag_task_of_another_project_and_bad_bodies_are_400(dresses, annotator, api_client_for):
    d = dresses
    _, shoe_type, (boot,) = make_project(name="Shoes", task="type", labels=("boot",))
    client = api_client_for(annotator)
    url = f"/api/images/{d['images'][0].id}/retag/"
    r = client.post(url, {"task": shoe_type.id, "label": boot.id, "expected_version": 0}, format="json")
    assert r.status_code == 400 and "another project" in r.json()["detail"]
    for body in ({"task": d["neck"].id, "label": d["v"].id},  # no version
                 {"task": d["neck"].id, "label": d["v"].id, "expected_version": -1},
                 {"task": 999999, "label": d["v"].id, "expected_version": 1},
                 {"task": d["neck"].id, "label": 999999, "expected_version": 1}):
        assert client.post(url, body, format="json").status_code == 400, body
    assert client.post("/api/images/999999/retag/", {"task": d["neck"].id, "label": d["v"].id,
                                                     "expected_version": 1}, format="json").status_code == 404


def test_retag_to_no_label(dresses, annotator, api_client_for):
    d = dresses
    r = api_client_for(annotator).post(f"/api/images/{d['images'][0].id}/retag/",
                                       {"task": d["neck"].id, "label": None, "expected_version": 1}, format="json")
    assert r.status_code == 200
    assert r.json()["annotation"]["label"] is None and r.json()["event"]["to_label"] is None


# --- projects, tasks, labels ----------------------------------------------------------

def test_admin_creates_project_task_and_labels(admin_user, api_client_for):
    client = api_client_for(admin_user)
    r = client.post("/api/projects/", {"name": "Tops", "description": "shirts", "test_ratio": 0.25}, format="json")
    assert r.status_code == 201, r.content
    project = r.json()
    assert project["slug"] == "tops" and project["test_ratio"] == 0.25

    r = client.post("/api/tasks/", {"project": project["id"], "name": "collar", "label_names": ["none", "pointed"]},
                    format="json")
    assert r.status_code == 201, r.content
    task = r.json()
    assert [lb["name"] for lb in task["labels"]] == ["none", "pointed"]

    r = client.post("/api/labels/", {"task": task["id"], "name": "mandarin"}, format="json")
    assert r.status_code == 201
    assert r.json()["position"] == 3
    assert client.post("/api/labels/", {"task": task["id"], "name": "mandarin"}, format="json").status_code == 400
    assert client.post("/api/tasks/", {"project": project["id"], "name": "collar"}, format="json").status_code == 400
    assert client.post("/api/projects/", {"name": "Tops"}, format="json").status_code == 400
    assert client.post("/api/projects/", {"name": "Bad", "test_ratio": 1.5}, format="json").status_code == 400

    r = client.patch(f"/api/projects/{project['id']}/", {"description": "all tops"}, format="json")
    assert r.status_code == 200 and r.json()["description"] == "all tops"


def test_labels_listed_in_position_order_and_reordered(dresses, admin_user, annotator, api_client_for):
    d = dresses
    r = api_client_for(annotator).get("/api/labels/", {"task": d["neck"].id})
    assert [row["name"] for row in r.json()["results"]] == ["v-neck", "round", "square"]

    new_order = [d["square"].id, d["v"].id, d["round"].id]
    r = api_client_for(admin_user).post(f"/api/tasks/{d['neck'].id}/reorder-labels/", {"label_ids": new_order},
                                        format="json")
    assert r.status_code == 200, r.content
    assert [row["id"] for row in r.json()] == new_order
    r = api_client_for(annotator).get("/api/labels/", {"task": d["neck"].id})
    assert [row["id"] for row in r.json()["results"]] == new_order
    task = api_client_for(annotator).get(f"/api/tasks/{d['neck'].id}/").json()
    assert [lb["id"] for lb in task["labels"]] == new_order


def test_reorder_must_name_every_label_once(dresses, admin_user, api_client_for):
    d = dresses
    client = api_client_for(admin_user)
    url = f"/api/tasks/{d['neck'].id}/reorder-labels/"
    for label_ids in ([d["v"].id, d["round"].id], [d["v"].id, d["v"].id, d["round"].id],
                      [d["v"].id, d["round"].id, d["short"].id]):
        r = client.post(url, {"label_ids": label_ids}, format="json")
        assert r.status_code == 400
    assert client.post(url, {"label_ids": []}, format="json").status_code == 400
    assert list(Label.objects.filter(task=d["neck"]).values_list("name", flat=True)) == ["v-neck", "round", "square"]


def test_tasks_filter_by_project(dresses, annotator, api_client_for):
    make_project(name="Shoes", task="type", labels=("boot",))
    r = api_client_for(annotator).get("/api/tasks/", {"project": dresses["project"].id})
    assert sorted(row["name"] for row in r.json()["results"]) == ["neckline", "sleeve"]


def test_task_cannot_move_project(dresses, admin_user, api_client_for):
    shoes, _, _ = make_project(name="Shoes", task="type", labels=("boot",))
    r = api_client_for(admin_user).patch(f"/api/tasks/{dresses['neck'].id}/", {"project": shoes.id}, format="json")
    assert r.status_code == 400
    assert Task.objects.get(id=dresses["neck"].id).project == dresses["project"]


def test_names_are_data_and_round_trip_exactly(admin_user, annotator, api_client_for):
    admin = api_client_for(admin_user)
    project = admin.post("/api/projects/", {"name": XSS}, format="json").json()
    task = admin.post("/api/tasks/", {"project": project["id"], "name": XSS, "label_names": [XSS]},
                      format="json").json()
    quoted = 'say "hi" & \'bye\' </script><img src=x onerror=alert(2)>'
    admin.post("/api/labels/", {"task": task["id"], "name": quoted}, format="json")

    r = api_client_for(annotator).get("/api/labels/", {"task": task["id"]})
    assert r["Content-Type"].startswith("application/json")
    assert [row["name"] for row in r.json()["results"]] == [XSS, quoted]
    assert api_client_for(annotator).get(f"/api/projects/{project['id']}/").json()["name"] == XSS
    assert Label.objects.filter(name=XSS).exists() and Project.objects.filter(name=XSS).exists()


# --- annotations and events ------------------------------------------------------------

def test_annotations_filter_by_image_task_label(dresses, annotator, api_client_for):
    d = dresses
    client = api_client_for(annotator)
    r = client.get("/api/annotations/", {"image": d["images"][0].id})
    assert sorted(row["task"] for row in r.json()["results"]) == sorted([d["neck"].id, d["sleeve"].id])
    r = client.get("/api/annotations/", {"task": d["neck"].id, "label": d["v"].id})
    assert [row["image"] for row in r.json()["results"]] == [d["images"][i].id for i in (0, 2, 4)]
    assert all(row["version"] == 1 for row in r.json()["results"])


def test_events_filter_by_image_task_source_since(dresses, annotator, api_client_for):
    d = dresses
    image = d["images"][0]
    before = timezone.now()
    retag_image(image=image, task=d["neck"], label=d["square"], by=annotator, expected_version=1)
    client = api_client_for(annotator)

    r = client.get("/api/events/", {"image": image.id})
    rows = r.json()["results"]
    assert len(rows) == 3 and rows[0]["source"] == "annotator"  # newest first
    assert rows[0]["from_label"] == d["v"].id and rows[0]["to_label"] == d["square"].id
    assert rows[0]["by"] == annotator.username
    assert len(client.get("/api/events/", {"image": image.id, "task": d["sleeve"].id}).json()["results"]) == 1
    assert len(client.get("/api/events/", {"source": "import"}).json()["results"]) == 6
    assert [row["source"] for row in client.get("/api/events/", {"source": "annotator"}).json()["results"]] == \
        ["annotator"]
    since = client.get("/api/events/", {"since": (before - timedelta(milliseconds=1)).isoformat()}).json()
    assert [row["to_label"] for row in since["results"]] == [d["square"].id]
    assert client.get("/api/events/", {"source": "telepathy"}).status_code == 400


# --- imports ---------------------------------------------------------------------------

@pytest.fixture
def folder_source(tmp_path):
    """A split/label/image folder inside an allowed root."""
    from PIL import Image as PILImage

    root = tmp_path / "photos"
    for split, label, name in [("train", "v-neck", "a.jpg"), ("test", "round", "b.jpg")]:
        (root / split / label).mkdir(parents=True, exist_ok=True)
        PILImage.new("RGB", (8, 8), (200, 10, 10)).save(root / split / label / name)
    StorageRoot.objects.create(uri=root.as_uri() + "/")
    return root


def test_admin_starts_an_import_and_sees_its_progress(folder_source, admin_user, annotator, api_client_for,
                                                      django_capture_on_commit_callbacks):
    project = Project.objects.create(name="Folder", slug="folder")
    with django_capture_on_commit_callbacks(execute=False) as queued:
        r = api_client_for(admin_user).post(
            "/api/imports/", {"project": project.id, "kind": "folder", "source_uri": folder_source.as_uri(),
                              "options": {"task": "neckline"}}, format="json")
    assert r.status_code == 201, r.content
    assert len(queued) == 1  # the job goes to the worker once the request commits
    job = r.json()
    assert job["kind"] == "folder" and job["created_by"] == admin_user.username and job["state"] == "queued"
    assert job["source_uri"].startswith("file://") and job["options"] == {"task": "neckline"}
    for field in ("state", "total", "processed", "progress", "added", "relabelled", "unchanged", "missing",
                  "corrupt", "refused", "problems", "message", "started_at", "finished_at"):
        assert field in job
    assert ImportJob.objects.filter(id=job["id"], project=project).exists()

    listed = api_client_for(admin_user).get("/api/imports/", {"project": project.id}).json()["results"]
    assert [row["id"] for row in listed] == [job["id"]]
    # Jobs name source paths and buckets: admins only, as on the import pages.
    assert api_client_for(annotator).get(f"/api/imports/{job['id']}/").status_code == 403
    detail = api_client_for(admin_user).get(f"/api/imports/{job['id']}/").json()
    assert detail["state"] in {"queued", "running", "done", "failed"}


def test_import_outside_the_allowed_roots_is_refused(folder_source, admin_user, api_client_for, tmp_path):
    project = Project.objects.create(name="Folder", slug="folder")
    r = api_client_for(admin_user).post(
        "/api/imports/", {"project": project.id, "kind": "folder", "source_uri": "file:///etc/"}, format="json")
    assert r.status_code == 400
    assert "outside" in r.json()["detail"]
    r = api_client_for(admin_user).post(
        "/api/imports/", {"project": project.id, "kind": "nonsense", "source_uri": folder_source.as_uri()},
        format="json")
    assert r.status_code == 400


def test_import_progress_fields(dresses, admin_user, api_client_for):
    job = ImportJob.objects.create(project=dresses["project"], kind="manifest", source_uri="file:///x.csv",
                                   state="running", total=200, processed=50, added=40, corrupt=2,
                                   problems=[{"row": 3, "uri": "file:///x/3.jpg", "reason": "corrupt"}])
    row = api_client_for(admin_user).get(f"/api/imports/{job.id}/").json()
    assert row["progress"] == 0.25 and row["added"] == 40 and row["corrupt"] == 2 and row["state"] == "running"
    assert row["problems"][0]["reason"] == "corrupt"


# --- storage roots ----------------------------------------------------------------------

def test_admin_manages_storage_roots(admin_user, api_client_for, tmp_path):
    client = api_client_for(admin_user)
    r = client.post("/api/storage-roots/", {"uri": "s3://bucket/photos", "note": "the shop"}, format="json")
    assert r.status_code == 201, r.content
    root = r.json()
    assert root["uri"] == "s3://bucket/photos/" and root["note"] == "the shop"
    assert [row["uri"] for row in client.get("/api/storage-roots/").json()["results"]] == ["s3://bucket/photos/"]
    assert client.post("/api/storage-roots/", {"uri": "http://169.254.169.254/"}, format="json").status_code == 400
    assert client.post("/api/storage-roots/", {"uri": "relative/path"}, format="json").status_code == 400
    assert client.delete(f"/api/storage-roots/{root['id']}/").status_code == 204
    assert not StorageRoot.objects.exists()


@pytest.mark.parametrize("kind, options, field, says", [
    ("folder", {"task": ["x"]}, "task", "Not a valid string."),
    ("folder", {"task": "t" * 5000}, "task", "no more than 100 characters"),
    ("folder", {"workers": "many"}, "workers", "valid integer"),
    ("folder", {"workers": 0}, "workers", "greater than or equal to 1"),
    ("folder", {"tsak": "neckline"}, "tsak", "not an option of a folder import; its options: task, workers"),
    ("manifest", {"task": "neckline"}, "task", "not an option of a manifest import; its options: workers"),
])
def test_import_options_are_checked_against_the_kind(folder_source, admin_user, api_client_for, kind, options,
                                                     field, says):
    """A wrong option is a 400 naming it, not a job that fails in the worker (a list as the task
    name was an AttributeError there; a 5,000-character name made a task)."""
    project = Project.objects.create(name="Folder", slug="folder")
    source = (folder_source.as_uri() + ("/m.csv" if kind == "manifest" else ""))
    r = api_client_for(admin_user).post("/api/imports/", {"project": project.id, "kind": kind, "source_uri": source,
                                                          "options": options}, format="json")
    assert r.status_code == 400, r.content
    errors = r.json()["options"][field]
    assert any(says in e for e in errors), errors
    assert not ImportJob.objects.exists()


def test_import_options_must_be_an_object(folder_source, admin_user, api_client_for):
    project = Project.objects.create(name="Folder", slug="folder")
    r = api_client_for(admin_user).post("/api/imports/", {"project": project.id, "kind": "folder",
                                                          "source_uri": folder_source.as_uri(),
                                                          "options": "notadict"}, format="json")
    assert r.status_code == 400 and "Expected a dictionary" in r.json()["options"]["non_field_errors"][0], r.json()


def test_import_options_that_fit_are_kept(folder_source, admin_user, api_client_for, django_capture_on_commit_callbacks):
    project = Project.objects.create(name="Folder", slug="folder")
    with django_capture_on_commit_callbacks(execute=False):
        r = api_client_for(admin_user).post("/api/imports/", {
            "project": project.id, "kind": "folder", "source_uri": folder_source.as_uri(),
            "options": {"task": "  " + "n" * 100 + " ", "workers": 2}}, format="json")
    assert r.status_code == 201 and r.json()["options"] == {"task": "n" * 100, "workers": 2}, r.content
