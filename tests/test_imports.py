"""Dataset import as an idempotent sync: folders, zip archives, manifests; corrupt files;
split for life; missing images; allowed roots; thumbnails; the import_dataset command."""
import csv
import io
import os
import zipfile
from pathlib import Path

import pytest
from django.core.management import call_command
from PIL import Image as PILImage

from tests.image_samples import BROKEN, GOOD, jpeg, png
from labeling.models import Annotation, EventSource, Image, ImageStatus, ImportJob, LabelEvent, Task
from labeling.services import imports
from labeling.services.imports import ImportRefused, assign_split, run_import, safe_extract, start_import
from labeling.services.imports import writing
from labeling.services.imports.progress import OUTCOMES, ImportRun
from labeling.services.projects import project_storage_uri
from labeling.services.storage_roots import allowed_roots
from labeling.services.retag import retag_image
from labeling.services.thumbnails import NoThumbnail, thumbnail_bytes, thumbnail_uri
from mlcore import storage

pytestmark = pytest.mark.django_db

Kind = ImportJob.Kind


def put(root: Path, rel: str, data: bytes) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def sync(project, kind, source, **options) -> ImportJob:
    job = run_import(start_import(project=project, kind=kind, source_uri=str(source), options=options,
                                  enqueue=False))
    assert job.state == ImportJob.State.DONE, job.message
    return job


def label_of(project, key, task="label") -> str | None:
    ann = Annotation.objects.filter(image__project=project, image__key=key, task__name=task).first()
    return ann.label.name if ann and ann.label else None


