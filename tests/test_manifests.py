"""Training manifests: a stable uri,label,split snapshot of usable labelled images."""
import csv
import io
import json
import tracemalloc

import pytest
from django.core.management import call_command

from labeling.models import Annotation, Image, ImageStatus
from labeling.services.labels import ensure_labels, get_or_create_task, reorder_labels
from labeling.services.manifests import build_training_manifest, write_training_manifest
from labeling.services.projects import create_project
from labeling.services.retag import retag_image
from mlcore import storage

pytestmark = pytest.mark.django_db


@pytest.fixture
def task(db):
    """Images of every kind: labelled ok ones, corrupt, missing, unlabelled, another task's."""
    project = create_project(name="Shop")
    task = get_or_create_task(project, "category")
    other = get_or_create_task(project, "sleeve")
    labels = ensure_labels(task, ["Shirt", "Pants", "Hat"])
    sleeve = ensure_labels(other, ["short"])
    rows = [("c.jpg", "train", "ok", "Shirt"), ("a.jpg", "test", "ok", "Pants"), ("b.jpg", "train", "ok", "Shirt"),
            ("bad.jpg", "train", "corrupt", "Hat"), ("gone.jpg", "test", "missing", "Pants"),
            ("none.jpg", "train", "ok", None)]
    for key, split, status, label in rows:
        image = Image.objects.create(project=project, key=key, uri=f"file:///data/{key}", split=split, status=status)
        if label:
            retag_image(image=image, task=task, label=labels[label], expected_version=0)
        retag_image(image=image, task=other, label=sleeve["short"], expected_version=0)
    other_project = create_project(name="Elsewhere")
    Image.objects.create(project=other_project, key="z.jpg", uri="file:///data/z.jpg", split="train")
    return task


def read_csv(uri):
    return list(csv.reader(io.StringIO(storage.read_bytes(uri).decode())))


def test_manifest_lists_usable_labelled_images_in_key_order(task, settings):
    uri = write_training_manifest(task)
    assert read_csv(uri) == [["uri", "label", "split"],
                             ["file:///data/a.jpg", "Pants", "test"],
                             ["file:///data/b.jpg", "Shirt", "train"],
                             ["file:///data/c.jpg", "Shirt", "train"]]
    assert uri.startswith(f"{settings.STORAGE_URI}/projects/{task.project.slug}/manifests/{task.id}-")


def test_sidecar_holds_label_order_counts_and_checksum(task):
    labels = {lb.name: lb.id for lb in task.labels.all()}
    reorder_labels(task, [labels["Hat"], labels["Shirt"], labels["Pants"]])
    result = build_training_manifest(task)
    sidecar = json.loads(storage.read_bytes(result.sidecar_uri))
    assert sidecar["labels"] == ["Hat", "Shirt", "Pants"] == result.labels
    assert json.loads(storage.read_bytes(result.labels_uri)) == ["Hat", "Shirt", "Pants"]
    assert sidecar["sha256"] == result.sha256 == storage.sha256(storage.read_bytes(result.uri))
    assert result.uri.endswith(f"-{result.sha256[:12]}.csv") and sidecar["csv"] == result.uri
    assert sidecar["counts"]["by_label"] == {"Hat": {"train": 0, "test": 0}, "Shirt": {"train": 2, "test": 0},
                                             "Pants": {"train": 0, "test": 1}}
    assert (sidecar["counts"]["rows"], sidecar["counts"]["train"], sidecar["counts"]["test"]) == (3, 2, 1)
    assert sidecar["counts"]["excluded"] == {"corrupt": 1, "missing": 1}


def test_same_labels_give_the_same_bytes_and_a_retag_changes_them(task):
    first = build_training_manifest(task)
    assert build_training_manifest(task).sha256 == first.sha256
    image = Image.objects.get(project=task.project, key="c.jpg")
    retag_image(image=image, task=task, label=task.labels.get(name="Hat"), expected_version=1)
    second = build_training_manifest(task)
    assert second.sha256 != first.sha256 and storage.exists(first.uri)  # the old snapshot stays
    assert ["file:///data/c.jpg", "Hat", "train"] in read_csv(second.uri)


def test_mlcore_reads_it_with_the_sidecar_label_order(task):
    from mlcore import data

    result = build_training_manifest(task)
    manifest = data.read_manifest(result.uri, labels=result.labels)
    assert manifest.uris == ["file:///data/a.jpg", "file:///data/b.jpg", "file:///data/c.jpg"]
    assert manifest.splits == ["test", "train", "train"]
    assert manifest.tasks == {"label": ["Shirt", "Pants", "Hat"]}
    assert manifest.targets[:, 0].tolist() == [1, 0, 0]


def test_export_manifest_command_prints_the_uri(task):
    out, err = io.StringIO(), io.StringIO()
    call_command("export_manifest", task.project.slug, "category", stdout=out, stderr=err)
    uri = out.getvalue().strip()
    assert storage.exists(uri) and "3 rows (2 train, 1 test), 3 labels" in err.getvalue()
    assert Image.objects.filter(status=ImageStatus.CORRUPT).count() == 1


def test_export_bytes_stay_those_written_before_streaming(task):
    """The exact bytes (so the sha256 in the file name) for a known project, quoting and
    non-ASCII included, as the export wrote them when it built the file in memory."""
    image = Image.objects.create(project=task.project, key='d, "quoted" é.jpg', uri='file:///data/d, "quoted" é.jpg',
                                 split="test")
    retag_image(image=image, task=task, label=ensure_labels(task, ["Hüte"])["Hüte"], expected_version=0)
    result = build_training_manifest(task)
    assert storage.read_bytes(result.uri) == ('uri,label,split\n'
                                              'file:///data/a.jpg,Pants,test\n'
                                              'file:///data/b.jpg,Shirt,train\n'
                                              'file:///data/c.jpg,Shirt,train\n'
                                              '"file:///data/d, ""quoted"" é.jpg",Hüte,test\n').encode()
    assert result.sha256 == storage.sha256(storage.read_bytes(result.uri)) and result.rows == 4
    assert result.counts["by_label"]["Hüte"] == {"train": 0, "test": 1}


def _export_peak_bytes(task) -> int:
    tracemalloc.start()
    try:
        build_training_manifest(task)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _add_labelled_images(project, task, label, start: int, n: int) -> None:
    images = Image.objects.bulk_create(
        Image(project=project, key=f"img/{i:07d}.jpg", uri=f"file:///data/img/{i:07d}.jpg",
              split="test" if i % 5 == 0 else "train") for i in range(start, start + n))
    Annotation.objects.bulk_create(Annotation(image=im, task=task, label=label) for im in images)


def test_export_memory_is_flat_in_the_number_of_images(db):
    """Rows stream from a server-side cursor into the file: 10x the images, about the same peak."""
    project = create_project(name="Big")
    task = get_or_create_task(project, "category")
    label = ensure_labels(task, ["Shirt"])["Shirt"]
    _add_labelled_images(project, task, label, 0, 2_000)
    small = _export_peak_bytes(task)
    _add_labelled_images(project, task, label, 2_000, 18_000)
    large = _export_peak_bytes(task)
    assert large < 1.5 * small + 256 * 1024, (small, large)
