"""Automatic cleaning rounds: train, cluster each class's embeddings, set the outliers aside, retrain.

Round 0 trains on the given manifest. Each cleaning round then clusters the train
images of every class (complete linkage on the last model's embeddings, given labels,
:func:`mlcore.cluster.cluster_per_class`), excludes the images outside their class's
core cluster from the next training set and retrains. Excluded images are never
deleted: the next manifest keeps them with an empty label cell (mlcore then predicts and
embeds them but does not train on them), and ``clean.json`` lists them. The excluded set
is recomputed from all originally labelled train images each round, so an image can come
back; the rounds stop after ``rounds`` or as soon as the excluded set stops changing.
Test images are never excluded: their metrics are what the rounds are judged by.

Layout under ``base.output_uri``: ``round<r>/`` (a full training run each; ``round<r>/
manifest.csv`` for r >= 1) and ``clean.json``::

    {"threshold", "rounds": [{"round", "run", "manifest", "excluded", "newly_excluded",
      "returned", "excluded_per_class": {label: n}, "test_accuracy", "test_macro_f1"}, ...],
     "stopped": "converged" | "rounds", "final_run", "excluded": [uri, ...]}
"""
from __future__ import annotations

import json
from dataclasses import replace
from typing import Callable

import numpy as np

from . import storage
from .cluster import cluster_per_class
from .manifest import read_manifest, write_manifest
from .storage import load_npz
from .train import TrainConfig, train

Progress = Callable[[dict], None]


def _load(run_uri: str, name: str) -> dict:
    return load_npz(storage.read_bytes(storage.join(run_uri, name)))


def core_outliers(run_uri: str, uris: list[str], labels: np.ndarray, *, threshold: float,
                  max_per_class: int = 10_000) -> np.ndarray:
    """(N,) bool over ``uris``: labelled images outside their class's core cluster, in the run's embeddings.

    Images the run could not embed count as not outliers.
    """
    emb = _load(run_uri, "embeddings.npz")
    row = {u: i for i, u in enumerate(emb["uri"].tolist())}
    have = np.asarray([u in row for u in uris])
    idx = np.flatnonzero(have & (labels >= 0))
    out = np.zeros(len(uris), dtype=bool)
    if len(idx) < 2:
        return out
    e = emb["emb"][[row[uris[i]] for i in idx]].astype(np.float32)
    _, is_core = cluster_per_class(e, labels[idx], threshold=threshold, max_per_class=max_per_class)
    out[idx] = ~is_core
    return out


def _test_scores(run_uri: str) -> dict:
    m = json.loads(storage.read_bytes(storage.join(run_uri, "metrics.json")))
    test = m.get("test") or {}
    return {"test_accuracy": test.get("accuracy"), "test_macro_f1": (test.get("macro") or {}).get("f1")}


def autoclean(base: TrainConfig, rounds: int = 3, threshold: float = 0.5, progress: Progress | None = None, *,
              start_run: str | None = None, max_per_class: int = 10_000) -> dict:
    """Run up to ``rounds`` cleaning rounds after a first training; writes and returns ``clean.json``'s dict.

    ``threshold`` is the complete-linkage cut (cosine distance, the largest diameter of a
    cluster). ``start_run``: an already finished run on ``base.manifest_uri`` to use as
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
        now = core_outliers(run_uri, manifest.uris, np.where(is_train, labels, -1), threshold=threshold,
                            max_per_class=max_per_class)
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
                        **_test_scores(run_uri)})
    result = {"threshold": threshold, "rounds": history, "stopped": stopped, "final_run": run_uri,
              "excluded": [manifest.uris[i] for i in np.flatnonzero(excluded)]}
    storage.write_bytes(storage.join(out, "clean.json"), json.dumps(result, indent=1).encode(), "application/json")
    return result
