"""MTurk pages and API: admins only; the admin's flow through the pages."""
from decimal import Decimal

import boto3
import pytest
from botocore.stub import ANY, Stubber

from labeling.celery import app as celery_app
from labeling.models import MTurkBatch, MTurkWorker
from labeling.services import mturk
from labeling.services.mturk import client as mt
from tests.factories import make_image, make_project

SANDBOX = "https://mturk-requester-sandbox.us-east-1.amazonaws.com"
PAGES = ["/mturk/", "/mturk/new/", "/mturk/workers/", "/mturk/{id}/"]
API = ["/api/mturk/batches/", "/api/mturk/batches/{id}/", "/api/mturk/batches/{id}/summary/", "/api/mturk/workers/"]


@pytest.fixture
def stub(monkeypatch):
    """Every client the pages build is this stubbed sandbox client."""
    client = boto3.client("mturk", region_name="us-east-1", endpoint_url=SANDBOX,
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    stubber = Stubber(client)
    stubber.activate()
    monkeypatch.setattr(mt, "make_client", lambda production=False: client)
    monkeypatch.setattr(mt, "_sleep", lambda s: None)
    yield stubber
    stubber.deactivate()


@pytest.fixture
def batch(db, s3):
    _, bucket = s3
    project, task, labels = make_project()
    images = [make_image(project, f"i{i}.jpg", task=task, label=labels[i % 3]) for i in range(4)]
    for im in images:
        im.uri = f"s3://{bucket}/{im.key}"
        im.save(update_fields=["uri"])
    return mturk.build_batch(project=project, task=task, selection_kind="filter", selection_params={})


@pytest.mark.parametrize("role", ["annotator", "scientist"])
def test_pages_and_api_refuse_non_admins(make_user, batch, client, api_client_for, role):
    user = make_user(role)
    client.force_login(user)
    for url in PAGES:
        assert client.get(url.format(id=batch.id)).status_code == 403, url
    assert client.post(f"/mturk/{batch.id}/apply/", {"reviewed": "1"}).status_code == 403
    assert client.post(f"/mturk/{batch.id}/send/").status_code == 403
    api = api_client_for(user)
    for url in API:
        assert api.get(url.format(id=batch.id)).status_code == 403, url
    assert api.post("/api/mturk/batches/", {"task": batch.task_id}, format="json").status_code == 403
    assert api.post(f"/api/mturk/batches/{batch.id}/apply/", {"reviewed": True}, format="json").status_code == 403
    assert api.post("/api/mturk/workers/W1/block/", {"reason": "x"}, format="json").status_code == 403


def test_anonymous_is_sent_to_login(batch, client, api_client_for):
    for url in PAGES:
        r = client.get(url.format(id=batch.id))
        assert r.status_code == 302 and r["Location"].startswith("/accounts/login/"), url
    for url in API:
        assert api_client_for(None).get(url.format(id=batch.id)).status_code in (401, 403)


@pytest.fixture
def eager():
    """Tasks run in the request (the send and sync buttons queue Celery tasks)."""
    old = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = True
    yield
    celery_app.conf.task_always_eager = old


def test_admin_builds_previews_and_sends(admin_user, batch, client, stub, eager):
    client.force_login(admin_user)
    assert mturk.fee_rule() in client.get("/mturk/new/").content.decode()  # the help states the rule priced
    form = {"task": batch.task_id, "selection": "filter", "status": "ok", "assignments_per_image": 3,
            "reward": "0.10", "images_per_hit": 2, "lifetime_hours": 24, "assignment_minutes": 10,
            "auto_approval_hours": 72, "min_approval_rate": 95, "qualification_min_score": 1,
            "agreement_threshold": 0.6, "min_seconds_per_image": 2}
    stub.add_response("get_account_balance", {"AvailableBalance": "10000.00"}, {})
    r = client.post("/mturk/new/", {**form, "action": "preview"})
    assert r.status_code == 200
    text = r.content.decode()
    assert "$0.60" in text and "$0.12" in text and "$0.72" in text and "$10000.00" in text  # 2 HITs x 3 x $0.10

    r = client.post("/mturk/new/", {**form, "action": "create", "name": "page batch"})
    new = MTurkBatch.objects.get(name="page batch")
    assert r.status_code == 302 and r["Location"] == f"/mturk/{new.id}/"
    stub.add_response("get_account_balance", {"AvailableBalance": "10000.00"}, {})
    assert "$0.72" in client.get(f"/mturk/{new.id}/").content.decode()

    stub.add_response("get_account_balance", {"AvailableBalance": "10000.00"}, {})
    stub.add_response("create_hit_type", {"HITTypeId": "T1"}, None)
    for h in new.hits.order_by("position"):
        stub.add_response("create_hit_with_hit_type", {"HIT": {"HITId": f"H{h.position}"}},
                          {"HITTypeId": "T1", "MaxAssignments": 3, "LifetimeInSeconds": 24 * 3600, "Question": ANY,
                           "RequesterAnnotation": ANY, "UniqueRequestToken": h.unique_token})
    assert client.post(f"/mturk/{new.id}/send/").status_code == 302
    new.refresh_from_db()
    assert new.state == MTurkBatch.State.SENT
    for h in new.hits.order_by("position"):
        stub.add_response("list_assignments_for_hit", {"Assignments": []}, {
            "HITId": h.hit_id, "MaxResults": 100, "AssignmentStatuses": ["Submitted", "Approved", "Rejected"]})
    assert client.post(f"/mturk/{new.id}/sync/").status_code == 302
    new.refresh_from_db()
    assert new.synced_at is not None
    stub.assert_no_pending_responses()


def test_admin_api_and_csv_and_workers(admin_user, batch, client, api_client_for, stub):
    api = api_client_for(admin_user)
    r = api.post("/api/mturk/batches/", {"task": batch.task_id, "selection": "images",
                                         "selection_params": {"image_ids": [batch.items.first().image_id]},
                                         "reward": "0.02"}, format="json")
    assert r.status_code == 201 and r.json()["cost"]["total"] == "0.09"  # 3 x ($0.02 + $0.01 minimum fee)
    assert api.get("/api/mturk/batches/").json()["results"][0]["id"] == r.json()["id"]

    client.force_login(admin_user)
    exported = client.get(f"/mturk/{batch.id}/export/")
    assert exported.status_code == 200 and b"image_url_1" in exported.content
    layout = client.get(f"/mturk/{batch.id}/export/?what=layout")
    assert b"${image_url_1}" in layout.content
    assert api.post(f"/api/mturk/batches/{batch.id}/apply/", {}, format="json").status_code == 400

    stub.add_response("create_worker_block", {}, {"WorkerId": "W7", "Reason": "fails gold"})
    r = client.post("/mturk/workers/", {"worker_id": "W7", "reason": "fails gold", "action": "block"})
    assert r.status_code == 302 and MTurkWorker.objects.get(worker_id="W7").blocked
    page = client.get("/mturk/workers/").content.decode()
    assert "W7" in page and "blocked" in page
    stub.add_response("delete_worker_block", {}, {"WorkerId": "W7", "Reason": ANY})
    assert api.post("/api/mturk/workers/W7/unblock/").json() == {"worker_id": "W7", "blocked": False}
    assert Decimal(batch.reward) == Decimal("0.05")
