"""The rules behind issue 15's rough edges, without a browser: the label keys, the source
badge, the test set's change since a run, the login for a signed-out browser on the API's
pages, the one-line 403 log and the broker URL that kombu does not warn about."""
import logging
from datetime import timedelta

import pytest
from django.conf import settings
from django.test import Client
from django.utils import timezone

from labeling.models import EventSource, TrainingRun
from labeling.services.labels import SINGLE_KEYS, label_key, project_tasks
from labeling.services.retag import retag_image, source_badge
from labeling.services.runs import changed_test_labels
from tests.factories import make_image, make_project

# Every key a retag page uses for something else (image page, prediction grids, suspects
# queue, cluster view, zoom): a label key must never be one of them.
PAGE_SHORTCUTS = set("aghjklnopstzT?+-=_") | {"Enter", "Tab", "Escape"}


def test_every_label_has_its_own_key_and_no_key_starts_another():
    found = [label_key(i) for i in range(200)]
    assert found[:14] == list("1234567890bcde")
    assert found[24:26] == [";1", ";2"] and found[48] == ";;1"
    assert len(set(found)) == len(found)
    assert not [(a, b) for a in found for b in found if a != b and b.startswith(a)]
    assert not set(SINGLE_KEYS) & PAGE_SHORTCUTS
    for bad in (-1, True, 1.5, "3"):
        with pytest.raises(ValueError):
            label_key(bad)


@pytest.mark.django_db
def test_tasks_come_in_the_project_order_not_by_name():
    project, category, _ = make_project(task="category")
    audience = category.project.tasks.create(name="audience")
    assert list(project_tasks(project)) == [category, audience]


@pytest.mark.django_db
def test_the_source_badge_names_the_retaggers_role(annotator, scientist, admin_user, make_user):
    project, task, labels = make_project()
    image = make_image(project, "a.jpg", task=task, label=labels[0])
    badges = []
    for version, who in enumerate((annotator, scientist, admin_user, make_user(None)), start=1):
        event = retag_image(image=image, task=task, label=labels[version % 3], by=who, expected_version=version).event
        assert event.source == EventSource.ANNOTATOR  # what the counters of human retags count
        badges.append((source_badge(event).key, source_badge(event).text))
    assert badges == [("annotator", "annotator"), ("scientist", "scientist"), ("admin", "admin"),
                      ("annotator", "annotator")]  # no role: the source itself
    mturk = retag_image(image=image, task=task, label=labels[2], by=None, expected_version=5,
                        source=EventSource.MTURK).event
    assert (source_badge(mturk).key, source_badge(mturk).text) == ("mturk", "Mechanical Turk")


@pytest.mark.django_db
def test_test_set_changes_since_the_snapshot(scientist):
    project, task, labels = make_project()
    a, b, c = labels
    tests = [make_image(project, f"t{i}.jpg", split="test", task=task, label=a) for i in range(4)]
    train = make_image(project, "train.jpg", split="train", task=task, label=a)
    retag_image(image=tests[3], task=task, label=c, by=scientist, expected_version=1)  # before the snapshot
    run = TrainingRun.objects.create(project=project, task=task, state=TrainingRun.State.DONE,
                                     snapshot_at=timezone.now() + timedelta(microseconds=1))
    assert changed_test_labels(run) == {"images": 0, "labels": []}
    retag_image(image=tests[0], task=task, label=b, by=scientist, expected_version=1)
    retag_image(image=tests[1], task=task, label=b, by=scientist, expected_version=1)  # A -> B -> A: no change
    retag_image(image=tests[1], task=task, label=a, by=scientist, expected_version=2)
    retag_image(image=tests[2], task=task, label=b, by=scientist, expected_version=1)  # A -> B -> C
    retag_image(image=tests[2], task=task, label=c, by=scientist, expected_version=2)
    retag_image(image=train, task=task, label=c, by=scientist, expected_version=1)  # not the test set
    assert changed_test_labels(run) == {"images": 2, "labels": [{"name": a.name, "delta": -2},
                                                             {"name": b.name, "delta": 1},
                                                             {"name": c.name, "delta": 1}]}


@pytest.mark.django_db
def test_a_signed_out_browser_on_the_api_pages_goes_to_the_login(annotator):
    html = "text/html,application/xhtml+xml,*/*;q=0.8"
    for url in ("/api/docs/", "/api/projects/"):
        r = Client().get(url, HTTP_ACCEPT=html)
        assert r.status_code == 302 and r["Location"] == f"/accounts/login/?next={url}", url
        if url != "/api/docs/":  # the docs are a page whoever asks: to the login; the rest answers as an API
            assert Client().get(url).status_code in (401, 403), url
        assert Client().get(url, HTTP_ACCEPT=html, HTTP_AUTHORIZATION="Basic eDp5").status_code in (401, 403), url
    c = Client()
    c.force_login(annotator)
    assert c.get("/api/docs/", HTTP_ACCEPT=html).status_code == 200


@pytest.mark.django_db
def test_a_403_page_names_both_roles_and_logs_one_line(annotator, make_user, caplog):
    project, _, _ = make_project()
    c = Client()
    c.force_login(annotator)
    with caplog.at_level(logging.WARNING, logger="django.request"):
        r = c.get(f"/p/{project.slug}/runs/")
    assert r.status_code == 403
    html = r.content.decode()
    assert 'data-testid="needed-role">scientist<' in html and 'data-testid="your-role">annotator<' in html
    assert "(and admin)" in html and "for admins" not in html
    [record] = [rec for rec in caplog.records if rec.name == "django.request"]
    assert record.getMessage() == f"Forbidden (Permission denied): /p/{project.slug}/runs/"
    assert record.exc_info is None and "Traceback" not in caplog.text
    nobody = Client()
    nobody.force_login(make_user(None))
    assert b"no role yet" in nobody.get("/").content


def test_the_default_broker_url_names_a_host(caplog):
    """kombu logs "No hostname was supplied" for every connection to a URL without one
    (load_demo printed it when it queued the demo run)."""
    from kombu import Connection

    assert settings.DEFAULT_BROKER_URL.startswith("filesystem://")
    with caplog.at_level(logging.WARNING, logger="kombu.connection"):
        Connection(settings.DEFAULT_BROKER_URL)._info()
        assert "No hostname" not in caplog.text
        Connection("filesystem://")._info()  # the old default: the warning this avoids
        assert "No hostname was supplied" in caplog.text
