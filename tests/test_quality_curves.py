"""The per-class PR curve and confidence histograms (services.quality_curves and their
API) on run 2 of tests/test_quality.py: average precision equals sklearn's on the same
float16 probabilities, the histograms count the known correct and wrong predictions,
a sample is seeded and said, bad input is a 400."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from labeling.services import quality_curves
from labeling.services.quality import QualityError
from tests.test_quality import RUN2_TEST, probs_bytes, two_runs  # noqa: F401 - the fixture

pytestmark = pytest.mark.django_db


def expected_ap(k: int) -> float:
    y = np.array([g == k for g, _, _ in RUN2_TEST])
    score = np.array([np.frombuffer(probs_bytes(p, c, 3), dtype=np.float16)[k] for _, p, c in RUN2_TEST], dtype=np.float64)
    return average_precision_score(y, score)


@pytest.mark.parametrize("k", [0, 1, 2])
def test_average_precision_is_sklearns_on_the_stored_probabilities(two_runs, k):
    run, labels = two_runs["run2"], two_runs["labels"]
    out = quality_curves.pr_curves(run, labels[k].id)
    assert out["label"] == {"id": labels[k].id, "name": labels[k].name}
    assert out["average_precision"] == pytest.approx(expected_ap(k))
    assert out["positives"] == sum(1 for g, _, _ in RUN2_TEST if g == k)
    assert (out["total"], out["n"], out["sampled"]) == (10, 10, False)
    curve = out["curve"]
    assert len(curve["precision"]) == len(curve["recall"]) == len(curve["threshold"])
    assert curve["recall"][0] == 1 and curve["recall"][-1] == 0 and curve["precision"][-1] == 1


def test_histograms_count_correct_and_wrong(two_runs):
    run, labels = two_runs["run2"], two_runs["labels"]
    out = quality_curves.pr_curves(run, labels[0].id)
    every, vneck = out["histogram"]["all"], out["histogram"]["predicted"]
    assert (sum(every["correct"]), sum(every["wrong"])) == (6, 4)
    assert (sum(vneck["correct"]), sum(vneck["wrong"])) == (3, 1)  # v-neck predicted: .9 .8 .7 right, .85 wrong
    edges = out["edges"]
    assert len(edges) == quality_curves.BINS + 1 and edges[0] == 0 and edges[-1] == 1
    wrong_bin = int(np.histogram([.85], bins=np.linspace(0, 1, quality_curves.BINS + 1))[0].argmax())
    assert vneck["wrong"][wrong_bin] == 1
    square = quality_curves.pr_curves(run, labels[2].id)["histogram"]["predicted"]
    assert square["correct"][-1] == 1 and sum(square["wrong"]) == 1  # .99 right, .75 wrong


def test_a_sample_is_seeded_and_said(two_runs):
    run, labels = two_runs["run2"], two_runs["labels"]
    a = quality_curves.pr_curves(run, labels[0].id, sample=4)
    b = quality_curves.pr_curves(run, labels[0].id, sample=4)
    assert (a["n"], a["total"], a["sampled"]) == (4, 10, True)
    assert a == b
    assert sum(a["histogram"]["all"]["correct"]) + sum(a["histogram"]["all"]["wrong"]) == 4


def test_train_split_and_bad_input(two_runs):
    run, labels = two_runs["run2"], two_runs["labels"]
    train = quality_curves.pr_curves(run, labels[0].id, split="train")
    assert train["total"] == 4 and sum(train["histogram"]["all"]["correct"]) == 4
    for bad in ("", "x", None, 10 ** 9):
        with pytest.raises(QualityError):
            quality_curves.pr_curves(run, bad)
    with pytest.raises(QualityError):
        quality_curves.pr_curves(run, labels[0].id, split="val")


def test_the_api(two_runs, scientist, annotator, api_client_for):
    run, labels = two_runs["run2"], two_runs["labels"]
    url = f"/api/runs/{run.id}/pr-curves/"
    body = api_client_for(scientist).get(url, {"label": labels[1].id}).json()
    assert body["average_precision"] == pytest.approx(expected_ap(1))
    assert api_client_for(annotator).get(url, {"label": labels[1].id}).status_code == 403
    for params in ({}, {"label": "x"}, {"label": 0}, {"label": labels[1].id, "split": "nope"}):
        r = api_client_for(scientist).get(url, params)
        assert r.status_code == 400 and r.json()["detail"], params
    assert api_client_for(scientist).get(f"/api/runs/{10 ** 9}/pr-curves/", {"label": 1}).status_code == 404
