"""Mechanical Turk without credentials or S3: every failure is on the batch's page, in words an
admin can act on, and the CSV export works for images on local disk (signed, expiring Retag
links that workers open without a login).

No AWS credentials anywhere in these tests (env cleared, no shared files, no instance
metadata), as on a fresh `make run`; the send that fails in the worker runs in a real Celery
worker.
"""
from __future__ import annotations

import csv
import io
import time

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError
from django.core import signing
from PIL import Image as PILImage

from labeling.models import MTurkBatch
from labeling.services import mturk
from labeling.services.mturk import batches as mb
from labeling.services.mturk import client as mturk_client
from labeling.services.mturk.errors import NO_CREDENTIALS, explain
from mlcore import storage
from tests.conftest import wait_for
from tests.factories import make_project
from tests.image_samples import jpeg

AWS_VARS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_PROFILE",
            "AWS_DEFAULT_PROFILE")


@pytest.fixture
def no_aws(monkeypatch, tmp_path, settings):
    for name in AWS_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.delenv("MTURK_IMAGE_BUCKET", raising=False)
    settings.MTURK_IMAGE_BUCKET = ""
    settings.RETAG_PUBLIC_URL = ""


@pytest.fixture
def local_batch(db, tmp_path, no_aws, settings):
    """A draft batch of 4 images (one per HIT) whose originals are JPEGs on local disk."""
    from labeling.models import Image
    from labeling.services.retag import retag_image

    settings.IMPORT_ROOTS = [str(tmp_path / "photos")]  # images are read only from inside a storage root
    project, task, labels = make_project()
    for i in range(4):
        path = tmp_path / "photos" / f"i{i}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(jpeg(color=(40 * i, 90, 200 - 30 * i), size=(64, 48)))
        im = Image.objects.create(project=project, key=path.name, uri=storage.to_uri(path), split="train",
                                  width=64, height=48)
        retag_image(image=im, task=task, label=labels[i % 3], expected_version=None, source="import")
    return mturk.build_batch(project=project, task=task, selection_kind="filter", selection_params={})


def test_explanations_say_what_to_do():
    assert explain(NoCredentialsError()) == NO_CREDENTIALS
    assert "AWS_ACCESS_KEY_ID" in NO_CREDENTIALS and "Export CSV" in NO_CREDENTIALS
    offline = explain(EndpointConnectionError(endpoint_url="https://mturk-requester-sandbox.us-east-1.amazonaws.com"))
    assert "could not reach Mechanical Turk" in offline and "sandbox" in offline
    refused = ClientError({"Error": {"Code": "UnrecognizedClientException", "Message": "bad token"}}, "GetAccountBalance")
    assert "AWS refused the credentials (UnrecognizedClientException)" in explain(refused)
    assert "requestersandbox.mturk.com" in explain(refused)


def test_draft_page_says_why_there_is_no_balance_and_that_hits_are_not_on_mturk(local_batch, client, admin_user):
    client.force_login(admin_user)
    html = client.get(f"/mturk/{local_batch.id}/").content.decode()
    assert "no AWS credentials" in html and "AWS_ACCESS_KEY_ID" in html
    assert "NoCredentialsError" not in html and "Unable to locate credentials" not in html
    assert html.count("not on MTurk yet") == 4
    assert ">open<" not in html  # a draft's HITs are not open: they do not exist yet
    assert "0/4 created on MTurk" in html


def still_a_draft(html: str) -> bool:
    """The batch page offers every way out of a draft: send, export, layout."""
    return all(s in html for s in ("Send to MTurk", "Export CSV", "Layout HTML"))


def test_send_refused_up_front_is_on_the_page_and_leaves_a_draft(local_batch, client, admin_user, settings):
    client.force_login(admin_user)
    # Local images, no bucket, no public address: workers could not see them.
    r = client.post(f"/mturk/{local_batch.id}/send/", follow=True)
    local_batch.refresh_from_db()
    assert local_batch.state == MTurkBatch.State.DRAFT and "RETAG_PUBLIC_URL" in local_batch.error
    html = r.content.decode()
    assert "Not sent" in html and "MTURK_IMAGE_BUCKET" in html and "data-testid=\"mturk-error\"" in html
    assert still_a_draft(html)

    # With a public address the images are fine, but there are no credentials: said at once too.
    settings.RETAG_PUBLIC_URL = "https://retag.example.com"
    r = client.post(f"/mturk/{local_batch.id}/send/", follow=True)
    local_batch.refresh_from_db()
    assert local_batch.state == MTurkBatch.State.DRAFT and local_batch.error == NO_CREDENTIALS
    html = r.content.decode()
    assert "Set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY" in html and still_a_draft(html)
    assert not local_batch.hits.exclude(hit_id="").exists()

    # The balance line's way around, the CSV, is there and works.
    assert "Export CSV” and upload" in html
    r = client.get(f"/mturk/{local_batch.id}/export/")
    assert r.status_code == 200 and r["Content-Type"] == "text/csv"
    local_batch.refresh_from_db()
    assert local_batch.state == MTurkBatch.State.EXPORTED and local_batch.error == ""


