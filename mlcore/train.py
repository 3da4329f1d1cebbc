"""Training: the manifest-to-results run (:func:`train`) around the loop of :mod:`mlcore.loop`.

``train(config)`` reads the manifest, trains, then predicts, scores and embeds every
image of the manifest in one pass and writes, under ``config.output_uri``:
``model.pt`` (state_dict), ``run.json``, ``metrics.json``, ``predictions.npz``,
``embeddings.npz`` and ``checkpoints/last.pt``.

Resuming continues from ``checkpoints/last.pt`` with the result of an uninterrupted
run (see :mod:`mlcore.loop`).
"""
from __future__ import annotations

import io
import time
from dataclasses import asdict
from typing import Callable

import numpy as np
import torch

from . import storage
from .config import TrainConfig  # declared with its options in mlcore.config; imported from here too
from .data import ImageDataset, eval_crop, holdout, prefetch, train_crop
from .device import amp_default, channels_last_default, default_workers, environment, resolve_device
from .evaluate import infer, write_results
from .features import FeatureStore, Stopped, extract, head_infer
from .launch import launch
from .loop import Cancelled, fit
from .manifest import SPLITS, read_manifest
from .models import build_model
from .objective import class_weights, lr_lambda

__all__ = ["Cancelled", "TrainConfig", "choose_validation", "class_weights", "default_workers", "fit", "lr_lambda",
           "resolve_device", "run_training", "train"]

Progress = Callable[[dict], None]


# --------------------------------------------------------------------------- manifest -> results

def choose_validation(manifest, config: TrainConfig) -> tuple[np.ndarray, np.ndarray, str]:
    """(train rows, validation rows, where validation comes from).

    A ``val`` split wins; else ``val_fraction`` of train is held out by URI hash; else the
    test split is used for the per-epoch curves (and early stopping, which then is
    optimistic: run.json says so).
    """
    train_idx = manifest.indices("train")
    if len(manifest.indices("val")):
        return train_idx, manifest.indices("val"), "val split"
    if config.val_fraction > 0:
        keep, held = holdout(train_idx, manifest.uris, config.val_fraction)
        return keep, held, f"{config.val_fraction:.0%} of train held out by URI hash"
    if len(manifest.indices("test")):
        note = "test split (no val split, val_fraction=0)"
        if config.patience is not None:
            note += ": early stopping on the test split makes its test metrics optimistic"
        return train_idx, manifest.indices("test"), note
    return train_idx, train_idx[:0], "none"


def train(config: TrainConfig, progress: Progress | None = None,
          should_stop: Callable[[], bool] | None = None) -> dict:
    """Train on a manifest and write the run's files under ``config.output_uri``; returns run.json's dict.

    With ``gpus`` > 1 the run trains in that many processes under torchrun
    (:mod:`mlcore.distributed`), with the same files, resume and metrics as one process.
    """
    if not config.output_uri:
        raise ValueError("config.output_uri is required")
    if config.gpus < 1:
        raise ValueError(f"gpus must be at least 1, not {config.gpus}")
    config.output_uri = storage.to_uri(config.output_uri) if not storage.is_s3(config.output_uri) \
        else config.output_uri
    if config.gpus > 1 and not _heads_only(config):
        read_manifest(config.manifest_uri, config.labels)  # a bad manifest fails here, before N processes start
        return launch(config, progress, should_stop)
    return run_training(config, progress, should_stop)


def _heads_only(config: TrainConfig) -> bool:
    """A frozen backbone with cached features: the backbone runs once, the heads train in seconds."""
    return config.freeze_backbone and config.cache_features


