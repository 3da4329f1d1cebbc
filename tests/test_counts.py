"""The counts the pages show are kept by the database (migration 0011) through every
writer: imports (bulk and row by row, missing-marking, corrupt content), retags by people
and imports, a bulk ``update()``, deletes. After any mix, the kept counts equal a recount."""
from __future__ import annotations

import csv
import io

import pytest
from django.core.management import call_command

from labeling.models import Annotation, Image, ImageCount, ImageStatus, ImportJob, LabelCount, Project
from labeling.services import browse, counts
from labeling.services.imports import run_import, start_import
from labeling.services.projects import create_project
from labeling.services.retag import retag_image
from tests.factories import make_image, make_project
from tests.image_samples import jpeg

pytestmark = pytest.mark.django_db
Kind = ImportJob.Kind


def put(root, rel, data: bytes):
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def sync(project, kind, source) -> ImportJob:
    job = run_import(start_import(project=project, kind=kind, source_uri=str(source), enqueue=False))
    assert job.state == ImportJob.State.DONE, job.message
    return job


def assert_kept_right(project):
    assert counts.stored(project) == counts.counted(project)
    assert counts.unlabelled_stored(project) == counts.unlabelled_counted(project)  # migration 0014


def test_imports_retags_and_status_changes_keep_the_counts(tmp_path, settings, annotator):
    root = tmp_path / "data"
    settings.IMPORT_ROOTS = [str(root)]
    project = create_project(name="Clothes", test_ratio=0.25)
    for i in range(6):
        put(root, f"ds/train/{'cat' if i % 2 else 'dog'}/{i}.jpg", jpeg((i * 40, 0, 0)))
    put(root, "ds/test/cat/t.jpg", jpeg((0, 9, 9)))
    gone = put(root, "ds/train/dog/gone.jpg", jpeg((1, 2, 3)))
    sync(project, Kind.FOLDER, root / "ds")  # new images: the bulk path
    images, labels = counts.stored(project)
    assert images == {("train", "ok"): 7, ("test", "ok"): 1}
    assert sum(labels.values()) == 8
    assert_kept_right(project)

    gone.unlink()  # missing-marking (a bulk update())
    put(root, "ds/train/cat/1.jpg", b"now a text file")  # corrupt content (row by row)
    put(root, "ds/train/cat/new.jpg", jpeg((5, 5, 5)))
    sync(project, Kind.FOLDER, root / "ds")
    images, _ = counts.stored(project)
    assert images == {("train", "ok"): 6, ("train", "corrupt"): 1, ("train", "missing"): 1, ("test", "ok"): 1}
    assert_kept_right(project)

    manifest = root / "m.csv"  # a relabel by import (retag_image, source import) and a second task
    out = io.StringIO()
    csv.writer(out).writerows([["uri", "split", "label", "sleeve"], ["ds/train/dog/0.jpg", "train", "cat", "long"]])
    manifest.write_text(out.getvalue())
    sync(project, Kind.MANIFEST, manifest)
    assert_kept_right(project)

    task = project.tasks.get(name="label")
    cat = task.labels.get(name="cat")
    image = Image.objects.get(project=project, key="train/dog/2.jpg")
    version = Annotation.objects.get(image=image, task=task).version
    retag_image(image=image, task=task, label=cat, by=annotator, expected_version=version)
    retag_image(image=image, task=task, label=None, by=annotator, expected_version=version + 1)  # unlabel
    assert_kept_right(project)

    Image.objects.filter(project=project, split="test").update(status=ImageStatus.CORRUPT)
    Annotation.objects.filter(image__key="train/cat/3.jpg").delete()
    Image.objects.filter(key="train/dog/4.jpg").delete()
    assert_kept_right(project)
    _, labels = counts.stored(project)
    assert labels[(task.id, cat.id, "test", "corrupt")] == 1


def test_the_grid_counts_read_the_kept_counts(annotator):
    project, task, (v, r, s) = make_project()
    make_image(project, "a.jpg", task=task, label=v)
    make_image(project, "b.jpg", task=task, label=v)
    make_image(project, "c.jpg", split="test", task=task, label=r)
    make_image(project, "d.jpg", status=ImageStatus.CORRUPT)
    f = browse.parse_filter(project, {"split": "train"})
    got = browse.label_counts(f)
    assert [(row.label, row.count) for row in got.rows] == [(v, 2), (r, 0), (s, 0), (None, 1)]
    assert (got.total, got.shown) == (3, 3)
    unlabelled = browse.parse_filter(project, {"label": "none"})
    assert [c.image.key for c in browse.grid_page(unlabelled).cells] == ["d.jpg"]
    assert browse.label_counts(unlabelled).shown == 1
    summary = browse.project_summary(project)
    assert (summary.ok, summary.corrupt, summary.images) == (3, 1, 4)


def test_recount_rebuilds_counts_that_drifted(capsys):
    project, task, (v, r, _) = make_project()
    for i in range(5):
        make_image(project, f"{i}.jpg", task=task, label=v if i % 2 else r)
    right = counts.stored(project)
    ImageCount.objects.filter(project=project).update(n=99)  # as if loaded with the triggers off
    LabelCount.objects.filter(task=task).delete()
    call_command("recount", project.slug)
    assert "were off; rebuilt" in capsys.readouterr().out
    assert counts.stored(project) == right == counts.counted(project)
    call_command("recount")
    assert "were right" in capsys.readouterr().out


def test_deleting_a_project_takes_its_counts():
    project, _, _ = make_project()
    make_image(project, "a.jpg")
    other, task, (v, *_) = make_project(name="Shoes")
    make_image(other, "b.jpg", task=task, label=v)
    project.delete()  # the counts go with it (a decrease never makes a row for a project being deleted)
    assert not Project.objects.filter(pk=project.pk).exists()
    assert list(ImageCount.objects.values_list("project_id", "n")) == [(other.id, 1)]
    assert_kept_right(other)


@pytest.mark.django_db(transaction=True)
def test_concurrent_opposite_retags_keep_the_counts(annotator):
    """Two annotators retagging X to Y and Y to X at once move the same two count rows in
    opposite directions (the triggers lock them in key order): every retag goes through and
    the counts stay right."""
    import threading

    from django.db import connection, connections

    if connection.vendor != "postgresql":
        pytest.skip("SQLite serialises writers")
    project, task, (x, y, _) = make_project()
    images = [make_image(project, f"{i}.jpg", task=task, label=x if i % 2 else y) for i in range(8)]
    errors = []

    def work(mine):
        try:
            for _ in range(10):
                for image in mine:
                    a = Annotation.objects.get(image=image, task=task)
                    retag_image(image=image, task=task, label=y if a.label_id == x.id else x, by=annotator,
                                expected_version=a.version)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=work, args=(images[k::2],)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert_kept_right(project)


def test_no_label_filter_of_a_fully_labelled_task_asks_nothing_of_the_images(django_assert_max_num_queries):
    project, task, (v, *_) = make_project()
    for i in range(3):
        make_image(project, f"{i}.jpg", task=task, label=v)
    f = browse.parse_filter(project, {"label": "none"})
    with django_assert_max_num_queries(2):  # the two count reads; no anti-join over the images
        assert list(f.images()) == []