def write_manifest(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    out = io.StringIO()
    csv.writer(out).writerows([header, *rows])
    path.write_text(out.getvalue())
    return path


# --------------------------------------------------------------------------- folders

def test_folder_import_split_label_layout(project, data):
    put(data, "ds/train/cat/a.jpg", jpeg((200, 0, 0)))
    put(data, "ds/train/dog/b.png", png((0, 200, 0)))
    put(data, "ds/test/cat/c.jpg", jpeg((0, 0, 200)))
    put(data, "ds/.DS_Store", b"junk")  # hidden files are skipped silently
    job = sync(project, Kind.FOLDER, data / "ds", task="animal")

    assert (job.total, job.processed, job.added, job.refused, job.corrupt) == (3, 3, 3, 0, 0)
    images = {im.key: im for im in Image.objects.filter(project=project)}
    assert {k: im.split for k, im in images.items()} == {
        "train/cat/a.jpg": "train", "train/dog/b.png": "train", "test/cat/c.jpg": "test"}
    assert label_of(project, "train/dog/b.png", "animal") == "dog"
    task = Task.objects.get(project=project, name="animal")
    assert [lb.name for lb in task.labels.all()] == ["cat", "dog"]
    events = LabelEvent.objects.filter(task=task)
    assert events.count() == 3
    assert {(e.source, e.reference, e.from_label_id) for e in events} == {(EventSource.IMPORT, f"import:{job.id}", None)}
    a = images["train/cat/a.jpg"]
    assert (a.status, a.width, a.height, a.source_uri) == ("ok", 16, 12, (data / "ds").as_uri())
    assert a.checksum == storage.sha256((data / "ds/train/cat/a.jpg").read_bytes())
    assert a.thumbnail_uri == thumbnail_uri(project, a.checksum)
    assert PILImage.open(io.BytesIO(storage.read_bytes(a.thumbnail_uri))).format == "JPEG"


def test_label_image_layout_assigns_split_by_hash(project, data):
    keys = [f"{label}/{i}.jpg" for label in ("cat", "dog") for i in range(12)]
    for key in keys:
        put(data, f"flat/{key}", jpeg())
    sync(project, Kind.FOLDER, data / "flat")
    splits = dict(Image.objects.filter(project=project).values_list("key", "split"))
    assert splits == {k: assign_split(k, 0.25) for k in keys}
    assert set(splits.values()) == {"train", "test"}


def test_assign_split_is_deterministic_and_follows_the_ratio():
    keys = [f"img/{i:05d}.jpg" for i in range(20000)]
    test_share = sum(assign_split(k, 0.2) == "test" for k in keys) / len(keys)
    assert 0.19 < test_share < 0.21
    assert [assign_split(k, 0.2) for k in keys[:50]] == [assign_split(k, 0.2) for k in keys[:50]]
    assert {assign_split(k, 0.0) for k in keys[:500]} == {"train"}


def test_layout_problems_are_refused_rows_and_the_rest_goes_on(project, data):
    put(data, "ds/train/cat/a.jpg", jpeg())
    put(data, "ds/valid/cat/b.jpg", jpeg())
    put(data, "ds/README.md", b"# hello")
    put(data, "ds/train/cat/deep/c.jpg", jpeg())
    job = sync(project, Kind.FOLDER, data / "ds")
    assert (job.added, job.refused, job.problems_total) == (1, 3, 3)
    reasons = {p["uri"].split("/ds/")[1]: p["reason"] for p in job.problems}
    assert "neither train nor test" in reasons["valid/cat/b.jpg"]
    assert "not an image file" in reasons["README.md"]
    assert "layout" in reasons["train/cat/deep/c.jpg"]


def test_symlink_leading_outside_the_root_is_refused(project, data, tmp_path):
    secret = tmp_path / "secret.jpg"
    secret.write_bytes(jpeg())
    put(data, "ds/train/cat/a.jpg", jpeg())
    os.symlink(secret, data / "ds/train/cat/link.jpg")
    job = sync(project, Kind.FOLDER, data / "ds")
    assert (job.added, job.refused) == (1, 1)
    assert "outside every allowed storage root" in job.problems[0]["reason"]
    assert not Image.objects.filter(key="train/cat/link.jpg").exists()


def test_a_second_key_for_one_file_is_refused(project, data):
    """A symlink inside the root to another image of the same source is the same file: one image."""
    put(data, "ds/train/cat/a.jpg", jpeg())
    (data / "ds/train/dog").mkdir(parents=True)
    os.symlink(data / "ds/train/cat/a.jpg", data / "ds/train/dog/alias.jpg")
    job = sync(project, Kind.FOLDER, data / "ds")
    assert (job.added, job.refused) == (1, 1)
    assert "same file as row" in job.problems[0]["reason"]
    # The same file under a manifest's key (another source) is refused too: it is already an image.
    manifest = write_manifest(data / "m.csv", ["uri", "split", "label"], [["ds/train/cat/a.jpg", "train", "cat"]])
    job = sync(project, Kind.MANIFEST, manifest)
    assert (job.added, job.refused) == (0, 1)
    assert "already image 'train/cat/a.jpg'" in job.problems[0]["reason"]
    assert Image.objects.filter(project=project).count() == 1


def test_a_job_runs_once_unless_its_worker_died(project, data, settings):
    from datetime import timedelta

    from django.utils import timezone

    put(data, "ds/train/cat/a.jpg", jpeg())
    job = start_import(project=project, kind=Kind.FOLDER, source_uri=str(data / "ds"), enqueue=False)
    assert imports.claim(job)
    assert not imports.claim(job)  # a redelivered message while the first worker runs it
    assert run_import(job).added == 0  # ... does nothing
    ImportJob.objects.filter(pk=job.pk).update(heartbeat_at=timezone.now() - timedelta(seconds=600))
    job = run_import(job)  # the worker died: taken over and run from the top
    assert job.state == ImportJob.State.DONE and job.added == 1
    assert not imports.claim(job)  # done is done


# --------------------------------------------------------------------------- idempotent sync

def test_reimport_changes_nothing(project, data):
    for i in range(5):
        put(data, f"ds/train/cat/{i}.jpg", jpeg((i * 40, 0, 0)))
    put(data, "ds/train/cat/bad.jpg", b"")
    sync(project, Kind.FOLDER, data / "ds")
    before = list(Image.objects.filter(project=project).order_by("id").values())
    thumbs = {p: p.stat().st_mtime_ns
              for p in storage.local_path(project_storage_uri(project, "thumbs")).rglob("*.jpg")}
    events = LabelEvent.objects.count()

    job = sync(project, Kind.FOLDER, data / "ds")
    assert (job.added, job.relabelled, job.updated, job.unchanged, job.corrupt, job.missing) == (0, 0, 0, 5, 1, 0)
    assert job.corrupt == 1  # still flagged, and still listed as a problem
    assert list(Image.objects.filter(project=project).order_by("id").values()) == before
    assert LabelEvent.objects.count() == events
    assert {p: p.stat().st_mtime_ns for p in thumbs} == thumbs


def test_missing_images_are_kept_and_come_back(project, data):
    put(data, "ds/train/cat/a.jpg", jpeg())
    gone = put(data, "ds/train/cat/b.jpg", jpeg((1, 2, 3)))
    sync(project, Kind.FOLDER, data / "ds")
    kept = gone.read_bytes()
    gone.unlink()

    job = sync(project, Kind.FOLDER, data / "ds")
    b = Image.objects.get(key="train/cat/b.jpg")
    assert (job.missing, b.status) == (1, ImageStatus.MISSING)
    assert "gone from" in b.status_reason
    assert label_of(project, "train/cat/b.jpg") == "cat" and b.label_events.count() == 1

    assert sync(project, Kind.FOLDER, data / "ds").missing == 0  # already missing: not counted again
    gone.write_bytes(kept)
    job = sync(project, Kind.FOLDER, data / "ds")
    b.refresh_from_db()
    assert (job.updated, b.status, b.status_reason) == (1, ImageStatus.OK, "")


def test_changed_content_is_revalidated(project, data):
    path = put(data, "ds/train/cat/a.jpg", jpeg((255, 0, 0)))
    sync(project, Kind.FOLDER, data / "ds")
    first = Image.objects.get(key="train/cat/a.jpg")

    path.write_bytes(jpeg((0, 0, 255), size=(20, 10)))
    job = sync(project, Kind.FOLDER, data / "ds")
    second = Image.objects.get(pk=first.pk)
    assert (job.updated, job.unchanged) == (1, 0)
    assert second.checksum != first.checksum and second.thumbnail_uri != first.thumbnail_uri
    assert (second.width, second.height) == (20, 10)
    assert storage.exists(second.thumbnail_uri)

    path.write_bytes(b"now a text file")
    sync(project, Kind.FOLDER, data / "ds")
    third = Image.objects.get(pk=first.pk)
    assert third.status == ImageStatus.CORRUPT and "not an image" in third.status_reason
    assert third.split == first.split


# --------------------------------------------------------------------------- corrupt and odd files

def test_odd_but_valid_images_are_normalised(project, data):
    for name, (content, _) in GOOD.items():
        put(data, f"ds/train/odd/{name}", content)
    job = sync(project, Kind.FOLDER, data / "ds")
    assert (job.added, job.corrupt) == (len(GOOD), 0)
    for name, (_, size) in GOOD.items():
        im = Image.objects.get(key=f"train/odd/{name}")
        assert im.status == ImageStatus.OK, (name, im.status_reason)
        assert (im.width, im.height) == size, name
        assert PILImage.open(io.BytesIO(thumbnail_bytes(im))).mode == "RGB"


def test_broken_files_are_flagged_with_their_reason(project, data):
    for name, (content, _) in BROKEN.items():
        put(data, f"ds/train/bad/{name}", content)
    put(data, "ds/train/bad/fine.jpg", jpeg())
    job = sync(project, Kind.FOLDER, data / "ds")
    # Each file counts once: a corrupt one is corrupt, not also added (the page's tiles add up to the files).
    assert (job.added, job.corrupt, job.refused) == (1, len(BROKEN), 0)
    assert sum(getattr(job, k) for k in OUTCOMES) == job.processed == job.total == len(BROKEN) + 1
    for name, (_, word) in BROKEN.items():
        im = Image.objects.get(key=f"train/bad/{name}")
        assert im.status == ImageStatus.CORRUPT and word in im.status_reason, (name, im.status_reason)
        assert im.thumbnail_uri == "" and label_of(project, im.key) == "bad"
        with pytest.raises(NoThumbnail):
            thumbnail_bytes(im)
    assert {p["reason"].split(":")[0] for p in job.problems} == {"corrupt"}


def test_pixel_limit_comes_from_settings(project, data, settings):
    settings.IMAGE_MAX_PIXELS = 100
    put(data, "ds/train/cat/big.jpg", jpeg(size=(16, 12)))
    sync(project, Kind.FOLDER, data / "ds")
    im = Image.objects.get(key="train/cat/big.jpg")
    assert im.status == ImageStatus.CORRUPT and "192 pixels exceeds the limit of 100" in im.status_reason


# --------------------------------------------------------------------------- zip archives

def make_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, content in members.items():
            zf.writestr(name, content)
    return path


def test_zip_import_reads_members_and_refuses_escapes(project, data):
    archive = make_zip(data / "set.zip", {
        "train/cat/a.jpg": jpeg(), "test/dog/b.jpg": jpeg((0, 9, 9)), "cat/c.png": png(),
        "../evil/x.jpg": jpeg(), "/abs/y.jpg": jpeg()})
    job = sync(project, Kind.FOLDER, archive)
    assert (job.added, job.refused) == (3, 2), (job.total, job.problems)
    reasons = sorted(p["reason"] for p in job.problems)
    assert "absolute path" in reasons[0] and "'..'" in reasons[1]
    a = Image.objects.get(key="train/cat/a.jpg")
    assert a.uri.startswith(project_storage_uri(project, "originals"))
    assert storage.read_bytes(a.uri) == jpeg()
    assert Image.objects.get(key="test/dog/b.jpg").split == "test"

    again = sync(project, Kind.FOLDER, archive)
    assert (again.added, again.updated, again.unchanged) == (0, 0, 3)


def test_too_long_label_names_and_paths_are_refused_rows_that_make_no_label(project, data, client, admin_user):
    """A 300-character label folder made the label, then its image failed with a raw "OSError:
    [Errno 36] File name too long", leaving an empty label."""
    from labeling.models import Label
    from labeling.services.imports.entries import LABEL_MAX

    long_label, wide_label = "x" * 300, "é" * 150  # 150 characters, 300 bytes: a name no file system holds
    archive = make_zip(data / "long.zip", {
        f"train/{long_label}/a.jpg": jpeg(), f"train/{wide_label}/b.jpg": jpeg((0, 9, 9)),
        f"train/cat/{'n' * 300}.jpg": jpeg((9, 0, 9)), "train/cat/ok.jpg": jpeg((9, 9, 0))})
    put(data, f"ds/train/{'y' * (LABEL_MAX + 1)}/c.jpg", jpeg())  # on disk: a name the file system holds
    put(data, "ds/train/dog/d.jpg", jpeg((1, 2, 3)))
    job = sync(project, Kind.FOLDER, archive)
    assert (job.added, job.refused) == (1, 3), job.problems
    reasons = {p["uri"].rsplit("!", 1)[1].split("/")[1][:3]: p["reason"] for p in job.problems}
    assert reasons["xxx"].startswith(f"label name longer than {LABEL_MAX} characters")
    assert reasons["ééé"].startswith("path too long") and reasons["cat"].startswith("path too long")
    assert not any("Errno" in r or "OSError" in r for r in reasons.values())
    folder = sync(project, Kind.FOLDER, data / "ds")
    assert (folder.added, folder.refused) == (1, 1)
    assert folder.problems[0]["reason"].startswith(f"label name longer than {LABEL_MAX} characters")
    manifest = write_manifest(data / "m.csv", ["uri", "split", "label"], [["ds/train/dog/d.jpg", "train", "z" * 201]])
    job = sync(project, Kind.MANIFEST, manifest)
    assert job.refused == 1 and job.problems[0]["reason"].startswith("label name longer than")
    assert sorted(Label.objects.filter(task__project=project).values_list("name", flat=True)) == ["cat", "dog"]
    client.force_login(admin_user)
    assert f"label name longer than {LABEL_MAX} characters" in client.get(f"/imports/{job.id}/").content.decode()


def test_safe_extract_refuses_escapes_and_links(tmp_path):
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ok/a.txt", "fine")
        zf.writestr("../../escape.txt", "no")
        zf.writestr("/etc/evil.txt", "no")
        link = zipfile.ZipInfo("ok/link")
        link.external_attr = (0o120777 << 16)
        zf.writestr(link, "/etc/passwd")
    written, refused = safe_extract(archive, tmp_path / "out")
    assert written == [(tmp_path / "out" / "ok" / "a.txt").resolve()]
    assert sorted(name for name, _ in refused) == ["../../escape.txt", "/etc/evil.txt", "ok/link"]
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path / "out" / "ok" / "link").exists()


