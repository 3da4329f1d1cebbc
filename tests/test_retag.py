import pytest

from labeling.models import Annotation, LabelEvent
from labeling.services.labels import ensure_labels, get_or_create_task, reorder_labels
from labeling.services.retag import RetagConflict, RetagError, current_version, retag_image

from tests.factories import make_image, make_project

pytestmark = pytest.mark.django_db


def test_retag_records_event_and_bumps_version(annotator):
    project, task, (v, round_, _) = make_project()
    image = make_image(project, "a.jpg", task=task, label=v)
    assert current_version(image, task) == 1

    result = retag_image(image=image, task=task, label=round_, by=annotator, expected_version=1)

    assert result.annotation.version == 2 and result.annotation.label == round_
    assert result.annotation.verified
    history = list(LabelEvent.objects.filter(image=image).values_list("from_label__name", "to_label__name", "source", "by"))
    assert history == [("v-neck", "round", "annotator", annotator.id), (None, "v-neck", "import", None)]


def test_stale_version_is_a_conflict_and_writes_nothing(annotator, make_user):
    project, task, (v, round_, square) = make_project()
    image = make_image(project, "a.jpg", task=task, label=v)
    other = make_user("annotator")
    retag_image(image=image, task=task, label=round_, by=other, expected_version=1)

    with pytest.raises(RetagConflict) as err:
        retag_image(image=image, task=task, label=square, by=annotator, expected_version=1)

    assert err.value.annotation.label == round_
    assert Annotation.objects.get(image=image, task=task).label == round_
    assert LabelEvent.objects.filter(image=image).count() == 2


def test_first_label_needs_version_zero(annotator):
    project, task, (v, *_rest) = make_project()
    image = make_image(project, "a.jpg")
    with pytest.raises(RetagConflict):
        retag_image(image=image, task=task, label=v, by=annotator, expected_version=1)
    assert retag_image(image=image, task=task, label=v, by=annotator, expected_version=0).event.to_label == v


def test_same_label_marks_verified_without_event(annotator):
    project, task, (v, *_rest) = make_project()
    image = make_image(project, "a.jpg", task=task, label=v)
    result = retag_image(image=image, task=task, label=v, by=annotator, expected_version=1)
    assert result.event is None and result.annotation.verified and result.annotation.version == 1


def test_label_of_another_task_is_refused(annotator):
    project, task, (v, *_rest) = make_project()
    sleeve = get_or_create_task(project, "sleeve")
    short = ensure_labels(sleeve, ["short"])["short"]
    image = make_image(project, "a.jpg", task=task, label=v)
    with pytest.raises(RetagError):
        retag_image(image=image, task=task, label=short, by=annotator, expected_version=1)


def test_split_is_fixed_for_life():
    project, task, _ = make_project()
    image = make_image(project, "a.jpg", split="train")
    image.split = "test"
    with pytest.raises(ValueError, match="for life"):
        image.save()
    image.refresh_from_db()
    assert image.split == "train"


def test_label_order_is_custom():
    project, task, (v, round_, square) = make_project()
    reorder_labels(task, [square.id, v.id, round_.id])
    assert [lb.name for lb in task.labels.all()] == ["square", "v-neck", "round"]
    with pytest.raises(ValueError):
        reorder_labels(task, [square.id, v.id])
    # New labels go to the end of the custom order.
    ensure_labels(task, ["halter"])
    assert [lb.name for lb in task.labels.all()][-1] == "halter"


@pytest.mark.django_db(transaction=True)
def test_concurrent_retags_of_one_version_one_wins(make_user):
    """Two annotators submit against the same version at once: one wins, one gets a conflict."""
    import threading

    from django.db import connection

    project, task, (v, round_, square) = make_project()
    image = make_image(project, "a.jpg", task=task, label=v)
    users = [make_user("annotator"), make_user("annotator")]
    barrier, outcomes = threading.Barrier(2), []

    def attempt(user, label):
        try:
            barrier.wait()
            retag_image(image=image, task=task, label=label, by=user, expected_version=1)
            outcomes.append("ok")
        except RetagConflict:
            outcomes.append("conflict")
        finally:
            connection.close()

    threads = [threading.Thread(target=attempt, args=(u, lb)) for u, lb in zip(users, (round_, square))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert sorted(outcomes) == ["conflict", "ok"]
    assert Annotation.objects.get(image=image, task=task).version == 2
    assert LabelEvent.objects.filter(image=image, source="annotator").count() == 1


def test_human_retag_schedules_the_auto_retrain_check(annotator, monkeypatch, django_capture_on_commit_callbacks):
    from labeling import tasks

    sent = []
    monkeypatch.setattr(tasks.auto_retrain, "delay", lambda task_id: sent.append(task_id))
    project, task, (v, round_, square) = make_project(auto_retrain_after=2)
    image = make_image(project, "a.jpg", task=task, label=v)  # an import: no check
    assert sent == []
    with django_capture_on_commit_callbacks(execute=True):
        retag_image(image=image, task=task, label=round_, by=annotator, expected_version=1)
    assert sent == [task.id]
