"""Imports against real services: a Celery worker on Redis and on RabbitMQ, S3 on the moto
server, and a real sample of the clothing dataset with broken files mixed in."""
import csv
import gzip
import io
import random
import zipfile
from contextlib import contextmanager

import psycopg
import pytest
from django.db import connection
from PIL import Image as PILImage

from labeling.models import Annotation, Image, ImageStatus, ImportJob, LabelEvent
from labeling.services.imports import run_import, start_import
from labeling.services.projects import create_project
from labeling.services.storage_roots import add_root
from tests.conftest import SHARED_DATA, require_shared, wait_for
from tests.image_samples import bomb_png, jpeg

pytestmark = pytest.mark.integration

Kind = ImportJob.Kind


def noise_jpeg(seed: int, size: int = 256) -> bytes:
    out = io.BytesIO()
    PILImage.effect_noise((size, size), 40 + seed % 50).convert("RGB").save(out, "JPEG", quality=90)
    return out.getvalue()


def make_folder(root, n: int) -> None:
    for i in range(n):
        path = root / ("train" if i % 4 else "test") / f"class{i % 3}" / f"{i:04d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(noise_jpeg(i))


@contextmanager
def project_locked(project):
    """Hold the project's row lock from another connection, as a second import would."""
    sd = connection.settings_dict
    with psycopg.connect(dbname=sd["NAME"], user=sd["USER"] or "postgres", host=sd["HOST"] or "127.0.0.1",
                         port=sd["PORT"] or 5432) as locker:
        locker.execute("select id from labeling_project where id = %s for no key update", [project.pk])
        yield
        locker.rollback()


def watch(job: ImportJob, timeout: float = 90) -> tuple[ImportJob, list[tuple[str, int]]]:
    """Poll the job row as the browser would; return the finished job and what was seen."""
    seen = []

    def finished():
        job.refresh_from_db()
        seen.append((job.state, job.processed))
        return job.state in (ImportJob.State.DONE, ImportJob.State.FAILED)

    wait_for(finished, timeout=timeout, interval=0.05, what=f"import job {job.id}")
    return job, seen


def test_import_runs_on_a_real_worker_over_redis(celery_worker_factory, tmp_path):
    make_folder(tmp_path / "ds", 240)
    add_root(str(tmp_path))
    project = create_project(name="Worker redis")
    worker = celery_worker_factory(broker="redis")
    with project_locked(project):  # the worker lists and counts, then waits to write
        job = start_import(project=project, kind=Kind.FOLDER, source_uri=str(tmp_path / "ds"),
                           options={"task": "texture"})
        running = wait_for(lambda: ImportJob.objects.filter(pk=job.pk, state="running", total=240).first(),
                           what="the job to run")
        assert running.processed < 240 and running.started_at and not running.finished_at
    job, seen = watch(job)
    assert job.state == ImportJob.State.DONE, (job.message, open(worker.log_path).read()[-2000:])
    assert (job.total, job.processed, job.added) == (240, 240, 240)
    assert Annotation.objects.filter(task__name="texture", image__project=project).count() == 240
    assert "run_import_job" in open(worker.log_path).read()


def test_import_runs_on_a_real_worker_over_rabbitmq(celery_worker_factory, tmp_path):
    make_folder(tmp_path / "ds", 20)
    add_root(str(tmp_path))
    project = create_project(name="Worker amqp")
    celery_worker_factory(broker="amqp")
    job, _ = watch(start_import(project=project, kind=Kind.FOLDER, source_uri=str(tmp_path / "ds")))
    assert (job.state, job.added, job.message) == (ImportJob.State.DONE, 20, job.message)
    again, _ = watch(start_import(project=project, kind=Kind.FOLDER, source_uri=str(tmp_path / "ds")))
    assert (again.unchanged, again.added, again.relabelled) == (20, 0, 0)


