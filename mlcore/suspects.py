"""Mislabel scoring: which images' given labels are probably wrong, and what they should be.

Two independent witnesses against a given label:

- the **model**, through *out-of-sample* probabilities (:mod:`mlcore.folds`: each train
  image predicted by a model that never saw it, so it cannot have memorised the wrong label);
- the **embedding neighbourhood**: the labels of an image's nearest neighbours (kNN) and
  whether it sits inside its class's core cluster (:mod:`mlcore.cluster`).

``method="fused"`` (the default) mixes the model's probabilities with the kNN label
distribution, ``f = (1 - knn_weight) * prob + knn_weight * knn_dist`` (``knn_weight=0.7``),
and scores ``1 - f[given]``. How the default was chosen: bench/suspects_fashion_mnist.py
scores every setting with ``knn_weight`` 0.3, 0.5 and 0.7 and with each witness alone
(``"prob"``, ``"knn"``) on the same out-of-sample probabilities; 0.7 had the best F1 and
AUROC of the fused variants and beat cleanlab in F1 and precision at k in both settings
that finished (sym20, classcond20; bench/results/suspects_fashion_mnist.json). ``"knn"``
alone scored higher still there, most likely because the bench's CPU-budget fold models
were weak (about 25% held-out accuracy); it is not the default because
the embeddings come from the main run, which saw every label: the longer it trains, the
more it can pull a mislabelled image towards its given class; the out-of-sample
probabilities cannot be.

The default decision rule (``flagged``) is confident learning's, applied to ``f``: class
``c``'s threshold is the mean of ``f[:, c]`` over images labelled ``c``; an image is flagged
when another class reaches its own threshold and beats the given label. Its precision was
about 0.5 on the bench: it selects images for review; relabelling every flagged image to
``suggested`` without review fixed about as many labels as it broke there.

``reasons`` bit flags (``REASON_*``): 1 the model disagrees (its out-of-sample top class
is not the given label), 2 cluster outlier (outside its class's core cluster), 4 kNN
disagreement (fewer than half of the nearest labelled neighbours share the label).
"""
from __future__ import annotations

import numpy as np

from .cluster import cluster_per_class, knn_label_distribution

REASON_MODEL = 1
REASON_CLUSTER = 2
REASON_KNN = 4
METHODS = ("fused", "prob", "knn")


def confident_thresholds(prob: np.ndarray, given: np.ndarray) -> np.ndarray:
    """(C,) per-class thresholds: the mean probability of class c over the images labelled c."""
    c = prob.shape[1]
    t = np.full(c, np.inf, dtype=np.float64)
    for k in range(c):
        rows = given == k
        if rows.any():
            t[k] = prob[rows, k].mean()
    return t


def confident_issue(prob: np.ndarray, given: np.ndarray) -> np.ndarray:
    """(N,) bool: another class reaches its confident threshold and beats the given label."""
    lab = given >= 0
    t = confident_thresholds(prob, given)
    p_given = np.where(lab, prob[np.arange(len(prob)), np.maximum(given, 0)], np.inf)
    other = (prob >= t[None, :]) & (prob > p_given[:, None])
    other[np.flatnonzero(lab), given[lab]] = False
    return lab & other.any(1)


def normalised_margin(prob: np.ndarray, given: np.ndarray) -> np.ndarray:
    """(N,) ``p[given] - max_{j != given} p[j]`` in [-1, 1] (NaN where unlabelled)."""
    n = len(prob)
    lab = given >= 0
    g = np.maximum(given, 0)
    p_given = prob[np.arange(n), g]
    rest = prob.copy()
    rest[np.arange(n), g] = -np.inf
    return np.where(lab, p_given - rest.max(1), np.nan).astype(np.float32)


