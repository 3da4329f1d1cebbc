"""Mechanical Turk: every request checked against botocore's real mturk model (Stubber on a
real sandbox client: a wrong parameter name or type fails), a 20-image round trip, the
requester-UI CSV round trip. Nothing here reaches the internet."""
import csv
import io
from datetime import datetime, timedelta, timezone as dt_timezone
from decimal import Decimal

import boto3
import pytest
from botocore.exceptions import ParamValidationError
from botocore.stub import ANY, Stubber

from labeling.models import EventSource, LabelEvent, MTurkAssignment, MTurkBatch, MTurkHIT, MTurkItem
from labeling.services import mturk
from labeling.services.mturk import client as mt
from labeling.services.retag import current_version, retag_image
from tests.factories import make_image, make_project

SANDBOX = "https://mturk-requester-sandbox.us-east-1.amazonaws.com"
T0 = datetime(2026, 11, 25, 8, 0, tzinfo=dt_timezone.utc)


@pytest.fixture(autouse=True)
def no_real_mturk(monkeypatch):
    """No test may build a client that talks to Amazon; waits are recorded, not slept."""
    def refuse(production=False):
        raise AssertionError("a test tried to reach the real MTurk")

    monkeypatch.setattr(mt, "make_client", refuse)
    slept = []
    monkeypatch.setattr(mt, "_sleep", slept.append)
    return slept