# --------------------------------------------------------------------------- manifests

def test_manifest_with_several_facets_and_every_uri_form(project, data, tmp_path):
    put(data, "m/img/a.jpg", jpeg())
    put(data, "m/img/b.jpg", jpeg((1, 1, 1)))
    abs_path = put(data, "elsewhere/c.jpg", jpeg((2, 2, 2)))
    uri_file = put(data, "elsewhere/d.jpg", jpeg((3, 3, 3)))
    (tmp_path / "outside.jpg").write_bytes(jpeg())
    manifest = write_manifest(data / "m" / "manifest.csv", ["uri", "split", "neckline", "sleeve"], [
        ["img/a.jpg", "train", "v-neck", "short"],
        ["./img/b.jpg", "", "round", ""],
        [str(abs_path), "test", "round", "long"],
        [uri_file.as_uri(), "train", "", "long"],
        ["../../outside.jpg", "train", "round", "long"],
        ["/etc/passwd", "", "round", "long"],
        ["http://169.254.169.254/latest/meta-data/", "", "round", "long"],
        ["img/nothere.jpg", "", "round", "long"],
        ["img/a.jpg", "train", "round", "long"],
    ])
    job = sync(project, Kind.MANIFEST, manifest)
    assert (job.total, job.added, job.refused) == (9, 4, 5)
    by_row = {p["row"]: p["reason"] for p in job.problems}
    assert "outside every allowed storage root" in by_row[6] and "outside" in by_row[7]
    assert "scheme http:// is not allowed" in by_row[8]
    assert "cannot read" in by_row[9] and "duplicate of row 2" in by_row[10]

    keys = set(Image.objects.filter(project=project).values_list("key", flat=True))
    assert keys == {"img/a.jpg", "img/b.jpg", os.path.normpath(abs_path), "file://" + str(uri_file)}
    assert label_of(project, "img/a.jpg", "neckline") == "v-neck"
    assert label_of(project, "img/a.jpg", "sleeve") == "short"
    assert label_of(project, "img/b.jpg", "sleeve") is None
    assert Image.objects.get(key="img/b.jpg").split == assign_split("img/b.jpg", 0.25)
    assert Image.objects.get(key=str(abs_path)).split == "test"
    assert sorted(Task.objects.filter(project=project).values_list("name", flat=True)) == ["neckline", "sleeve"]
    assert LabelEvent.objects.filter(image__project=project).count() == 6