@pytest.mark.django_db
def test_s3_manifest_and_prefix_imports(s3):
    client, bucket = s3
    add_root(f"s3://{bucket}/data")
    put = lambda key, body: client.put_object(Bucket=bucket, Key=key, Body=body)  # noqa: E731
    for key in ("data/m/img/a.jpg", "data/m/img/b.jpg", "data/layout/train/cat/c.jpg",
                "data/layout/test/dog/d.jpg", "data/layout/dog/e.jpg"):
        put(key, jpeg((len(key), 10, 10)))
    put("private/secret.jpg", jpeg())
    put("data/m/manifest.csv", (
        "uri,split,neckline,sleeve\n"
        "img/a.jpg,train,v-neck,short\n"
        f"s3://{bucket}/data/m/img/b.jpg,,round,long\n"
        f"s3://{bucket}/private/secret.jpg,,round,long\n"
        "../../private/secret.jpg,,round,long\n"
        "s3://another-bucket/x.jpg,,round,long\n").encode())
    project = create_project(name="S3")

    job = run_import(start_import(project=project, kind=Kind.MANIFEST, enqueue=False,
                                  source_uri=f"s3://{bucket}/data/m/manifest.csv"))
    assert (job.state, job.added, job.refused) == ("done", 2, 3), job.message
    assert {p["row"] for p in job.problems} == {4, 5, 6}
    assert Image.objects.get(key="img/a.jpg").uri == f"s3://{bucket}/data/m/img/a.jpg"
    assert Annotation.objects.filter(image__key="img/a.jpg", task__name="sleeve").get().label.name == "short"

    job = run_import(start_import(project=project, kind=Kind.S3_PREFIX, enqueue=False,
                                  source_uri=f"s3://{bucket}/data/layout/"))
    assert (job.state, job.added) == ("done", 3), job.message
    splits = dict(Image.objects.filter(source_uri=f"s3://{bucket}/data/layout").values_list("key", "split"))
    assert (splits["train/cat/c.jpg"], splits["test/dog/d.jpg"]) == ("train", "test")
    assert all(im.thumbnail_uri for im in Image.objects.filter(project=project))

    client.delete_object(Bucket=bucket, Key="data/layout/dog/e.jpg")
    job = run_import(start_import(project=project, kind=Kind.S3_PREFIX, enqueue=False,
                                  source_uri=f"s3://{bucket}/data/layout"))
    assert (job.unchanged, job.missing) == (2, 1)
    assert Image.objects.get(key="dog/e.jpg").status == ImageStatus.MISSING


def broken_files(real: bytes) -> dict[str, bytes]:
    """Ten ways a file named like an image is not one."""
    png = io.BytesIO()
    PILImage.open(io.BytesIO(real)).save(png, "PNG")
    rnd = random.Random(3)
    return {
        "broken/empty.jpg": b"",
        "broken/truncated.jpg": real[: len(real) // 2],
        "broken/header-only.jpg": real[:300],
        "broken/text.jpg": b"not a photo\n" * 20,
        "broken/page.jpg": b"<html><body>404 Not Found</body></html>",
        "broken/zeros.jpg": bytes(2048),
        "broken/random.jpg": rnd.randbytes(4096),
        "broken/truncated.png": png.getvalue()[: len(png.getvalue()) // 3],
        "broken/gzipped.jpg": gzip.compress(real),
        "broken/bomb.png": bomb_png(),
    }


@pytest.mark.django_db
def test_real_clothing_sample_with_broken_files(tmp_path):
    archive = require_shared(SHARED_DATA / "clothing" / "clothing_dataset_full_short224_q75.zip")
    root = tmp_path / "clothing"
    with zipfile.ZipFile(archive) as zf:
        names = set(zf.namelist())
        rows = [r for r in csv.DictReader(io.StringIO(zf.read("images.csv").decode()))
                if f"images/{r['image']}.jpg" in names][:200]
        for r in rows:
            zf.extract(f"images/{r['image']}.jpg", root)
    broken = broken_files((root / f"images/{rows[0]['image']}.jpg").read_bytes())
    for rel, content in broken.items():
        (root / rel).parent.mkdir(exist_ok=True)
        (root / rel).write_bytes(content)
    lines = [[f"images/{r['image']}.jpg", "", r["label"]] for r in rows]
    lines += [[rel, "train", "Broken"] for rel in broken]
    with open(root / "manifest.csv", "w", newline="") as f:
        csv.writer(f).writerows([["uri", "split", "category"], *lines])
    add_root(str(root))
    project = create_project(name="Clothing sample")

    job = run_import(start_import(project=project, kind=Kind.MANIFEST, source_uri=str(root / "manifest.csv"),
                                  enqueue=False))
    assert (job.state, job.added, job.corrupt, job.refused) == ("done", 200, 10, 0), job.message  # once each
    labels = dict(Annotation.objects.filter(task__name="category").values_list("image__key", "label__name"))
    for r in rows:
        image = Image.objects.get(project=project, key=f"images/{r['image']}.jpg")
        assert image.status == ImageStatus.OK, image.status_reason
        assert labels[image.key] == r["label"] and image.thumbnail_uri
    for rel in broken:
        image = Image.objects.get(project=project, key=rel)
        assert image.status == ImageStatus.CORRUPT and image.status_reason, rel
    assert "decompression bomb" in Image.objects.get(key="broken/bomb.png").status_reason
    assert "empty file" in Image.objects.get(key="broken/empty.jpg").status_reason
    events = LabelEvent.objects.filter(image__project=project).count()
    assert events == 210

    again = run_import(start_import(project=project, kind=Kind.MANIFEST, source_uri=str(root / "manifest.csv"),
                                    enqueue=False))
    assert (again.unchanged, again.corrupt, again.added, again.relabelled, again.updated) == (200, 10, 0, 0, 0)
    assert LabelEvent.objects.filter(image__project=project).count() == events
