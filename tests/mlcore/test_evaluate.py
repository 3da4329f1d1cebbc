import numpy as np
import pytest

from mlcore.evaluate import classification_metrics, prediction_arrays


def test_metrics_against_hand_counts():
    y = [0, 0, 0, 1, 1, 2]
    p = [0, 0, 1, 1, 2, 2]
    m = classification_metrics(y, p, ["a", "b", "c"])
    assert m["confusion"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    a = m["per_class"]["a"]
    assert (a["precision"], a["recall"], a["support"]) == (1.0, pytest.approx(2 / 3), 3)
    assert m["per_class"]["b"]["f1"] == pytest.approx(0.5)
    assert m["per_class"]["c"]["f1"] == pytest.approx(2 / 3)
    assert m["macro"]["f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert m["micro"]["f1"] == pytest.approx(4 / 6) == m["accuracy"]


def test_absent_class_does_not_count_in_macro():
    m = classification_metrics([0, 1], [0, 1], ["a", "b", "never"])
    assert m["macro"]["f1"] == 1.0 and m["per_class"]["never"]["support"] == 0


def test_prediction_arrays_single_and_multi_task():
    res = {"index": np.array([0, 2]),
           "probs": {"a": np.array([[0.9, 0.1], [0.3, 0.7]], np.float32),
                     "b": np.array([[0.2, 0.8], [0.6, 0.4]], np.float32)}}
    targets = np.array([[0, 1], [1, 1], [0, -1]])
    single = prediction_arrays({"index": res["index"], "probs": {"a": res["probs"]["a"]}}, ["u0", "u1", "u2"],
                               ["train", "train", "test"], targets[:, :1], {"a": ["x", "y"]})
    assert single["pred"].tolist() == [0, 1] and single["correct"].tolist() == [True, False]
    assert single["uri"].tolist() == ["u0", "u2"] and single["split"].tolist() == ["train", "test"]
    multi = prediction_arrays(res, ["u0", "u1", "u2"], ["train"] * 3, targets,
                              {"a": ["x", "y"], "b": ["p", "q"]})
    assert multi["b.label"].tolist() == [1, -1] and multi["b.correct"].tolist() == [True, False]
    assert multi["tasks"].tolist() == ["a", "b"] and multi["a.prob"].shape == (2, 2)
