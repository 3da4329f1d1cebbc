"""What the data said about the witnesses reaches the suspects run: the new config options are
validated (bad values are refused, never passed on), and the witness weights, expected
precision and per-class cluster cuts are stored with its counts (PostgreSQL JSON: no NaN)."""
from __future__ import annotations

import numpy as np
import pytest

from labeling.models import SuspectRun
from labeling.services import suspects
from labeling.services.suspects import pipeline
from tests.test_suspects import LABELS, make_world


def test_new_options_are_validated():
    ok = suspects.validate_config({"decision": "cleanlab", "embeddings": "run", "core_share": "0.9"})
    assert ok["decision"] == "cleanlab" and ok["embeddings"] == "run" and ok["core_share"] == 0.9
    assert suspects.validate_config({})["embeddings"] == suspects.DEFAULTS["embeddings"]
    for bad, why in (({"decision": "vote"}, "decision"), ({"embeddings": "pixels"}, "embeddings"),
                     ({"core_share": 1.5}, "core_share"), ({"core_share": "lots"}, "core_share must be a number"),
                     ({"method": "magic"}, "method")):
        with pytest.raises(suspects.SuspectError, match=why):
            suspects.validate_config(bad)


def test_scoring_stores_the_witness_weights_expected_precision_and_cluster_cuts(db):
    from mlcore.suspects import score

    project, task, labels, images, sr = make_world(n=60)
    rng = np.random.default_rng(0)
    given = np.arange(60) % 3
    prob = np.full((60, 3), 0.1) + rng.uniform(0, 0.05, (60, 3))
    prob[np.arange(60), given] = 0.8
    prob[0] = [0.05, 0.9, 0.05]  # a cat that the model calls a dog
    emb = np.eye(8)[given] + 0.1 * rng.standard_normal((60, 8))
    emb[0] = np.eye(8)[1]  # and it looks like one
    scores = score(prob / prob.sum(1, keepdims=True), given, emb / np.linalg.norm(emb, axis=1, keepdims=True))
    suspects.store_results(sr, image_ids=[im.id for im in images], given=given, scores=scores)
    pipeline._store_fit(sr, scores)
    sr = SuspectRun.objects.get(pk=sr.pk)
    counts = sr.counts
    assert counts["suspects"] >= 1 and set(counts["witness_weights"]) >= {"prob", "knn", "cluster", "prior"}
    assert abs(sum(counts["witness_weights"].values()) - 1) < 1e-3
    # Each class's cut is stored once, by label id; the API's view by name is derived from it.
    assert "cluster_cuts" not in counts
    assert sorted(map(int, sr.cluster_cuts)) == sorted(lb.id for lb in labels.values())
    cuts = suspects.cuts_by_name(sr)
    assert sorted(cuts) == sorted(LABELS) and all(v >= 0 for v in cuts.values())
    assert counts["expected_precision"] is None or 0 <= counts["expected_precision"] <= 1
    assert counts["decision"] in ("cl", "cleanlab")