def test_manifest_splits_are_read_through_mlcore_s_vocabulary(project, data):
    for name in "abcde":
        put(data, f"s/{name}.jpg", jpeg((ord(name), 0, 0)))
    manifest = write_manifest(data / "s" / "manifest.csv", ["uri", "split", "label"], [
        ["a.jpg", " TRAIN ", "x"], ["b.jpg", "Test", "x"], ["c.jpg", "validation", "x"], ["d.jpg", "dev", "x"],
        ["e.jpg", "holdout", "x"]])
    job = sync(project, Kind.MANIFEST, manifest)
    assert (job.added, job.refused) == (2, 3)
    assert dict(Image.objects.filter(project=project).values_list("key", "split")) == {"a.jpg": "train",
                                                                                      "b.jpg": "test"}
    by_row = {p["row"]: p["reason"] for p in job.problems}
    assert "'validation' is neither train nor test: it is mlcore's validation split" in by_row[4]
    assert "val_fraction" in by_row[5] and "'dev'" in by_row[5]
    assert by_row[6] == "split 'holdout' is neither train nor test"


def test_manifest_relabel_is_an_import_event_and_split_stays_for_life(project, data, annotator):
    put(data, "m/a.jpg", jpeg())
    put(data, "m/b.jpg", jpeg((5, 5, 5)))
    path = data / "m" / "labels.csv"
    write_manifest(path, ["uri", "split", "category"], [["a.jpg", "train", "Shirt"], ["b.jpg", "train", "Polo"]])
    first = sync(project, Kind.MANIFEST, path)

    write_manifest(path, ["uri", "split", "category"], [["a.jpg", "test", "T-Shirt"], ["b.jpg", "train", "Polo"]])
    job = sync(project, Kind.MANIFEST, path)
    assert (job.relabelled, job.unchanged, job.problems_total) == (1, 1, 1)
    assert job.problems[0]["reason"] == "source says test but image is in train for life"
    a = Image.objects.get(key="a.jpg")
    assert a.split == "train" and label_of(project, "a.jpg", "category") == "T-Shirt"
    event = a.label_events.first()
    assert (event.from_label.name, event.to_label.name, event.source, event.reference) == (
        "Shirt", "T-Shirt", EventSource.IMPORT, f"import:{job.id}")
    assert first.id != job.id


