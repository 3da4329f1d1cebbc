"""K-fold out-of-sample probabilities: every train image predicted by a model that never saw it.

A model scores its own training images with the (possibly wrong) labels it memorised, so
mislabel scores need out-of-sample probabilities. The scheme:

- :func:`fold_of` puts each train image in one of K folds by a hash of its URI (stable:
  adding images or reordering the manifest moves nobody).
- Fold f's manifest (:func:`write_fold_manifest`): the train images of the other folds
  stay ``train``; fold f's own train images become ``val`` (held out: not trained on,
  predicted at the end, and the per-epoch validation curve, honest because unseen); the
  manifest's own ``val`` and ``test`` rows are left out (the main run predicts them, and
  it never trained on them either). URIs are written resolved, so the file can live anywhere.
- :func:`fold_configs` gives K independent :class:`~mlcore.train.TrainConfig` s (the app
  runs them as parallel jobs), :func:`combine_folds` merges their predictions with the
  main run's into ``oos.npz``; :func:`out_of_sample` does it all in-process.

``oos.npz``: ``uri``, ``split``, ``label`` (given index, -1 none), ``prob`` (float32 N x C,
out-of-sample for every row), ``fold`` (the fold that predicted a train row; -1 for rows
the main run predicted), ``in_sample`` (bool: a train row no fold could predict, e.g.
unreadable there, given the main run's in-sample probabilities), ``labels`` (names).
Rows are in the main run's ``predictions.npz`` order.

:func:`held_out_spaces` gives the suspects' neighbourhood witnesses embeddings that never
saw the labels of the images they place: fold f's model embedded every train image, and
the rows it held out sit where their pixels put them, not where a memorised wrong label
pulled them (the main run's embeddings saw every label).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from typing import Callable

import numpy as np

from . import storage
from .manifest import read_manifest, write_manifest
from .storage import load_npz, npz_bytes
from .train import TrainConfig, train

Progress = Callable[[dict], None]


def fold_of(uris: list[str], k: int, seed: int = 0) -> np.ndarray:
    """(N,) int fold index in ``[0, k)`` of each URI: a hash of (seed, uri), independent of order."""
    if k < 2:
        raise ValueError("k must be at least 2")
    return np.asarray([int(hashlib.sha1(f"{seed}:{u}".encode()).hexdigest()[:12], 16) % k for u in uris],
                      dtype=np.int64)


def _label_order(manifest) -> list | dict:
    tasks = manifest.tasks
    return tasks[next(iter(tasks))] if len(tasks) == 1 else tasks


def write_fold_manifest(manifest_uri: str, k: int, fold: int, out_uri: str, *, seed: int = 0,
                        labels=None) -> str:
    """Write fold ``fold``'s manifest CSV to ``out_uri`` (a ``.csv`` URI or a folder); returns its URI.

    Train rows of the other folds -> ``train``; train rows of this fold -> ``val`` (held out
    and predicted); the manifest's ``val``/``test`` rows are dropped.
    """
    m = read_manifest(manifest_uri, labels)
    train_rows = m.indices("train")
    folds = fold_of([m.uris[i] for i in train_rows], k, seed)
    uris = [m.uris[i] for i in train_rows]
    splits = ["val" if f == fold else "train" for f in folds]
    cols = {t: [names[v] if v >= 0 else "" for v in m.targets[train_rows, j]]
            for j, (t, names) in enumerate(m.tasks.items())}
    if not out_uri.endswith(".csv"):
        out_uri = storage.join(out_uri, "manifest.csv")
    return write_manifest(out_uri, uris, splits, cols)


def fold_configs(base: TrainConfig, k: int, output_uri: str, *, fold_epochs: int | None = None,
                 seed: int = 0, tta_flip: bool = True) -> list[TrainConfig]:
    """K training configs, fold f under ``<output_uri>/fold<f>/`` (its manifest is written there now).

    Each is ``base`` with that fold's manifest, ``fold_epochs`` epochs if given, the full
    manifest's label order fixed (so probability columns line up with the main run),
    ``tta_flip`` (held-out probabilities averaged over each image and its mirror, as training
    augments with flips: stronger out-of-sample probabilities for one more forward pass; on
    CIFAR-10N's dev half B it raised the suspects' F1, bench/suspects_cifar10n.py) and
    ``notes["fold"] = {"k", "fold", "seed"}``. The configs are independent: run them anywhere.
    """
    labels = base.labels if base.labels is not None else _label_order(read_manifest(base.manifest_uri))
    configs = []
    for f in range(k):
        out = storage.join(output_uri, f"fold{f}")
        manifest = write_fold_manifest(base.manifest_uri, k, f, out, seed=seed, labels=labels)
        configs.append(replace(base, manifest_uri=manifest, output_uri=out, labels=labels, resume=False,
                               epochs=fold_epochs or base.epochs, val_fraction=0.0, tta_flip=tta_flip,
                               notes={**base.notes, "fold": {"k": k, "fold": f, "seed": seed}}))
    return configs


def _prefix(arrays: dict, task: str | None) -> str:
    if "tasks" not in arrays:
        return ""
    if task is None:
        raise ValueError(f"multi-facet predictions: name a task ({arrays['tasks'].tolist()})")
    return f"{task}."


def combine_folds(fold_output_uris: list[str], main_output_uri: str, out_uri: str, *,
                  task: str | None = None) -> str:
    """Write ``oos.npz`` (see the module docstring) to ``out_uri`` (a ``.npz`` URI or a folder); returns its URI.

    Train rows take their probabilities from the fold whose model held them out (split
    ``val`` in that fold's predictions); ``val``/``test`` rows from the main run.
    """
    main = load_npz(storage.read_bytes(storage.join(main_output_uri, "predictions.npz")))
    pre = _prefix(main, task)
    prob = main[pre + "prob"].astype(np.float32).copy()
    split = main["split"]
    row = {u: i for i, u in enumerate(main["uri"].tolist())}
    fold = np.full(len(prob), -1, dtype=np.int64)
    for f, uri in enumerate(fold_output_uris):
        p = load_npz(storage.read_bytes(storage.join(uri, "predictions.npz")))
        if p[pre + "labels"].tolist() != main[pre + "labels"].tolist():
            raise ValueError(f"fold {uri} has labels {p[pre + 'labels'].tolist()}, the main run "
                             f"{main[pre + 'labels'].tolist()}")
        held = np.flatnonzero(p["split"] == "val")
        for i in held:
            r = row.get(p["uri"][i])
            if r is not None and split[r] == "train":
                prob[r] = p[pre + "prob"][i]
                fold[r] = f
    in_sample = (split == "train") & (fold < 0)
    arrays = {"uri": main["uri"], "split": split, "label": main[pre + "label"], "prob": prob, "fold": fold,
              "in_sample": in_sample, "labels": main[pre + "labels"]}
    if not out_uri.endswith(".npz"):
        out_uri = storage.join(out_uri, "oos.npz")
    storage.write_bytes(out_uri, npz_bytes(arrays))
    return out_uri


def out_of_sample(base: TrainConfig, k: int = 4, progress: Progress | None = None, *,
                  fold_epochs: int | None = None, seed: int = 0, reuse: bool = True, tta_flip: bool = True) -> str:
    """Train the main run (``base``) and K fold runs in-process; returns the URI of ``<output>/oos.npz``.

    Folds live under ``<output>/folds/fold<f>``. With ``reuse`` a run whose
    ``predictions.npz`` already exists is not trained again (an interrupted job resumes
    at the next missing run). ``progress`` gets the training dicts plus ``job``
    (``"main"`` or ``"fold f"``) and ``jobs`` (k + 1).
    """
    out = storage.to_uri(base.output_uri) if not storage.is_s3(base.output_uri) else base.output_uri
    base = replace(base, output_uri=out)
    if base.labels is None:
        base = replace(base, labels=_label_order(read_manifest(base.manifest_uri)))

    def run(config: TrainConfig, job: str):
        if reuse and storage.exists(storage.join(config.output_uri, "predictions.npz")):
            return
        tagged = (lambda p: progress({**p, "job": job, "jobs": k + 1})) if progress else None
        train(config, progress=tagged)

    run(base, "main")
    configs = fold_configs(base, k, storage.join(out, "folds"), fold_epochs=fold_epochs, seed=seed, tta_flip=tta_flip)
    for f, config in enumerate(configs):
        run(config, f"fold {f}")
    uri = combine_folds([c.output_uri for c in configs], out, out)
    storage.write_bytes(storage.join(out, "folds", "folds.json"), json.dumps(
        {"k": k, "seed": seed, "fold_epochs": fold_epochs or base.epochs,
         "folds": [c.output_uri for c in configs], "oos": uri}, indent=1).encode(), "application/json")
    return uri


def held_out_spaces(fold_output_uris: list[str], main_output_uri: str, uris, fold: np.ndarray) -> list[tuple]:
    """``[(rows, emb, reference)]`` for :func:`mlcore.suspects.score`'s ``spaces``: per fold run,
    the rows it held out (``fold == f``, as in ``oos.npz``), its embeddings of all ``uris``
    (N, D; zero where it has none) and the rows it has (``reference``: the neighbours to look
    among); rows no fold held out (``fold == -1``: val/test, never trained on by the main run)
    in the main run's embeddings. Rows in ``uris`` order.
    """
    uris = list(uris)
    fold = np.asarray(fold)
    spaces = []
    for f, run_uri in [*enumerate(fold_output_uris), (-1, main_output_uri)]:
        rows = np.flatnonzero(fold == f)
        if not len(rows):
            continue
        z = load_npz(storage.read_bytes(storage.join(run_uri, "embeddings.npz")))
        at = {u: i for i, u in enumerate(z["uri"].tolist())}
        have = np.asarray([u in at for u in uris])
        emb = np.zeros((len(uris), z["emb"].shape[1]), dtype=np.float32)
        emb[have] = z["emb"][[at[u] for u, h in zip(uris, have) if h]].astype(np.float32)
        rows = rows[have[rows]]
        spaces.append((rows, emb, np.flatnonzero(have)))
    return spaces
