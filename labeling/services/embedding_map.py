"""The embeddings map of a finished run: every image (up to a sample) as a point, with
what the page colours it by, and the label version a bulk retag from it will send.

The 2-D layout (mlcore.projection) is computed once per run from its embeddings.npz and
stored beside it as ``map2d.npz`` (rows are image ids); the labels, confidences,
suspect scores and current versions are read fresh on every request (they change).
"""
from __future__ import annotations

import logging

import numpy as np

from mlcore import storage
from mlcore.projection import MAX_POINTS, METHOD, project_2d

from ..models import Annotation, Prediction, Suspect, SuspectRun, TrainingRun
from .labels import ordered_labels
from .run_results import image_ids_for

logger = logging.getLogger(__name__)

CHUNK = 5000


class MapUnavailable(Exception):
    """The run has no map (not finished, or no embeddings): the reason."""


def layout(run: TrainingRun) -> tuple[np.ndarray, np.ndarray]:
    """``(image_ids, xy)`` of the run's map, made on first use and stored."""
    if run.state != TrainingRun.State.DONE:
        raise MapUnavailable(f"run {run.pk} is {run.state}; the map needs a finished run")
    uri = storage.join(run.output_uri, "map2d.npz")
    if storage.exists(uri):
        z = storage.read_npz(uri)
        return z["image_id"], z["xy"]
    emb_uri = storage.join(run.output_uri, "embeddings.npz")
    if not storage.exists(emb_uri):
        raise MapUnavailable(f"run {run.pk} has no embeddings.npz")
    emb = storage.read_npz(emb_uri)
    rows, xy = project_2d(emb["emb"], max_points=MAX_POINTS)
    ids = image_ids_for(run, emb["uri"])[rows]
    storage.write_bytes(uri, storage.npz_bytes({"image_id": ids, "xy": xy}))
    logger.info("run %s: map of %s points (%s) stored", run.pk, len(ids), METHOD)
    return ids, xy


def run_map(run: TrainingRun) -> dict:
    """The page's data, as columns (one entry per point): ``image``, ``x``, ``y``,
    ``given`` / ``predicted`` / ``current`` (indices into ``labels``, -1 for none),
    ``confidence``, ``suspect`` (score or null), ``version`` (of the current label)."""
    ids, xy = layout(run)
    labels = ordered_labels(run.task)
    index = {lb.id: i for i, lb in enumerate(labels)}
    id_list = [int(i) for i in ids]
    pred: dict[int, tuple] = {}
    current: dict[int, tuple] = {}
    suspect: dict[int, float] = {}
    sr = (SuspectRun.objects.filter(run=run, state=SuspectRun.State.DONE).order_by("-id").first())
    for start in range(0, len(id_list), CHUNK):
        chunk = id_list[start:start + CHUNK]
        for image_id, given, predicted, conf in Prediction.objects.filter(run=run, image_id__in=chunk).values_list(
                "image_id", "given_label_id", "predicted_label_id", "confidence"):
            pred[image_id] = (index.get(given, -1), index.get(predicted, -1), conf)
        for image_id, label_id, version in Annotation.objects.filter(task=run.task, image_id__in=chunk).values_list(
                "image_id", "label_id", "version"):
            current[image_id] = (index.get(label_id, -1), version)
        if sr is not None:
            suspect.update(Suspect.objects.filter(suspect_run=sr, image_id__in=chunk).values_list("image_id", "score"))
    none = (-1, -1, None)
    return {
        "run": run.pk, "task": run.task_id, "method": METHOD, "sampled": len(id_list) >= MAX_POINTS,
        "labels": [{"id": lb.id, "name": lb.name} for lb in labels],
        "suspect_run": sr.pk if sr else None,
        "image": id_list,
        "x": [round(float(v), 5) for v in xy[:, 0]], "y": [round(float(v), 5) for v in xy[:, 1]],
        "given": [pred.get(i, none)[0] for i in id_list],
        "predicted": [pred.get(i, none)[1] for i in id_list],
        "confidence": [None if pred.get(i, none)[2] is None else round(pred[i][2], 4) for i in id_list],
        "suspect": [None if i not in suspect else round(float(suspect[i]), 4) for i in id_list],
        "current": [current.get(i, (-1, 0))[0] for i in id_list],
        "version": [current.get(i, (-1, 0))[1] for i in id_list],
    }