def test_a_person_s_retag_survives_a_stale_reimport(project, data, annotator):
    put(data, "m/a.jpg", jpeg())
    path = write_manifest(data / "m" / "labels.csv", ["uri", "split", "category"], [["a.jpg", "", "Shirt"]])
    sync(project, Kind.MANIFEST, path)
    a, task = Image.objects.get(key="a.jpg"), Task.objects.get(name="category")
    polo = task.labels.create(name="Polo", position=9)
    retag_image(image=a, task=task, label=polo, by=annotator, expected_version=1)

    job = sync(project, Kind.MANIFEST, path)
    assert (job.relabelled, job.unchanged) == (0, 1)
    assert label_of(project, "a.jpg", "category") == "Polo"

    write_manifest(path, ["uri", "split", "category"], [["a.jpg", "", "Top"]])  # the source itself changed
    assert sync(project, Kind.MANIFEST, path).relabelled == 1
    assert label_of(project, "a.jpg", "category") == "Top"


def test_manifest_without_label_column_fails_the_job(project, data):
    path = write_manifest(data / "bad.csv", ["uri", "split"], [["a.jpg", "train"]])
    job = run_import(start_import(project=project, kind=Kind.MANIFEST, source_uri=str(path), enqueue=False))
    assert job.state == ImportJob.State.FAILED and "no label column" in job.message


