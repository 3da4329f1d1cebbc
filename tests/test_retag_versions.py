"""Every retag path carries the version the person saw (issue 11, item 3).

The retag service refuses a person's retag without ``expected_version``; the suspects
queue's page endpoint, which used to accept one without it (and overwrote a concurrent
retag), now answers 400, and two concurrent resolves of one version through it end in
one 200 and one 409, with one event.
"""
from __future__ import annotations

import threading

import pytest
from django.test import Client

from labeling.models import Annotation, EventSource, LabelEvent, Suspect, SuspectRun
from labeling.services.retag import RetagError, current_version, retag_image
from tests.test_suspects import make_world


def _suspect(sr, image, task, given, suggested):
    return Suspect.objects.create(suspect_run=sr, image=image, task=task, score=0.9, given_label=given,
                                  suggested_label=suggested, version=current_version(image, task))


@pytest.mark.django_db
@pytest.mark.parametrize("source", [EventSource.ANNOTATOR, EventSource.MTURK])
def test_the_service_refuses_a_persons_retag_without_a_version(source, annotator):
    project, task, labels, images, sr = make_world(n=3)
    with pytest.raises(RetagError, match="expected_version"):
        retag_image(image=images[0], task=task, label=labels["dog"], by=annotator, expected_version=None,
                    source=source)
    ann = Annotation.objects.get(image=images[0], task=task)
    assert ann.label == labels["cat"] and ann.version == 1
    assert LabelEvent.objects.filter(image=images[0]).count() == 1  # the import's, nothing more
    # Imports and rules sync labels from elsewhere and may go without it.
    retag_image(image=images[0], task=task, label=labels["dog"], expected_version=None, source=EventSource.RULE)
    assert current_version(images[0], task) == 2


@pytest.mark.django_db
@pytest.mark.parametrize("bad", [True, -1, 1.0, "1"])
def test_the_service_refuses_a_version_that_is_not_a_whole_number(bad, annotator):
    project, task, labels, images, sr = make_world(n=3)
    with pytest.raises(RetagError):
        retag_image(image=images[0], task=task, label=labels["dog"], by=annotator, expected_version=bad)
    assert current_version(images[0], task) == 1


@pytest.mark.django_db
def test_suspects_page_refuses_a_resolve_without_a_version_and_overwrites_nothing(annotator, make_user):
    """Annotator A sees the suspect at version 1; B retags the image meanwhile; A's resolve
    without a version used to overwrite B's label with a 200."""
    project, task, labels, images, sr = make_world(n=3)
    SuspectRun.objects.filter(pk=sr.pk).update(state=SuspectRun.State.DONE)
    image = images[0]
    suspect = _suspect(sr, image, task, labels["cat"], labels["dog"])
    other = make_user("annotator")
    retag_image(image=image, task=task, label=labels["fox"], by=other, expected_version=1)

    client = Client()
    client.force_login(annotator)
    url = f"/api/suspects/{suspect.pk}/resolve/"  # what the queue page (static/suspects.js) posts to
    r = client.post(url, {"action": "accept"}, content_type="application/json")
    assert r.status_code == 400 and "expected_version" in r.json()
    r = client.post(url, {"action": "accept", "expected_version": 1}, content_type="application/json")
    assert r.status_code == 409
    assert r.json()["current"]["label"] == labels["fox"].id and r.json()["current"]["version"] == 2
    ann = Annotation.objects.get(image=image, task=task)
    assert ann.label == labels["fox"] and ann.version == 2
    assert Suspect.objects.get(pk=suspect.pk).status == Suspect.Status.OPEN
    # Skipping writes no label and needs no version.
    r = client.post(url, {"action": "skip"}, content_type="application/json")
    assert r.status_code == 200 and r.json()["status"] == "open"  # a skip is not a decision (#15)
    assert Suspect.objects.get(pk=suspect.pk).skipped_by == annotator


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_resolves_of_one_version_through_the_page_one_ok_one_409(make_user):
    """Two suspects runs hold the same image; two annotators resolve it at once from the
    queue page, both having seen version 1: one label wins, the other gets 409."""
    project, task, labels, images, sr = make_world(n=3)
    SuspectRun.objects.filter(pk=sr.pk).update(state=SuspectRun.State.DONE)
    sr2 = SuspectRun.objects.create(project=project, task=task, run=sr.run, config=sr.config,
                                    state=SuspectRun.State.DONE)
    image = images[0]
    a = _suspect(sr, image, task, labels["cat"], labels["dog"])
    b = _suspect(sr2, image, task, labels["cat"], labels["fox"])
    users = [make_user("annotator"), make_user("annotator")]
    barrier = threading.Barrier(2)
    answers = {}

    def resolve(user, suspect):
        client = Client()
        client.force_login(user)
        barrier.wait()
        r = client.post(f"/api/suspects/{suspect.pk}/resolve/", {"action": "accept", "expected_version": 1},
                        content_type="application/json")
        answers[suspect.pk] = (r.status_code, r.json())

    threads = [threading.Thread(target=resolve, args=(u, s)) for u, s in zip(users, (a, b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    codes = sorted(code for code, _ in answers.values())
    assert codes == [200, 409], answers
    winner = next(pk for pk, (code, _) in answers.items() if code == 200)
    won = labels["dog"] if winner == a.pk else labels["fox"]
    ann = Annotation.objects.get(image=image, task=task)
    assert ann.label == won and ann.version == 2
    assert LabelEvent.objects.filter(image=image, source=EventSource.ANNOTATOR).count() == 1
    loser = next(body for code, body in answers.values() if code == 409)
    assert loser["current"]["label"] == won.id and loser["current"]["version"] == 2


@pytest.mark.django_db
def test_cluster_group_retag_refuses_a_ticked_image_without_its_version(annotator):
    project, task, labels, images, sr = make_world(n=3)
    client = Client()
    client.force_login(annotator)
    r = client.post(f"/suspects/{sr.pk}/clusters/retag",
                    {"label": labels["fox"].id, "image": [images[0].id, images[1].id], f"v_{images[0].id}": "1"})
    assert r.status_code == 302
    assert [current_version(im, task) for im in images[:2]] == [1, 1]
    r = client.post(f"/suspects/{sr.pk}/clusters/retag",
                    {"label": labels["fox"].id, "image": [images[0].id, images[1].id],
                     f"v_{images[0].id}": "1", f"v_{images[1].id}": "1"})
    assert r.status_code == 302
    assert [current_version(im, task) for im in images[:2]] == [2, 2]