@pytest.fixture
def stub():
    client = boto3.client("mturk", region_name="us-east-1", endpoint_url=SANDBOX,
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    with Stubber(client) as s:
        yield client, s
        s.assert_no_pending_responses()


def hit_id(n):
    return f"3HIT{n:026d}"


def answer_xml(values):
    parts = "".join(f"<Answer><QuestionIdentifier>label_{k}</QuestionIdentifier><FreeText>{v}</FreeText></Answer>"
                    for k, v in enumerate(values, start=1))
    return ('<?xml version="1.0" encoding="UTF-8"?><QuestionFormAnswers xmlns="http://mechanicalturk.amazonaws.'
            f'com/AWSMechanicalTurkDataSchemas/2005-10-01/QuestionFormAnswers.xsd">{parts}</QuestionFormAnswers>')


def assignment(aid, worker, hit, values, seconds=60, status="Submitted"):
    return {"AssignmentId": aid, "WorkerId": worker, "HITId": hit, "AssignmentStatus": status,
            "AcceptTime": T0, "SubmitTime": T0 + timedelta(seconds=seconds), "Answer": answer_xml(values)}


def client_error(stubber, op, code, message="", status=400, **extra):
    stubber.add_client_error(op, service_error_code=code, service_message=message, http_status_code=status,
                             response_meta=extra or None)


@pytest.fixture
def dataset(db, s3):
    """A project on S3: 20 images labelled v-neck/round/square, plus 2 gold images."""
    _, bucket = s3
    project, task, labels = make_project()
    images = []
    for i in range(22):
        im = make_image(project, f"img{i:02d}.jpg", task=task, label=labels[i % 3])
        im.uri = f"s3://{bucket}/photos/img{i:02d}.jpg"
        im.save(update_fields=["uri"])
        images.append(im)
    return project, task, labels, images[:20], images[20:]


def build(dataset, **opts):
    project, task, labels, images, gold = dataset
    options = mturk.BatchOptions(**{"images_per_hit": 5, "reward": Decimal("0.05"), **opts})
    return mturk.build_batch(project=project, task=task, selection_kind="images",
                             selection_params={"image_ids": [im.id for im in images]}, options=options,
                             gold_image_ids=[g.id for g in gold])


def expect_send(s, batch, *, balance="10000.00", hit_type_errors=(), lost_hit=None):
    if balance:
        s.add_response("get_account_balance", {"AvailableBalance": balance}, {})
    for code in hit_type_errors:
        client_error(s, "create_hit_type", code, "slow down", status=503 if code == "ServiceUnavailable" else 400)
    s.add_response("create_hit_type", {"HITTypeId": "3TYPE0000000000000000000000000"}, {
        "Title": batch.title, "Description": batch.description, "Reward": "0.05",
        "AssignmentDurationInSeconds": 600, "AutoApprovalDelayInSeconds": 3 * 24 * 3600, "Keywords": ANY,
        "QualificationRequirements": [{"QualificationTypeId": "000000000000000000L0",
                                       "Comparator": "GreaterThanOrEqualTo", "IntegerValues": [95],
                                       "ActionsGuarded": "DiscoverPreviewAndAccept"}]})
    for hit in batch.hits.order_by("position"):
        if hit.position == lost_hit:
            # The answer to an earlier try was lost: MTurk says the token was used and names the HIT.
            client_error(s, "create_hit_with_hit_type", "RequestError",
                         f"The HIT with ID {hit_id(hit.position)} already exists (AWS.MechanicalTurk.HitAlreadyExists)")
            s.add_response("get_hit", {"HIT": {"HITId": hit_id(hit.position), "Expiration": T0 + timedelta(days=3)}},
                           {"HITId": hit_id(hit.position)})
            continue
        s.add_response("create_hit_with_hit_type", {"HIT": {"HITId": hit_id(hit.position),
                                                            "Expiration": T0 + timedelta(days=3)}}, {
            "HITTypeId": "3TYPE0000000000000000000000000", "MaxAssignments": 3, "LifetimeInSeconds": 3 * 24 * 3600,
            "Question": ANY, "RequesterAnnotation": f"retag:batch={batch.id}:hit={hit.position}",
            "UniqueRequestToken": hit.unique_token})


# --- money ---------------------------------------------------------------------------

def test_fee_rule_and_cost():
    assert mturk.fee_per_assignment(Decimal("0.50"), 3) == Decimal("0.10")
    assert mturk.fee_per_assignment(Decimal("0.50"), 10) == Decimal("0.20")
    assert mturk.fee_per_assignment(Decimal("0.01"), 3) == Decimal("0.01")  # the minimum fee
    cost = mturk.estimate_cost(hits=4, assignments_per_hit=3, reward=Decimal("0.05"))
    assert (cost.assignments, cost.rewards, cost.fees, cost.total) == (12, Decimal("0.60"), Decimal("0.12"),
                                                                       Decimal("0.72"))
    assert cost.fee_rate == Decimal("0.20")
    assert mturk.estimate_cost(hits=1, assignments_per_hit=10, reward=Decimal("0.50")).fee_rate == Decimal("0.40")
    # The words the pages show come from the same constants as the price.
    assert mturk.fee_rule() == "20% of the reward, 40% when a HIT has 10 or more assignments, at least $0.01 an assignment"


def test_stubbed_client_checks_the_real_api_model(stub):
    client, s = stub
    s.add_response("create_hit_type", {"HITTypeId": "X"})
    with pytest.raises(ParamValidationError):  # Reward is a string in MTurk's model
        client.create_hit_type(Title="t", Description="d", Reward=0.05, AssignmentDurationInSeconds=60)
    with pytest.raises(ParamValidationError):
        client.create_hit_type(Title="t", Description="d", Reward="0.05", AssignmentDuration=60)
    client.create_hit_type(Title="t", Description="d", Reward="0.05", AssignmentDurationInSeconds=60)


# --- build and send --------------------------------------------------------------------

def test_build_plans_hits_with_gold_and_versions(dataset):
    project, task, labels, images, gold = dataset
    batch = build(dataset)
    assert batch.hits.count() == 4 and batch.items.filter(is_gold=False).count() == 20
    for hit in batch.hits.all():
        assert len(hit.item_ids) == 6  # 5 images and one gold
        assert MTurkItem.objects.get(pk=hit.item_ids[-1]).is_gold
    item = batch.items.get(image=images[0])
    assert item.expected_version == current_version(images[0], task) == 1
    assert item.label_at_build == labels[0]
    by_filter = mturk.select(project, task, "filter", {"label": "round", "split": "train"})
    assert by_filter == [im.id for i, im in enumerate(images + gold) if i % 3 == 1]
    with pytest.raises(mturk.SelectionError):
        mturk.select(project, task, "suspects", {})


def test_send_creates_hit_type_and_html_question_hits(dataset, stub):
    client, s = stub
    batch = build(dataset)
    expect_send(s, batch)
    mturk.send_batch(batch, client)
    batch.refresh_from_db()
    assert batch.state == MTurkBatch.State.SENT and batch.hit_type_id
    assert list(batch.hits.values_list("hit_id", flat=True)) == [hit_id(i) for i in range(4)]
    question = mturk.batches.hit_question(batch, batch.hits.first())
    assert question.startswith('<HTMLQuestion xmlns="http://mechanicalturk.amazonaws.com/')
    assert "<![CDATA[" in question and "https://workersandbox.mturk.com/mturk/externalSubmit" in question
    assert 'name="assignmentId"' in question and "X-Amz-Signature" in question and "X-Amz-Expires" in question
    assert "None of these" in question and "Can&#x27;t tell" in question and 'name="label_6"' in question


def test_send_retries_throttling_with_backoff(dataset, stub, no_real_mturk):
    client, s = stub
    batch = build(dataset)
    expect_send(s, batch, hit_type_errors=["ThrottlingException", "ServiceUnavailable"])
    mturk.send_batch(batch, client)
    assert batch.hits.exclude(hit_id="").count() == 4
    assert len(no_real_mturk) == 2 and no_real_mturk[1] > 0


def test_retried_send_takes_the_hit_mturk_already_made(dataset, stub):
    client, s = stub
    batch = build(dataset)
    expect_send(s, batch, lost_hit=1)
    mturk.send_batch(batch, client)
    assert list(batch.hits.values_list("hit_id", flat=True)) == [hit_id(i) for i in range(4)]


def test_send_refuses_short_balance_and_keeps_a_resumable_batch(dataset, stub):
    client, s = stub
    batch = build(dataset)
    s.add_response("get_account_balance", {"AvailableBalance": "0.50"}, {})
    with pytest.raises(mturk.BatchError, match="needs"):
        mturk.send_batch(batch, client)
    batch.refresh_from_db()
    # Refused before any HIT was asked for: still a draft (exportable), the reason on it.
    assert batch.state == MTurkBatch.State.DRAFT and "needs" in batch.error and not batch.hit_type_id
    # and it can be sent again
    expect_send(s, batch)
    mturk.send_batch(batch, client)
    assert MTurkBatch.objects.get(pk=batch.pk).state == MTurkBatch.State.SENT


def test_a_send_that_asked_for_hits_then_failed_is_failed_not_exportable(dataset, stub, client, admin_user):
    """Once MTurk was asked for a HIT (its answer may be lost, the HIT made all the same), a CSV
    would make the HITs twice: the batch is failed, sendable again, and offers no export."""
    client_mt, s = stub
    batch = build(dataset)
    s.add_response("get_account_balance", {"AvailableBalance": "10000.00"}, {})
    s.add_response("create_hit_type", {"HITTypeId": "3TYPE0000000000000000000000000"}, None)
    client_error(s, "create_hit_with_hit_type", "RequestError", "the answer never came")
    with pytest.raises(Exception):
        mturk.send_batch(batch, client_mt)
    batch.refresh_from_db()
    assert batch.state == MTurkBatch.State.FAILED and batch.error and "Export CSV" not in batch.error
    client.force_login(admin_user)
    html = client.get(f"/mturk/{batch.id}/").content.decode()
    assert "Send to MTurk" in html and "Export CSV" not in html and "Not sent." in html
    assert client.get(f"/mturk/{batch.id}/export/").status_code == 302


def test_local_images_refused_without_image_bucket_uploaded_with_it(db, s3, tmp_path, settings):
    s3_client, bucket = s3
    project, task, labels = make_project()
    thumb = tmp_path / "thumb.jpg"
    thumb.write_bytes(b"\xff\xd8\xff fake jpeg")
    im = make_image(project, "local.jpg", task=task, label=labels[0], thumbnail_uri=thumb.as_uri(),
                    checksum="ab" * 32)
    batch = mturk.build_batch(project=project, task=task, selection_kind="images",
                              selection_params={"image_ids": [im.id]})
    settings.MTURK_IMAGE_BUCKET = ""
    with pytest.raises(mturk.BatchError, match="not on S3"):
        mturk.send_batch(batch, client=object())
    settings.MTURK_IMAGE_BUCKET = bucket
    url = mturk.batches.presigned_url(im, 3600)
    assert bucket in url and "X-Amz-Signature" in url
    key = f"mturk/{project.id}/{im.id}-{'ab' * 8}"
    assert s3_client.get_object(Bucket=bucket, Key=key)["Body"].read() == thumb.read_bytes()


# --- sync ---------------------------------------------------------------------------

def sent_batch(dataset, stub, **opts):
    client, s = stub
    batch = build(dataset, **opts)
    expect_send(s, batch)
    mturk.send_batch(batch, client)
    return MTurkBatch.objects.get(pk=batch.pk)


def values_for(batch, hit, choice_of_item):
    return [choice_of_item(MTurkItem.objects.get(pk=i)) for i in hit.item_ids]


def truth(item):
    return str(item.gold_label_id if item.is_gold else item.label_at_build_id)


def list_call(s, hit, assignments, token=None, next_token=None):
    params = {"HITId": hit.hit_id, "MaxResults": 100, "AssignmentStatuses": ["Submitted", "Approved", "Rejected"]}
    if token:
        params["NextToken"] = token
    body = {"Assignments": assignments, "NumResults": len(assignments)}
    if next_token:
        body["NextToken"] = next_token
    s.add_response("list_assignments_for_hit", body, params)


def test_round_trip_20_images(dataset, stub):
    """20 images -> 4 HITs -> assignments with disagreement -> consensus -> review -> events."""
    client, s = stub
    project, task, labels, images, gold = dataset
    batch = sent_batch(dataset, stub)
    hits = list(batch.hits.order_by("position"))
    names = {str(lb.id): lb for lb in labels}
    square = str(labels[2].id)

    def honest(item):
        return truth(item)

    def flips_first(item):  # says "square" for every non-gold image of the first HIT
        return truth(item) if item.is_gold else square

    def bad(item):  # fails gold
        return str(labels[0].id) if item.is_gold and item.gold_label_id != labels[0].id else (
            str(labels[1].id) if item.is_gold else truth(item))

    # HIT 0: two workers say square for all, one honest: square wins 2/3.
    # HIT 1: paginated; one worker fails gold (rejected), one too fast (rejected) -> 1 answer only, HIT complete.
    # HIT 2: one says can't tell, one none, one honest -> tie -> in-house.
    # HIT 3: all honest.
    list_call(s, hits[0], [assignment("A00", "W1", hits[0].hit_id, values_for(batch, hits[0], flips_first)),
                           assignment("A01", "W2", hits[0].hit_id, values_for(batch, hits[0], flips_first))],
              next_token="page2")
    list_call(s, hits[0], [assignment("A02", "W3", hits[0].hit_id, values_for(batch, hits[0], honest))],
              token="page2")
    list_call(s, hits[1], [assignment("A10", "W1", hits[1].hit_id, values_for(batch, hits[1], honest)),
                           assignment("A11", "BAD", hits[1].hit_id, values_for(batch, hits[1], bad)),
                           assignment("A12", "FAST", hits[1].hit_id, values_for(batch, hits[1], honest), seconds=3)])
    list_call(s, hits[2], [assignment("A20", "W1", hits[2].hit_id, values_for(batch, hits[2], lambda i: "cant_tell" if not i.is_gold else truth(i))),
                           assignment("A21", "W2", hits[2].hit_id, values_for(batch, hits[2], lambda i: "none" if not i.is_gold else truth(i))),
                           assignment("A22", "W3", hits[2].hit_id, values_for(batch, hits[2], honest))])
    list_call(s, hits[3], [assignment(f"A3{k}", w, hits[3].hit_id, values_for(batch, hits[3], honest))
                           for k, w in enumerate(["W1", "W2", "W3"])])
    for aid in ["A00", "A01", "A02", "A10"]:
        s.add_response("approve_assignment", {}, {"AssignmentId": aid, "RequesterFeedback": "Thank you."})
    s.add_response("reject_assignment", {}, {"AssignmentId": "A11", "RequesterFeedback": ANY})
    s.add_response("reject_assignment", {}, {"AssignmentId": "A12", "RequesterFeedback": ANY})
    for aid in ["A20", "A21", "A22", "A30", "A31", "A32"]:
        s.add_response("approve_assignment", {}, {"AssignmentId": aid, "RequesterFeedback": "Thank you."})

    # Meanwhile someone retags an image of HIT 0 in-house: applying must not overwrite it.
    inhouse_item = MTurkItem.objects.get(pk=hits[0].item_ids[0])
    retag_image(image=inhouse_item.image, task=task, label=labels[1], expected_version=1)

    result = mturk.sync_batch(batch, client, now=T0 + timedelta(hours=1))
    assert (result.new_assignments, result.approved, result.rejected, result.decisions_sent) == (12, 10, 2, 12)
    assert MTurkAssignment.objects.get(assignment_id="A11").decision_reason.startswith("Wrong answer")
    assert "Submitted in 3 s" in MTurkAssignment.objects.get(assignment_id="A12").decision_reason
    assert batch.hits.filter(status=MTurkHIT.Status.COMPLETE).count() == 4

    status = dict(batch.items.filter(is_gold=False).values_list("image_id", "status"))
    for i in hits[0].item_ids[:5] + hits[1].item_ids[:5] + hits[3].item_ids[:5]:
        assert status[MTurkItem.objects.get(pk=i).image_id] == MTurkItem.Status.AGREED
    for i in hits[2].item_ids[:5]:
        item = MTurkItem.objects.get(pk=i)
        assert item.status == MTurkItem.Status.INHOUSE and item.reason.startswith("tie")
    first = MTurkItem.objects.get(pk=hits[0].item_ids[1])
    assert first.consensus_label == labels[2] and round(first.agreement, 2) == 0.67

    summary = mturk.review_summary(batch)
    assert len(summary.inhouse) == 5
    gold_of = {w.worker_id: (w.gold_right, w.gold_total) for w in summary.workers}
    assert gold_of["BAD"] == (0, 1) and gold_of["W1"] == (4, 4)
    moved_to_square = [c for c in summary.changes if c[1] == "square"]
    assert sum(n for _, _, n in moved_to_square) == 4  # HIT 0's five images, less the one already square
    events_before = LabelEvent.objects.count()

    applied = mturk.apply_batch(batch, by=None)
    assert applied["changed"] == 3 and len(applied["conflicts"]) == 1
    assert applied["unchanged"] == 11
    assert LabelEvent.objects.count() == events_before + 3
    ev = LabelEvent.objects.filter(source=EventSource.MTURK).first()
    assert ev.reference == f"mturk:{batch.id}" and ev.to_label == labels[2]
    assert MTurkItem.objects.get(pk=inhouse_item.pk).status == MTurkItem.Status.CONFLICT
    assert inhouse_item.image.annotations.get(task=task).label == labels[1]  # the in-house label stays

    # A second sync and apply change nothing (no new HIT calls: all HITs are complete).
    again = mturk.sync_batch(batch, client, now=T0 + timedelta(hours=2))
    assert (again.new_assignments, again.decisions_sent) == (0, 0)
    assert mturk.apply_batch(batch, by=None) == {"changed": 0, "unchanged": 0, "conflicts": []}
    assert LabelEvent.objects.count() == events_before + 3


def test_resync_of_open_hits_is_idempotent_and_expired_hits_settle(dataset, stub):
    client, s = stub
    project, task, labels, images, gold = dataset
    batch = sent_batch(dataset, stub, min_approval_rate=95)
    hits = list(batch.hits.order_by("position"))
    one = [assignment("B00", "W1", hits[0].hit_id, values_for(batch, hits[0], truth))]
    for h in hits:
        list_call(s, h, one if h.position == 0 else [])
    s.add_response("approve_assignment", {}, {"AssignmentId": "B00", "RequesterFeedback": "Thank you."})
    mturk.sync_batch(batch, client, now=T0 + timedelta(hours=1))
    assert batch.items.filter(status=MTurkItem.Status.PENDING, is_gold=False).count() == 20

    # Later: the same assignment (auto-approved meanwhile), HIT 1 is gone from MTurk, and
    # HITs 0, 2, 3 are past their lifetime.
    one_approved = [dict(one[0], AssignmentStatus="Approved")]
    list_call(s, hits[0], one_approved)
    client_error(s, "list_assignments_for_hit", "RequestError", f"Hit {hits[1].hit_id} does not exist. (1700000000)")
    list_call(s, hits[2], [])
    list_call(s, hits[3], [])
    result = mturk.sync_batch(batch, client, now=T0 + timedelta(days=4))
    assert result.new_assignments == 0 and result.decisions_sent == 0 and result.hits_expired == 3
    assert MTurkHIT.objects.get(pk=hits[1].pk).status == MTurkHIT.Status.GONE
    assert MTurkAssignment.objects.get(assignment_id="B00").mturk_status == "Approved"
    first = MTurkItem.objects.get(pk=hits[0].item_ids[0])
    assert first.status == MTurkItem.Status.AGREED and first.answers == 1  # the one answer there is
    assert MTurkItem.objects.get(pk=hits[1].item_ids[0]).reason == "no usable answers"


def test_approve_refused_by_mturk_is_recorded_not_retried(dataset, stub):
    client, s = stub
    batch = sent_batch(dataset, stub)
    hits = list(batch.hits.order_by("position"))
    list_call(s, hits[0], [assignment("C00", "W1", hits[0].hit_id, values_for(batch, hits[0], truth))])
    for h in hits[1:]:
        list_call(s, h, [])
    client_error(s, "approve_assignment", "RequestError",
                 "This operation can be called with a status of: Submitted (1700000000)")
    result = mturk.sync_batch(batch, client, now=T0 + timedelta(hours=1))
    a = MTurkAssignment.objects.get(assignment_id="C00")
    assert a.decision_sent_at and "status of: Submitted" in a.decision_error and result.errors


def test_balance_and_worker_block(db, stub):
    client, s = stub
    s.add_response("get_account_balance", {"AvailableBalance": "10000.00", "OnHoldBalance": "1.25"}, {})
    assert mturk.account_balance(client) == {"available": Decimal("10000.00"), "on_hold": Decimal("1.25")}
    s.add_response("create_worker_block", {}, {"WorkerId": "W9", "Reason": "fails gold images"})
    w = mturk.block_worker("W9", reason="fails gold images", client=client)
    assert w.blocked
    with pytest.raises(ValueError):
        mturk.block_worker("W9", reason=" ", client=client)


# --- CSV ---------------------------------------------------------------------------

def results_csv(batch, rows):
    """A results file as the requester UI writes it."""
    n = max(len(h.item_ids) for h in batch.hits.all())
    head = ["HITId", "HITTypeId", "Title", "Reward", "CreationTime", "MaxAssignments", "RequesterAnnotation",
            "AssignmentId", "WorkerId", "AssignmentStatus", "AcceptTime", "SubmitTime", "AutoApprovalTime",
            "WorkTimeInSeconds", "LifetimeApprovalRate", "Input.hit"]
    head += [f"Input.{c}_{k}" for k in range(1, n + 1) for c in ("item_id", "image_url")]
    head += [f"Answer.label_{k}" for k in range(1, n + 1)] + ["Approve", "Reject"]
    out = io.StringIO()
    w = csv.DictWriter(out, head)
    w.writeheader()
    for r in rows:
        w.writerow({k: r.get(k, "") for k in head})
    return out.getvalue()


def test_csv_export_import_round_trip(dataset):
    project, task, labels, images, gold = dataset
    batch = build(dataset, images_per_hit=10)
    text = mturk.export_csv(batch)
    exported = list(csv.DictReader(io.StringIO(text)))
    assert len(exported) == 2 and "X-Amz-Signature" in exported[0]["image_url_1"]
    layout = mturk.layout_html(batch)
    assert "${image_url_1}" in layout and "${item_id_11}" in layout and 'name="label_11"' in layout
    assert "<form id=" not in layout and "name=\"assignmentId\"" not in layout  # the requester UI brings its own form
    batch.refresh_from_db()
    assert batch.state == MTurkBatch.State.EXPORTED

    rows = []
    for r in exported:
        hit = batch.hits.get(position=int(r["hit"]))
        for k, worker in enumerate(["W1", "W2", "W3"]):
            items = [MTurkItem.objects.get(pk=int(r[f"item_id_{j}"])) for j in range(1, 12)]
            answers = {f"Answer.label_{j}": truth(it) for j, it in enumerate(items, start=1)}
            if worker == "W3" and hit.position == 0:
                answers["Answer.label_1"] = str(labels[2].id)  # a dissent, outvoted
            rows.append({"HITId": f"3CSV{hit.position:026d}", "AssignmentId": f"CSV{hit.position}{k}",
                         "WorkerId": worker, "AssignmentStatus": "Submitted",
                         "AcceptTime": "Wed Nov 25 00:00:00 PST 2026", "SubmitTime": "Wed Nov 25 00:02:00 PST 2026",
                         "WorkTimeInSeconds": "120", "Input.hit": r["hit"],
                         **{f"Input.{c}": r[c] for c in r if c != "hit"}, **answers})
    result_file = results_csv(batch, rows)
    r = mturk.import_results_csv(batch, result_file)
    assert r == {"new_assignments": 6, "approved": 6, "rejected": 0}
    assert mturk.import_results_csv(batch, result_file)["new_assignments"] == 0  # idempotent
    first = MTurkItem.objects.get(pk=batch.hits.get(position=0).item_ids[0])
    assert first.status == MTurkItem.Status.AGREED and first.consensus_label == labels[0]
    a = MTurkAssignment.objects.get(assignment_id="CSV00")
    assert a.submit_time == datetime(2026, 11, 25, 8, 2, tzinfo=dt_timezone.utc) and a.work_seconds == 120

    decisions = list(csv.DictReader(io.StringIO(mturk.decisions_csv(batch))))
    assert len(decisions) == 6 and all(d["Approve"] == "x" and not d["Reject"] for d in decisions)
    applied = mturk.apply_batch(batch, by=None)
    assert applied == {"changed": 0, "unchanged": 20, "conflicts": []}  # the crowd confirmed every label
    assert images[0].annotations.get(task=task).verified

    with pytest.raises(mturk.BatchError, match="lacks the columns"):
        mturk.import_results_csv(batch, "HITId,WorkerId\n1,2\n")