def test_problem_list_is_capped_and_counts_stay_exact(project, data):
    rows = [[f"/etc/secret{i}.jpg", "", "x"] for i in range(imports.MAX_PROBLEMS + 50)]
    path = write_manifest(data / "many.csv", ["uri", "split", "label"], rows)
    job = sync(project, Kind.MANIFEST, path)
    assert (job.refused, job.problems_total, len(job.problems)) == (250, 250, imports.MAX_PROBLEMS)
    assert "the first 200 listed" in job.message


# --------------------------------------------------------------------------- starting and running

def test_start_import_refuses_a_source_outside_the_roots(project, data, tmp_path):
    for kind, uri in [(Kind.FOLDER, str(tmp_path)), (Kind.MANIFEST, "/etc/passwd"),
                      (Kind.S3_PREFIX, "http://169.254.169.254/"), (Kind.FOLDER, f"{data}/../")]:
        with pytest.raises(ImportRefused):
            start_import(project=project, kind=kind, source_uri=uri)
    with pytest.raises(ImportRefused, match="unknown import kind"):
        start_import(project=project, kind="ftp", source_uri=str(data))
    with pytest.raises(ImportRefused, match="needs an s3:// URI"):
        start_import(project=project, kind=Kind.S3_PREFIX, source_uri=str(data))
    assert not ImportJob.objects.exists()


def test_start_import_queues_the_task_on_commit(project, data, django_capture_on_commit_callbacks, monkeypatch):
    from labeling import tasks

    queued = []
    monkeypatch.setattr(tasks.run_import_job, "delay", queued.append)
    with django_capture_on_commit_callbacks(execute=True):
        job = start_import(project=project, kind=Kind.FOLDER, source_uri=str(data))
    assert queued == [job.id] and job.state == ImportJob.State.QUEUED


def test_the_task_runs_a_job_once(project, data):
    from labeling.tasks import run_import_job

    put(data, "ds/train/cat/a.jpg", jpeg())
    job = start_import(project=project, kind=Kind.FOLDER, source_uri=str(data / "ds"), enqueue=False)
    run_import_job(job.id)
    job.refresh_from_db()
    assert (job.state, job.added) == (ImportJob.State.DONE, 1)
    finished = job.finished_at
    run_import_job(job.id)  # redelivered: a done job is not rerun
    job.refresh_from_db()
    assert (job.finished_at, job.added) == (finished, 1)


def test_thumbnail_is_remade_on_demand(project, data):
    put(data, "ds/train/cat/a.jpg", jpeg())
    sync(project, Kind.FOLDER, data / "ds")
    im = Image.objects.get(key="train/cat/a.jpg")
    storage.local_path(im.thumbnail_uri).unlink()
    Image.objects.filter(pk=im.pk).update(thumbnail_uri="")
    im.refresh_from_db()
    assert PILImage.open(io.BytesIO(thumbnail_bytes(im))).size == (16, 12)
    im.refresh_from_db()
    assert im.thumbnail_uri == thumbnail_uri(project, im.checksum) and storage.exists(im.thumbnail_uri)