def score(prob: np.ndarray, given: np.ndarray, emb: np.ndarray | None = None, *, method: str = "fused",
          cluster_threshold: float = 0.5, knn: int = 10, knn_weight: float = 0.7,
          max_per_class: int = 10_000) -> dict[str, np.ndarray]:
    """Per-image mislabel evidence for ``prob`` (N, C) out-of-sample probabilities and ``given`` (N,) labels.

    ``given`` is -1 where an image has no label (it is scored 0 and never flagged, but it is
    clustered nowhere and serves as nobody's neighbour). ``emb`` (N, D) L2-normalised
    embeddings in the same row order; without it only the model evidence is used (the
    cluster and kNN arrays are then -1 / True / NaN and ``method`` falls back to ``"prob"``).

    Returns arrays of length N: ``self_confidence`` (p[given]), ``margin`` (normalised
    margin), ``cl_issue`` (confident-learning flag on the model's probabilities),
    ``cluster_id``, ``is_core``, ``cluster_outlier``, ``knn_agreement``, ``score`` (in
    [0, 1], higher = more likely mislabelled), ``flagged`` (the default decision rule),
    ``suggested`` (the most likely *other* label; for unlabelled images the most likely
    label) and ``reasons`` (bit flags, see the module docstring).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, not {method!r}")
    prob = np.asarray(prob, dtype=np.float32)
    given = np.asarray(given, dtype=np.int64)
    n, c = prob.shape
    rows = np.arange(n)
    lab = given >= 0
    g = np.maximum(given, 0)

    self_conf = np.where(lab, prob[rows, g], np.nan).astype(np.float32)
    out = {"self_confidence": self_conf, "margin": normalised_margin(prob, given),
           "cl_issue": confident_issue(prob, given)}

    if emb is not None and lab.sum() > 1:
        cluster_id, is_core = cluster_per_class(emb, given, threshold=cluster_threshold,
                                                max_per_class=max_per_class)
        knn_dist = knn_label_distribution(emb, given, knn, c)
        agreement = np.where(lab, knn_dist[rows, g], np.nan).astype(np.float32)
    else:
        cluster_id, is_core = np.full(n, -1, dtype=np.int64), np.ones(n, dtype=bool)
        knn_dist, agreement = None, np.full(n, np.nan, dtype=np.float32)
        method = "prob"
    out.update(cluster_id=cluster_id, is_core=is_core, cluster_outlier=lab & ~is_core, knn_agreement=agreement)

    if method == "prob":
        f = prob
    elif method == "knn":
        f = knn_dist
    else:
        f = (1 - knn_weight) * prob + knn_weight * knn_dist
    f_given = f[rows, g]
    out["score"] = np.where(lab, np.clip(1.0 - f_given, 0.0, 1.0), 0.0).astype(np.float32)
    out["flagged"] = confident_issue(f, given)
    alt = f.copy()
    alt[np.flatnonzero(lab), given[lab]] = -np.inf
    out["suggested"] = np.where(lab, alt.argmax(1), f.argmax(1)).astype(np.int64)
    reasons = np.zeros(n, dtype=np.int64)
    reasons |= np.where(lab & (prob.argmax(1) != given), REASON_MODEL, 0)
    reasons |= np.where(out["cluster_outlier"], REASON_CLUSTER, 0)
    reasons |= np.where(lab & (agreement < 0.5), REASON_KNN, 0)
    out["reasons"] = reasons
    return out


def reason_names(bits: int) -> list[str]:
    """``["model", "cluster", "knn"]`` subset named by a ``reasons`` value."""
    return [name for flag, name in ((REASON_MODEL, "model"), (REASON_CLUSTER, "cluster"), (REASON_KNN, "knn"))
            if bits & flag]


def score_run(run_uri: str, out_uri: str, *, oos_uri: str | None = None, folds: int = 0,
              fold_epochs: int | None = None, progress=None, **kw) -> dict:
    """Score a finished run's images; writes ``suspects.npz``, ``clusters.npz`` and ``suspects.json`` to ``out_uri``.

    Probabilities: ``oos_uri`` (an ``oos.npz``), else with ``folds`` >= 2 the K fold runs are
    trained now (:func:`mlcore.folds.out_of_sample`, reusing the finished main run), else the
    run's own predictions (in-sample: memorised labels hide errors; ``suspects.json`` says so).
    Embeddings: the run's ``embeddings.npz``. ``kw`` goes to :func:`score`.

    ``suspects.npz``: ``uri``, ``split``, ``label`` (given), ``labels`` (names) and every array of
    :func:`score`. ``clusters.npz``: ``id``, ``label``, ``size``, ``core`` (one row per cluster).
    Returns the summary written to ``suspects.json``.
    """
    import json
    from dataclasses import fields

    from . import storage
    from .cluster import cluster_table
    from .evaluate import load_npz, npz_bytes

    source = "in-sample predictions of the run"
    if oos_uri is None and folds >= 2:
        from .folds import out_of_sample
        from .train import TrainConfig

        run = json.loads(storage.read_bytes(storage.join(run_uri, "run.json")))
        names = {f.name for f in fields(TrainConfig)}
        base = TrainConfig(**{k: v for k, v in run["config"].items() if k in names})
        base.output_uri = run_uri
        oos_uri = out_of_sample(base, k=folds, fold_epochs=fold_epochs, progress=progress)
    if oos_uri is not None:
        p = load_npz(storage.read_bytes(oos_uri if oos_uri.endswith(".npz") else storage.join(oos_uri, "oos.npz")))
        source = f"out-of-sample: {oos_uri}"
    else:
        p = load_npz(storage.read_bytes(storage.join(run_uri, "predictions.npz")))
    emb_file = load_npz(storage.read_bytes(storage.join(run_uri, "embeddings.npz")))
    row = {u: i for i, u in enumerate(emb_file["uri"].tolist())}
    have = np.asarray([u in row for u in p["uri"].tolist()])
    p = {k: (v[have] if v.ndim and len(v) == len(have) and k != "labels" else v) for k, v in p.items()}
    emb = emb_file["emb"][[row[u] for u in p["uri"].tolist()]].astype(np.float32)
    s = score(p["prob"], p["label"], emb, **kw)
    arrays = {"uri": p["uri"], "split": p["split"], "label": p["label"], "labels": p["labels"], **s}
    storage.write_bytes(storage.join(out_uri, "suspects.npz"), npz_bytes(arrays))
    storage.write_bytes(storage.join(out_uri, "clusters.npz"),
                        npz_bytes(cluster_table(s["cluster_id"], s["is_core"], p["label"])))
    names = p["labels"].tolist()
    flagged = s["flagged"]
    summary = {"run": run_uri, "probabilities": source, "images": int(len(flagged)),
               "flagged": int(flagged.sum()),
               "flagged_per_label": {n: int((flagged & (p["label"] == i)).sum()) for i, n in enumerate(names)},
               "cluster_outliers": int(s["cluster_outlier"].sum()),
               "clusters": int(s["cluster_id"].max() + 1) if len(s["cluster_id"]) else 0,
               "top": [{"uri": str(p["uri"][i]), "label": names[p["label"][i]], "suggested": names[s["suggested"][i]],
                        "score": round(float(s["score"][i]), 4), "reasons": reason_names(int(s["reasons"][i]))}
                       for i in np.argsort(-s["score"], kind="stable")[:20] if p["label"][i] >= 0],
               "options": {k: v for k, v in kw.items()}}
    storage.write_bytes(storage.join(out_uri, "suspects.json"), json.dumps(summary, indent=1).encode(),
                        "application/json")
    return summary