def test_the_pages_and_readme_say_the_same_of_how_images_reach_workers(admin_user, client):
    import re
    from pathlib import Path

    from django.conf import settings as dj

    from labeling.services.mturk.images import HOW_IMAGES_REACH_WORKERS

    client.force_login(admin_user)
    html = client.get("/mturk/new/").content.decode()
    assert HOW_IMAGES_REACH_WORKERS in html.replace("&#x27;", "'")
    assert "without it such a batch is refused" not in html
    readme = re.sub(r"\s+", " ", (Path(dj.BASE_DIR) / "README.md").read_text().replace("`", ""))
    assert HOW_IMAGES_REACH_WORKERS in readme


def test_a_send_that_fails_in_the_worker_is_on_the_batch_page(local_batch, client, admin_user, settings,
                                                              monkeypatch, celery_worker_factory):
    """The web server has (made-up) credentials, the worker none: the worker's failure is recorded
    on the batch (it stayed "sending" before, with the error only in the worker's log)."""
    settings.RETAG_PUBLIC_URL = "https://retag.example.com"
    # The web server's balance check cannot reach MTurk (no network here) and backs off six
    # times before it gives up: the wait is MTurk's, not this test's.
    monkeypatch.setattr(mturk_client, "_sleep", lambda seconds: None)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLEEXAMPLE00")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "example-secret")
    celery_worker_factory(queues="default,gpu", extra_env={
        "AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": "", "RETAG_PUBLIC_URL": "https://retag.example.com"})
    client.force_login(admin_user)
    r = client.post(f"/mturk/{local_batch.id}/send/", follow=True)
    assert "Sending in the background" in r.content.decode()
    batch = wait_for(lambda: MTurkBatch.objects.filter(pk=local_batch.pk, state=MTurkBatch.State.DRAFT)
                     .exclude(error="").first(), timeout=90, what="the worker to fail the send")
    assert batch.error == NO_CREDENTIALS  # found before any HIT: still a draft
    html = client.get(f"/mturk/{batch.id}/").content.decode()
    assert "Not sent." in html and "Set AWS_ACCESS_KEY_ID" in html and "mturk-sending" not in html
    assert still_a_draft(html)


def test_csv_export_of_local_images_uses_signed_links_workers_can_open(local_batch, client, admin_user):
    admin = client
    admin.force_login(admin_user)
    page = admin.get(f"/mturk/{local_batch.id}/", HTTP_HOST="127.0.0.1:8000").content.decode()
    assert "served by Retag at http://127.0.0.1:8000/mturk/image/" in page
    assert "127.0.0.1 is not reachable from the internet" in page and "RETAG_PUBLIC_URL" in page

    r = admin.get(f"/mturk/{local_batch.id}/export/")
    assert r.status_code == 200 and r["Content-Type"] == "text/csv"
    rows = list(csv.DictReader(io.StringIO(r.content.decode())))
    assert len(rows) == 4
    urls = [row["image_url_1"] for row in rows]
    assert all(u.startswith("http://testserver/mturk/image/") for u in urls)
    local_batch.refresh_from_db()
    assert local_batch.state == MTurkBatch.State.EXPORTED

    from django.test import Client

    worker = Client()  # an MTurk worker: no Retag login
    got = worker.get(urls[0].removeprefix("http://testserver"))
    assert got.status_code == 200 and got["Content-Type"] == "image/jpeg"
    assert PILImage.open(io.BytesIO(got.content)).size[0] > 0
    token = urls[0].rstrip("/").rsplit("/", 1)[1]
    forged = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    assert worker.get(f"/mturk/image/{forged}/").status_code == 404
    assert worker.get(f"/mturk/{local_batch.id}/").status_code == 302  # the rest still needs a login


def test_signed_links_expire_with_the_batch(local_batch, monkeypatch):
    image = local_batch.items.first().image
    url = mb.signed_image_url(local_batch, image, "https://retag.example.com")
    token = url.rstrip("/").rsplit("/", 1)[1]
    assert mb.image_for_token(token) == image
    later = time.time() + mb.url_lifetime(local_batch) + 60
    monkeypatch.setattr(signing.time, "time", lambda: later)
    with pytest.raises(mb.BatchError, match="expired"):
        mb.image_for_token(token)