def test_import_dataset_command(data, tmp_path, settings):
    settings.IMPORT_ROOTS = []
    put(data, "ds/train/cat/a.jpg", jpeg())
    put(data, "ds/train/cat/b.jpg", b"")
    out = io.StringIO()
    call_command("import_dataset", "shop", str(data / "ds"), "--create-project", "--allow-root",
                 "--task", "category", stdout=out)
    text = out.getvalue()
    assert "allowed storage root" in text and ": done - 2 rows: 1 added" in text and "1 corrupt" in text and "empty file" in text
    assert label_of(Image.objects.get(key="train/cat/a.jpg").project, "train/cat/a.jpg", "category") == "cat"


# --------------------------------------------------------------------------- taken over after a lost worker

def _lose_worker(job: ImportJob, seconds: float = 600) -> None:
    """What a worker killed mid-import leaves: the job running, its heartbeat growing old."""
    from datetime import timedelta

    from django.utils import timezone

    ImportJob.objects.filter(pk=job.pk).update(state=ImportJob.State.RUNNING,
                                               heartbeat_at=timezone.now() - timedelta(seconds=seconds))


def test_a_stale_import_is_queued_again_then_finishes_with_nothing_twice(project, data):
    for i in range(3):
        put(data, f"ds/train/cat/{i}.jpg", jpeg((i * 50, 0, 0)))
    job = start_import(project=project, kind=Kind.FOLDER, source_uri=str(data / "ds"), enqueue=False)
    assert imports.claim(job) == 1
    # The first worker committed one image, then died.
    first = imports.open_source(job, allowed_roots())
    first.entries = first.entries[:1]
    writing.sync(ImportRun(job, 1), first)
    assert Image.objects.filter(project=project).count() == 1
    _lose_worker(job)

    assert imports.take_over_stale_imports(enqueue=False) == {"requeued": [job.pk], "failed": []}
    job.refresh_from_db()
    assert job.state == ImportJob.State.QUEUED and "taken over, attempt 2 of 3" in job.message
    assert imports.take_over_stale_imports(enqueue=False) == {"requeued": [], "failed": []}  # once

    job = run_import(job)
    assert job.state == ImportJob.State.DONE and job.attempts == 2, job.message
    assert "attempt 2" in job.message
    assert Image.objects.filter(project=project).count() == 3
    assert LabelEvent.objects.filter(image__project=project).count() == 3  # one each, none twice
    assert sorted(Image.objects.filter(project=project).values_list("key", flat=True)) == [
        f"train/cat/{i}.jpg" for i in range(3)]


def test_a_job_lost_too_often_fails_with_the_reason(project, data, settings):
    settings.IMPORT_MAX_ATTEMPTS = 2
    put(data, "ds/train/cat/a.jpg", jpeg())
    job = start_import(project=project, kind=Kind.FOLDER, source_uri=str(data / "ds"), enqueue=False)
    for _ in range(2):
        assert imports.claim(job)
        _lose_worker(job)
    assert not imports.claim(job)  # a redelivered message may not take it a third time
    assert imports.take_over_stale_imports(enqueue=False) == {"requeued": [], "failed": [job.pk]}
    job.refresh_from_db()
    assert job.state == ImportJob.State.FAILED and "worker lost 2 times" in job.message
    assert job.finished_at is not None


def test_a_worker_taken_over_stops_writing_progress(project, data):
    put(data, "ds/train/cat/a.jpg", jpeg())
    job = start_import(project=project, kind=Kind.FOLDER, source_uri=str(data / "ds"), enqueue=False)
    slow = ImportRun(job, imports.claim(job))
    slow.begin()
    _lose_worker(job)
    assert imports.claim(ImportJob.objects.get(pk=job.pk)) == 2  # the new worker
    slow.count("processed", 5)
    with pytest.raises(imports.Superseded):
        slow.flush(force=True)
    slow.finish(ImportJob.State.DONE, "slow worker's summary")
    job.refresh_from_db()
    assert (job.state, job.processed, job.message) == (ImportJob.State.RUNNING, 0, "")


def test_the_beat_takes_stale_imports_over():
    from labeling.celery import app

    import labeling.tasks  # noqa: F401 - registers the tasks

    entry = next(e for e in app.conf.beat_schedule.values() if e["task"] == "labeling.tasks.check_stale_imports")
    assert entry["schedule"] <= 120
    assert "labeling.tasks.check_stale_imports" in app.tasks