def run_training(config: TrainConfig, progress: Progress | None = None,
                 should_stop: Callable[[], bool] | None = None, *, dist=None) -> dict:
    """:func:`train` in this process (``dist``: as one rank of a data-parallel run; rank 0 writes)."""
    t0 = time.time()
    config.output_uri = storage.to_uri(config.output_uri) if not storage.is_s3(config.output_uri) \
        else config.output_uri
    main = dist is None or dist.main
    manifest = read_manifest(config.manifest_uri, config.labels)
    device = dist.device if dist is not None else resolve_device(config.device)
    skipped = _prefetch(manifest, config, dist)
    train_idx, val_idx, val_source = choose_validation(manifest, config)
    labelled = (manifest.targets[train_idx] >= 0).any(1)
    train_idx = np.asarray([i for i in train_idx[labelled] if i not in skipped], dtype=np.int64)
    val_idx = np.asarray([i for i in val_idx if i not in skipped], dtype=np.int64)
    if not len(train_idx):
        raise ValueError("no labelled, readable training images in the manifest")

    tasks = manifest.tasks
    torch.manual_seed(config.seed)  # the initial weights are part of what a seed reproduces
    model = build_model(config.arch, {t: len(v) for t, v in tasks.items()}, config.weights,
                        config.small_input, config.maxpool)
    train_set = ImageDataset(manifest.uris, manifest.targets, train_crop(config.image_size))
    eval_set = ImageDataset(manifest.uris, manifest.targets, eval_crop(config.image_size))
    predict_idx = [i for i in range(len(manifest)) if i not in skipped]

    cache, notes = None, []
    if _heads_only(config):
        if config.gpus > 1:
            notes.append(f"gpus={config.gpus} ignored: a frozen backbone with cached features trains in one process")
        wanted = predict_idx if config.predict else sorted({*train_idx.tolist(), *val_idx.tolist()})
        mirror_set = ImageDataset(manifest.uris, manifest.targets, eval_crop(config.image_size, mirror=True)) \
            if config.tta_flip and config.predict else None
        cache = _extract(config, model, device, eval_set, wanted, train_set, train_idx, should_stop, progress,
                         mirror_set)
        skipped.update(cache.skipped)
        train_idx, val_idx = train_idx[cache.ok[train_idx]], val_idx[cache.ok[val_idx]]
        if not len(train_idx):
            raise ValueError("no labelled, readable training images in the manifest")
    result = fit(config, model, tasks, train_set, train_idx, eval_set, val_idx, progress=progress,
                 should_stop=should_stop, skipped=skipped, features=cache, dist=dist)
    if not main:
        return {}

    out = config.output_uri
    storage.write_bytes(storage.join(out, "model.pt"), _state_bytes(model))
    metrics = {}
    if config.predict:
        if cache is not None:
            res = head_infer(model, cache, predict_idx, flip=config.tta_flip)
        else:
            res = infer(model, eval_set, predict_idx, device=device,
                        batch_size=config.eval_batch_size or config.batch_size * 2, workers=result["workers"],
                        amp=result["amp"], channels_last=result["channels_last"], progress=progress, phase="embed",
                        flip=config.tta_flip)
        skipped.update({int(i): r for i, r in res["skipped"]})
        metrics = write_results(out, res, manifest)

    run = {
        "status": "completed",
        "config": asdict(config),
        "tasks": tasks,
        "labels": tasks[next(iter(tasks))] if len(tasks) == 1 else None,
        "manifest": {"uri": manifest.uri, "sha256": manifest.sha256, "rows": len(manifest),
                     "splits": {s: int(len(manifest.indices(s))) for s in SPLITS},
                     "notes": manifest.notes},
        "validation": {"source": val_source, "images": int(len(val_idx))},
        "history": result["history"],
        "best_epoch": result["best_epoch"],
        "stopped_early": result["stopped_early"],
        "metrics": _summary(metrics),
        "skipped": [{"uri": manifest.uris[i], "split": manifest.splits[i], "reason": r}
                    for i, r in sorted(skipped.items())],
        "environment": {**environment(device), "amp_bf16": result["amp"], "channels_last": result["channels_last"],
                        "loader_workers": result["workers"], "compile": config.compile,
                        "processes": dist.world if dist is not None else 1,
                        "cached_features": cache is not None, "notes": notes},
        "timing": {"wall_s": time.time() - t0, "train_s": result["train_s"],
                   "images_per_s": result["images_per_s"],
                   "features_s": cache.seconds if cache is not None else None,
                   "features_from_store": cache.from_store if cache is not None else None},
        "files": {"model": "model.pt", "metrics": "metrics.json", "predictions": "predictions.npz",
                  "embeddings": "embeddings.npz", "checkpoint": "checkpoints/last.pt"},
    }
    storage.write_json(storage.join(out, "run.json"), run)
    return run


def _prefetch(manifest, config: TrainConfig, dist) -> dict[int, str]:
    """Fill the S3 cache (rank 0 first in a data-parallel run); {row: reason} of the unreadable."""
    main = dist is None or dist.main
    if dist is not None and not main:
        dist.barrier()  # rank 0 fills the S3 cache first; the others then find everything there
    failures = prefetch(manifest.uris, config.prefetch_workers)
    if dist is not None and main:
        dist.barrier()
    row = {u: i for i, u in enumerate(manifest.uris)}
    return {row[u]: r for u, r in failures.items()}


def _extract(config: TrainConfig, model, device, eval_set, wanted, train_set, train_idx, should_stop, progress,
             mirror_set=None):
    """The frozen backbone's features of ``wanted`` (and the augmented views of ``train_idx``, and
    the mirrored views of ``wanted`` with ``mirror_set``),
    through the machine's :class:`~mlcore.features.FeatureStore`: runs that share the backbone,
    input size and images (the K folds of a suspects run) compute them once."""
    amp, channels_last = amp_default(config.amp, device), channels_last_default(config.channels_last, device)
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    store = FeatureStore.for_model(model, device=device, amp=amp, channels_last=channels_last)
    try:
        return extract(model, eval_set, wanted, device=device, batch_size=config.eval_batch_size or config.batch_size * 2,
                       workers=config.workers if config.workers is not None else default_workers(device), amp=amp,
                       channels_last=channels_last, train_set=train_set, train_idx=train_idx,
                       views=config.feature_views, seed=config.seed, should_stop=should_stop, progress=progress,
                       store=store, mirror_set=mirror_set)
    except Stopped as e:
        raise Cancelled(str(e)) from None


def _state_bytes(model) -> bytes:
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, buf)
    return buf.getvalue()


def _summary(metrics: dict) -> dict:
    def short(m):
        return {"accuracy": m["accuracy"], "macro_f1": m["macro"]["f1"], "micro_f1": m["micro"]["f1"],
                "support": m["support"]}
    if "tasks" in metrics:
        return {"tasks": {t: {s: short(m) for s, m in d.items()} for t, d in metrics["tasks"].items()}}
    return {s: short(m) for s, m in metrics.items()}
