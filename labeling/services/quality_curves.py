"""A run's per-class precision-recall curve and confidence histograms, from the stored
probabilities (Prediction.probs: float16, in the order of ``run.label_ids``).

The dashboard loads them asynchronously (its own render reads no prediction). At a
million test predictions reading them all would cost seconds, so at most ``SAMPLE``
predictions are read: a uniform sample seeded by the run id (the same sample on every
request, so the figure does not flicker), and the answer says so (``sampled``, ``n`` of
``total``). Below the cap every prediction is read and the figures are exact.
"""
from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, precision_recall_curve

from ..models import Prediction, Split, TrainingRun
from .quality import QualityError, check_split, run_labels

SAMPLE = 50_000  # predictions read at most per request: 1.3 s of 250,000 (200,000 took 4 s; 2 cores, PostgreSQL)
CURVE_POINTS = 200  # points of the curve sent to the page (AP is computed on every point)
BINS = 20  # confidence histogram: 20 bins of 0.05 over [0, 1]
ID_CHUNK = 10_000  # ids per IN (...) when reading a sample


def _rows(run: TrainingRun, split: str, sample: int) -> tuple[list[tuple], int]:
    """(given label id, predicted label id, confidence, correct, probs) of the split's
    predictions, or of a seeded sample of ``sample`` of them; and how many there are."""
    qs = Prediction.objects.filter(run=run, split=split, given_label__isnull=False)
    cols = ("given_label_id", "predicted_label_id", "confidence", "correct", "probs")
    ids = np.fromiter(qs.values_list("id", flat=True).iterator(chunk_size=50_000), dtype=np.int64)
    total = len(ids)
    if total <= sample:
        return list(qs.values_list(*cols).iterator(chunk_size=10_000)), total
    chosen = np.sort(np.random.default_rng(run.id).choice(ids, size=sample, replace=False))
    rows = []
    for start in range(0, len(chosen), ID_CHUNK):
        rows += qs.filter(id__in=chosen[start:start + ID_CHUNK].tolist()).values_list(*cols)
    return rows, total


def _thin(values: np.ndarray, idx: np.ndarray) -> list[float]:
    return [round(float(v), 5) for v in values[idx]]


def _histogram(confidence: np.ndarray, correct: np.ndarray, edges: np.ndarray) -> dict:
    return {"correct": np.histogram(confidence[correct], bins=edges)[0].tolist(),
            "wrong": np.histogram(confidence[~correct], bins=edges)[0].tolist()}


def pr_curves(run: TrainingRun, label_id, *, split: str = Split.TEST, sample: int = SAMPLE) -> dict:
    """One class against the rest on a split: the precision-recall curve of the class's
    probability with its average precision (sklearn's), and histograms of the confidence
    of correct and wrong predictions: of all predictions, and of those predicting the class."""
    split = check_split(split)
    try:
        label_id = int(label_id)
    except (TypeError, ValueError):
        raise QualityError("label: a label id of the run is required")
    if label_id not in run.label_ids:
        raise QualityError(f"label {label_id} is not one of run {run.id}'s labels")
    k = run.label_ids.index(label_id)
    names = {lb.id: lb.name for lb in run_labels(run)}
    labels = [{"id": i, "name": names.get(i, str(i))} for i in run.label_ids]
    rows, total = _rows(run, split, sample)
    edges = np.linspace(0.0, 1.0, BINS + 1)
    out = {"run": run.id, "split": split, "label": labels[k], "labels": labels, "total": total, "n": len(rows),
           "sampled": len(rows) < total, "positives": 0, "average_precision": None,
           "curve": {"precision": [], "recall": [], "threshold": []}, "edges": [round(float(e), 4) for e in edges],
           "histogram": {"all": _histogram(np.zeros(0), np.zeros(0, bool), edges),
                         "predicted": _histogram(np.zeros(0), np.zeros(0, bool), edges)}}
    if not rows:
        return out
    given, predicted, confidence, correct, probs = zip(*rows)
    given, predicted = np.asarray(given), np.asarray(predicted)
    confidence, correct = np.asarray(confidence, dtype=np.float64), np.asarray(correct, dtype=bool)
    width = len(run.label_ids)
    score = np.frombuffer(b"".join(bytes(p) for p in probs), dtype=np.float16).reshape(len(rows), width)[:, k]
    score = score.astype(np.float64)
    y = given == label_id
    out["histogram"] = {"all": _histogram(confidence, correct, edges),
                        "predicted": _histogram(confidence[predicted == label_id],
                                                correct[predicted == label_id], edges)}
    out["positives"] = int(y.sum())
    if y.any():
        precision, recall, threshold = precision_recall_curve(y, score)
        out["average_precision"] = float(average_precision_score(y, score))
        idx = np.unique(np.linspace(0, len(precision) - 1, min(CURVE_POINTS, len(precision))).round().astype(int))
        out["curve"] = {"precision": _thin(precision, idx), "recall": _thin(recall, idx),
                        # the last point (recall 0, precision 1) has no threshold
                        "threshold": _thin(np.append(threshold, 1.0), idx)}
    return out
