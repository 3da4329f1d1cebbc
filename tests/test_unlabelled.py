"""The images without a label per task (Unlabelled, migration 0014) are kept by the
database through every writer: images imported one by one and in bulk, a task added,
retags to a label and back to none, a label merge and its undo, bulk ``update()``, raw
SQL, deletes of annotations, images, tasks and projects. After any of them the kept rows
equal a recount, and the grid's "no label" filter reads them in every order it offers."""
from __future__ import annotations

import pytest
from django.db import connection

from labeling.models import Annotation, Image, Project, Suspect, SuspectRun, Unlabelled
from labeling.services import browse, counts
from labeling.services.labels import get_or_create_task, merge_labels, undo_merge
from labeling.services.retag import retag_image, undo_retags
from tests.factories import make_image, make_project
from tests.test_grid_find_sort import walk
from tests.test_quality import two_runs  # noqa: F401 - the fixture

pytestmark = pytest.mark.django_db


def kept_right(project) -> set:
    stored = counts.unlabelled_stored(project)
    assert stored == counts.unlabelled_counted(project)
    return stored


def test_every_writer_keeps_the_unlabelled_images(annotator):
    project, task, (v, r, s) = make_project()
    a, b, c = (make_image(project, f"{k}.jpg") for k in "abc")  # row by row, no label yet
    assert kept_right(project) == {(task.id, a.id), (task.id, b.id), (task.id, c.id)}

    retag_image(image=a, task=task, label=v, by=annotator, expected_version=0)
    res = retag_image(image=b, task=task, label=r, by=annotator, expected_version=0)
    assert kept_right(project) == {(task.id, c.id)}
    undo_retags(task=task, items=[(b.id, res.annotation.version)], by=annotator)  # back to no label
    assert kept_right(project) == {(task.id, b.id), (task.id, c.id)}
    retag_image(image=b, task=task, label=r, by=annotator, expected_version=res.annotation.version + 1)
    retag_image(image=c, task=task, label=None, by=annotator, expected_version=0)  # an annotation, empty
    assert kept_right(project) == {(task.id, c.id)}

    merged = merge_labels(source=v, target=s, by=annotator)  # labelled stays labelled
    assert kept_right(project) == {(task.id, c.id)}
    undo_merge(task=task, reference=merged.reference, by=annotator)
    assert kept_right(project) == {(task.id, c.id)}

    other = get_or_create_task(project, "sleeve")  # a new task: every image is unlabelled for it
    assert kept_right(project) == {(task.id, c.id)} | {(other.id, i.id) for i in (a, b, c)}

    Annotation.objects.filter(task=task, image=a).update(label=None)  # a bulk update()
    assert (task.id, a.id) in kept_right(project)
    Annotation.objects.filter(task=task, label__isnull=True).update(label=r)
    assert not {p for p in kept_right(project) if p[0] == task.id}
    Annotation.objects.filter(image=b).delete()  # its label goes: unlabelled again
    assert (task.id, b.id) in kept_right(project)

    b.delete()
    assert all(i != b.id for _, i in kept_right(project))
    other.delete()
    assert kept_right(project) == set()
    bare, _, _ = make_project(name="Shoes")  # a project goes with its rows (images, tasks deleted)
    make_image(bare, "x.jpg")
    assert len(kept_right(bare)) == 1
    bare.delete()
    assert set(Unlabelled.objects.values_list("task_id", "image_id")) == kept_right(project)


def test_bulk_and_raw_writes_keep_them(annotator):
    """Many rows in one statement (the PostgreSQL triggers' transition tables): bulk_create
    of images and annotations, a raw INSERT ... SELECT, a bulk delete."""
    project, task, (v, r, _) = make_project()
    second = get_or_create_task(project, "sleeve")
    images = Image.objects.bulk_create([Image(project=project, key=f"{i}.jpg", uri=f"file:///{i}.jpg", split="train")
                                        for i in range(10)])
    assert len(kept_right(project)) == 20
    Annotation.objects.bulk_create([Annotation(image=im, task=task, label=v if i % 2 else None)
                                    for i, im in enumerate(images)])
    assert {i for t, i in kept_right(project) if t == task.id} == {im.id for im in images[::2]}
    with connection.cursor() as cursor:
        cursor.execute("INSERT INTO labeling_annotation (image_id, task_id, label_id, version, verified, updated_at) "
                       "SELECT id, %s, %s, 1, false, CURRENT_TIMESTAMP FROM labeling_image WHERE project_id = %s",
                       [second.id, r.id, project.id])
    assert {t for t, _ in kept_right(project)} == {task.id}
    Annotation.objects.filter(task=second, image__in=images[:3]).delete()
    Image.objects.filter(id__in=[im.id for im in images[:2]]).delete()
    assert kept_right(project) == ({(task.id, im.id) for im in images[2::2]} | {(second.id, images[2].id)})


def test_recount_rebuilds_unlabelled_rows_that_drifted():
    project, task, (v, *_) = make_project()
    labelled, bare = make_image(project, "a.jpg", task=task, label=v), make_image(project, "b.jpg")
    Unlabelled.objects.all().delete()  # as if loaded with the triggers off
    Unlabelled.objects.create(task=task, image=labelled)
    counts.recount(project)
    assert kept_right(project) == {(task.id, bare.id)}


def test_the_no_label_grid_reads_them_in_every_order(two_runs, annotator):
    w = two_runs
    task = w["task"]
    test, train = w["test"], w["train"]
    # test/01 and train/02 lose their label (their annotation stays, empty); test/06 has none at all
    for im in (test[1], train[2]):
        retag_image(image=im, task=task, label=None, by=annotator,
                    expected_version=Annotation.objects.get(image=im, task=task).version)
    Annotation.objects.filter(image=test[6], task=task).delete()
    unlabelled = [test[1], test[6], train[2]]
    f = browse.parse_filter(w["project"], {"label": "none"})
    assert walk(f, size=2) == [im.key for im in unlabelled]
    assert walk(browse.parse_filter(w["project"], {"label": "none", "split": "test"}), size=1) == [
        "test/01.jpg", "test/06.jpg"]
    confidence = {c.image.key: c.sort_value for c in browse.grid_page(
        browse.parse_filter(w["project"], {"sort": "confidence"}), size=50).cells}
    by_conf = sorted((confidence[im.key], im.id, im.key) for im in unlabelled)
    for descending in (False, True):
        minus = "-" if descending else ""
        got = walk(browse.parse_filter(w["project"], {"label": "none", "sort": minus + "confidence"}), size=2)
        assert got == [k for *_, k in sorted(by_conf, reverse=descending)]
        changed = walk(browse.parse_filter(w["project"], {"label": "none", "sort": minus + "changed"}), size=1)
        assert sorted(changed) == ["test/01.jpg", "train/02.jpg"]  # the two with an (empty) annotation
    sr = SuspectRun.objects.create(project=w["project"], task=task, run=w["run2"], state=SuspectRun.State.DONE)
    Suspect.objects.bulk_create([Suspect(suspect_run=sr, image=im, task=task, score=sc)
                                 for im, sc in ((test[1], .2), (test[6], .9), (test[0], .5))])
    assert walk(browse.parse_filter(w["project"], {"label": "none", "sort": "-suspect"}), size=1) == [
        "test/06.jpg", "test/01.jpg"]
    assert Project.objects.count() == 1
