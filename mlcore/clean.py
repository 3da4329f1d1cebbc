"""Automatic cleaning rounds: train, cluster each class's embeddings, set the outliers aside, retrain.

Round 0 trains on the given manifest. Each cleaning round then clusters the train
images of every class (complete linkage on the last model's embeddings, given labels,
:func:`mlcore.cluster.cluster_per_class`), excludes the images outside their class's
core cluster from the next training set and retrains. Where each class is cut comes from
the data (:func:`outliers`): its core holds 1 - the class's estimated rate of label errors,
so a class with cleaner labels loses fewer images; a fixed cosine cut can be given instead. Excluded images are never
deleted: the next manifest keeps them with an empty label cell (mlcore then predicts and
embeds them but does not train on them), and ``clean.json`` lists them. The excluded set
is recomputed from all originally labelled train images each round, so an image can come
back; the rounds stop after ``rounds`` or as soon as the excluded set stops changing.
Test images are never excluded: their metrics are what the rounds are judged by.

Layout under ``base.output_uri``: ``round<r>/`` (a full training run each; ``round<r>/
manifest.csv`` for r >= 1) and ``clean.json``::

    {"threshold", "rounds": [{"round", "run", "manifest", "excluded", "newly_excluded",
      "returned", "excluded_per_class": {label: n}, "cuts": {label: cut}, "test_accuracy",
      "test_macro_f1"}, ...],
     "stopped": "converged" | "rounds", "final_run", "excluded": [uri, ...]}
"""
from __future__ import annotations

import json
from dataclasses import replace
from typing import Callable

import numpy as np

from . import storage
from .cluster import cluster_per_class, knn_label_distribution
from .manifest import read_manifest, write_manifest
from .storage import load_npz
from .suspects import core_shares
from .train import TrainConfig, train

Progress = Callable[[dict], None]


def _load(run_uri: str, name: str) -> dict:
    return load_npz(storage.read_bytes(storage.join(run_uri, name)))


def outliers(emb: np.ndarray, labels: np.ndarray, *, threshold: float | None = None, prob: np.ndarray | None = None,
             num_classes: int | None = None, knn: int = 10, max_per_class: int = 10_000) -> tuple[np.ndarray, np.ndarray]:
    """(N,) bool: the labelled images outside their class's core cluster; and (C,) the cut of each class.

    ``emb`` (N, D) L2-normalised embeddings, ``labels`` (N,) (-1: unlabelled, never an
    outlier). ``threshold``: one complete-linkage cut (cosine distance) for every class. Without
    it each class is cut from its own dendrogram where its core holds 1 - the class's estimated
    rate of label errors (:func:`mlcore.suspects.core_shares`), estimated from the labels of
    each image's ``knn`` nearest neighbours and, if given, ``prob`` (N, C): probabilities that
    are out of sample for every row (a suspects run's). A run's own predictions of its train
    images are not: they echo the labels they were trained on, and the estimate would be 0.
    """
    labels = np.asarray(labels, dtype=np.int64)
    c = num_classes or (prob.shape[1] if prob is not None else int(labels.max(initial=-1)) + 1)
    out = np.zeros(len(labels), dtype=bool)
    idx = np.flatnonzero(labels >= 0)
    if len(idx) < 2:
        return out, np.full(c, np.nan)
    e, y = np.asarray(emb, dtype=np.float32)[idx], labels[idx]
    share = None
    if threshold is None:
        k = max(1, min(knn, int(np.bincount(y).max(initial=2)) - 1))  # never more neighbours than the largest class can give
        witnesses = {"knn": knn_label_distribution(e, y, k, c), "prior": np.full((len(y), c), 1.0 / c, np.float32)}
        if prob is not None:
            witnesses["prob"] = np.asarray(prob, dtype=np.float32)[idx]
        share = core_shares(witnesses, y)
    _, is_core, cuts = cluster_per_class(e, y, threshold=threshold, core_share=share, max_per_class=max_per_class,
                                         return_cuts=True)
    out[idx] = ~is_core
    return out, np.pad(np.asarray(cuts, dtype=np.float64), (0, c - len(cuts)), constant_values=np.nan)


