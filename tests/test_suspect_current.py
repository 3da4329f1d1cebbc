"""Suspect.current (migration 0015) is kept by the database through every annotation and
suspect write: a retag (by the queue, the image page, another run's queue, a bulk
``update()``), a keep (the label confirmed), an undo, an annotation deleted and made again, a
suspect stored at an older version. The open counts read it and always equal the queue; the
people's verdicts read the stale open ones from it."""
from __future__ import annotations

import pytest

from labeling.models import Annotation, Suspect, SuspectRun
from labeling.services import suspect_quality, suspects
from labeling.services.retag import current_version, retag_image
from tests.test_suspects import make_world

pytestmark = pytest.mark.django_db


def suspect(sr, image, task, given, suggested, version=None):
    return Suspect.objects.create(suspect_run=sr, image=image, task=task, score=0.9, given_label=given,
                                  suggested_label=suggested,
                                  version=current_version(image, task) if version is None else version)


def kept_right(*runs):
    """Every suspect's ``current`` is what the queue asks, and the open counts are the queue's."""
    for s in Suspect.objects.filter(suspect_run__in=runs):
        a = Annotation.objects.filter(image_id=s.image_id, task_id=s.task_id).first()
        assert s.current == bool(a and a.version == s.version and not a.verified), (s.pk, s.current)
    counts = suspects.open_counts(runs)
    for sr in runs:
        assert counts[sr.pk]["open"] == suspects.queue(sr).count()
    return [counts[sr.pk]["open"] for sr in runs]


def test_every_write_keeps_current_and_the_open_counts(annotator):
    project, task, labels, images, sr = make_world(n=6)
    sr2 = SuspectRun.objects.create(project=project, task=task, run=sr.run, config=sr.config,
                                    state=SuspectRun.State.DONE)
    cat, dog, fox = labels["cat"], labels["dog"], labels["fox"]
    mine = [suspect(sr, im, task, cat, dog) for im in images[:4]]
    theirs = [suspect(sr2, im, task, cat, fox) for im in images[:3]]
    old = suspect(sr2, images[4], task, cat, fox, version=0)  # scored before its label's last change
    for run in (sr, sr2):
        figures = {str(cat.id): {"suspects": Suspect.objects.filter(suspect_run=run).count()}}
        SuspectRun.objects.filter(pk=run.pk).update(class_figures=figures, scored_at=run.created_at)
    sr.refresh_from_db(), sr2.refresh_from_db()
    assert kept_right(sr, sr2) == [4, 3]
    assert not Suspect.objects.get(pk=old.pk).current

    suspects.resolve(mine[0], user=annotator, action="accept", expected_version=1)  # the other run's goes stale
    assert kept_right(sr, sr2) == [3, 2]
    suspects.resolve(mine[1], user=annotator, action="keep", expected_version=1)  # confirmed: stale elsewhere
    assert kept_right(sr, sr2) == [2, 1]
    suspects.undo_decision(Suspect.objects.get(pk=mine[1].pk), user=annotator)  # open and current again
    assert kept_right(sr, sr2) == [3, 2]
    retag_image(image=images[2], task=task, label=dog, by=annotator, expected_version=1)  # the image page
    assert kept_right(sr, sr2) == [2, 1]
    Annotation.objects.filter(image=images[3], task=task).update(verified=True)  # a bulk update()
    assert kept_right(sr, sr2) == [1, 1]
    Annotation.objects.filter(image=images[3], task=task).update(verified=False)
    assert kept_right(sr, sr2) == [2, 1]
    Annotation.objects.filter(image=images[3], task=task).delete()  # no annotation: not current
    assert kept_right(sr, sr2) == [1, 1]
    Annotation.objects.create(image=images[3], task=task, label=cat, version=1)  # back at the scored version
    assert kept_right(sr, sr2) == [2, 1]
    Suspect.objects.filter(pk=old.pk).update(version=current_version(images[4], task))  # re-pointed
    assert kept_right(sr, sr2) == [2, 2]


def test_verdicts_count_the_settled_and_the_stale_open_ones(annotator):
    project, task, labels, images, sr = make_world(n=6)
    cat, dog = labels["cat"], labels["dog"]
    rows = [suspect(sr, im, task, cat, dog) for im in images[:5]]
    SuspectRun.objects.filter(pk=sr.pk).update(state=SuspectRun.State.DONE, scored_at=sr.created_at,
                                               class_figures={str(cat.id): {"suspects": 5}})
    sr.refresh_from_db()
    suspects.resolve(rows[0], user=annotator, action="accept", expected_version=1)
    suspects.resolve(rows[1], user=annotator, action="accept", expected_version=1)
    suspects.resolve(rows[2], user=annotator, action="keep", expected_version=1)
    retag_image(image=images[3], task=task, label=dog, by=annotator, expected_version=1)  # open, changed by a person
    h = suspect_quality.human_quality(sr)
    # changed: images 0 (cat to dog) and 3 (open, by a person); kept: 1 (already dog) and 2 (kept)
    assert h["reviewed"] == 4 and h["overall"]["changed"] == 2 and h["overall"]["kept"] == 2
    assert suspects.open_count(sr) == 1