def core_outliers(run_uri: str, uris: list[str], labels: np.ndarray, *, threshold: float | None = None,
                  num_classes: int | None = None, max_per_class: int = 10_000) -> tuple[np.ndarray, np.ndarray]:
    """:func:`outliers` over ``uris`` in the run's embeddings: (N,) bool and (C,) cuts.

    Images the run could not embed count as not outliers.
    """
    emb = _load(run_uri, "embeddings.npz")
    row = {u: i for i, u in enumerate(emb["uri"].tolist())}
    have = np.asarray([u in row for u in uris], dtype=bool)
    idx = np.flatnonzero(have)
    out = np.zeros(len(uris), dtype=bool)
    found, cuts = outliers(emb["emb"][[row[uris[i]] for i in idx]], np.asarray(labels)[idx], threshold=threshold,
                           num_classes=num_classes, max_per_class=max_per_class)
    out[idx] = found
    return out, cuts


def _test_scores(run_uri: str) -> dict:
    m = json.loads(storage.read_bytes(storage.join(run_uri, "metrics.json")))
    test = m.get("test") or {}
    return {"test_accuracy": test.get("accuracy"), "test_macro_f1": (test.get("macro") or {}).get("f1")}


def autoclean(base: TrainConfig, rounds: int = 3, threshold: float | None = None, progress: Progress | None = None, *,
              start_run: str | None = None, max_per_class: int = 10_000) -> dict:
    """Run up to ``rounds`` cleaning rounds after a first training; writes and returns ``clean.json``'s dict.

    ``threshold``: one complete-linkage cut (cosine distance, the largest diameter of a
    cluster) for every class; None (the default): each class's cut from the data (:func:`outliers`). ``start_run``: an already finished run on ``base.manifest_uri`` to use as
    round 0 instead of training it. ``progress`` gets the training dicts plus ``job``
    (``"round r"``) and ``jobs``. Single-task manifests.
    """
    out = storage.to_uri(base.output_uri) if not storage.is_s3(base.output_uri) else base.output_uri
    manifest = read_manifest(base.manifest_uri, base.labels)
    if len(manifest.tasks) != 1:
        raise ValueError("autoclean works on single-task manifests")
    names = next(iter(manifest.tasks.values()))
    base = replace(base, output_uri=out, labels=names)
    labels = manifest.targets[:, 0]
    is_train = np.asarray(manifest.splits) == "train"

    def run(config: TrainConfig, r: int) -> str:
        if not storage.exists(storage.join(config.output_uri, "predictions.npz")):
            tagged = (lambda p: progress({**p, "job": f"round {r}", "jobs": rounds + 1})) if progress else None
            train(config, progress=tagged)
        return config.output_uri

    run_uri = start_run or run(replace(base, output_uri=storage.join(out, "round0")), 0)
    history = [{"round": 0, "run": run_uri, "manifest": base.manifest_uri, "excluded": 0, "newly_excluded": 0,
                "returned": 0, "excluded_per_class": {n: 0 for n in names}, **_test_scores(run_uri)}]
    excluded = np.zeros(len(labels), dtype=bool)
    stopped = "rounds"
    for r in range(1, rounds + 1):
        now, cuts = core_outliers(run_uri, manifest.uris, np.where(is_train, labels, -1), threshold=threshold,
                                  num_classes=len(names), max_per_class=max_per_class)
        if np.array_equal(now, excluded):
            stopped = "converged"
            break
        newly, returned = int((now & ~excluded).sum()), int((excluded & ~now).sum())
        excluded = now
        rdir = storage.join(out, f"round{r}")
        cells = [names[v] if v >= 0 and not excluded[i] else "" for i, v in enumerate(labels)]
        m_uri = write_manifest(storage.join(rdir, "manifest.csv"), manifest.uris, manifest.splits, cells)
        run_uri = run(replace(base, manifest_uri=m_uri, output_uri=rdir, resume=False), r)
        per_class = np.bincount(labels[excluded], minlength=len(names))
        history.append({"round": r, "run": run_uri, "manifest": m_uri, "excluded": int(excluded.sum()),
                        "newly_excluded": newly, "returned": returned,
                        "excluded_per_class": {n: int(c) for n, c in zip(names, per_class)},
                        "cuts": {n: round(float(x), 4) for n, x in zip(names, cuts) if np.isfinite(x)},
                        **_test_scores(run_uri)})
    result = {"threshold": threshold, "rounds": history, "stopped": stopped, "final_run": run_uri,
              "excluded": [manifest.uris[i] for i in np.flatnonzero(excluded)]}
    storage.write_bytes(storage.join(out, "clean.json"), json.dumps(result, indent=1).encode(), "application/json")
    return result
