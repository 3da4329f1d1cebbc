"""Metrics and per-image predictions.

:func:`infer` runs a model once over a dataset and returns, per good image, the
L2-normalised features and each task's probabilities: predictions, metrics and
embeddings all come from that single pass.
"""
from __future__ import annotations

import time
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from . import storage
from .data import EpochBatches, ImageDataset, collate, eval_crop, prefetch, to_input
from .device import amp_default, autocast, channels_last_default, default_workers, resolve_device
from .manifest import read_manifest
from .storage import load_npz, npz_bytes  # noqa: F401 - importable from here as before


# --------------------------------------------------------------------------- metrics

def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """``cm[i, j]``: images of given class i predicted as j."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)), 1)
    return cm


def _prf(tp, fp, fn):
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return float(p), float(r), float(f)


def classification_metrics(y_true: Sequence[int], y_pred: Sequence[int], labels: Sequence[str]) -> dict:
    """Per-class precision/recall/F1/support, macro and micro averages, accuracy, confusion.

    Macro averages run over the classes that occur in ``y_true`` or ``y_pred`` (as
    scikit-learn does); a class with neither contributes nothing.
    """
    y_true, y_pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    cm = confusion_matrix(y_true, y_pred, len(labels))
    tp = np.diag(cm)
    per_class, present = {}, []
    for i, name in enumerate(labels):
        p, r, f = _prf(tp[i], cm[:, i].sum() - tp[i], cm[i, :].sum() - tp[i])
        per_class[name] = {"precision": p, "recall": r, "f1": f, "support": int(cm[i, :].sum())}
        if cm[i, :].sum() or cm[:, i].sum():
            present.append((p, r, f))
    macro = np.mean(present, axis=0) if present else np.zeros(3)
    n = int(cm.sum())
    micro = _prf(int(tp.sum()), n - int(tp.sum()), n - int(tp.sum()))
    return {
        "support": n,
        "accuracy": float(tp.sum() / n) if n else 0.0,
        "macro": {"precision": float(macro[0]), "recall": float(macro[1]), "f1": float(macro[2])},
        "micro": {"precision": micro[0], "recall": micro[1], "f1": micro[2]},
        "per_class": per_class,
        "labels": list(labels),
        "confusion": cm.tolist(),
    }


# --------------------------------------------------------------------------- inference

@torch.no_grad()
def infer(model, dataset, indices: Sequence[int], *, device: torch.device, batch_size: int = 128,
          workers: int = 0, amp: bool = False, channels_last: bool = False,
          progress: Callable[[dict], None] | None = None, phase: str = "eval",
          epoch: int = 0, epochs: int = 0, loader: DataLoader | None = None, flip: bool = False) -> dict:
    """One pass in eval mode. Returns ``index`` (good rows), ``features`` (L2-normalised,
    float32), ``probs`` {task: float32 [n, C]}, ``loss_terms`` {task: per-image CE or None}
    and ``skipped`` [(index, reason)]. ``flip``: each probability is the mean of the image's and
    its left-right mirror's (test-time flip; the features stay the image's own).

    ``loader``: a DataLoader over ``dataset[indices]`` in order that the caller keeps (the
    per-epoch validation reuses its persistent workers instead of starting new ones)."""
    was_training = model.training
    model.eval()
    if loader is None:
        loader = DataLoader(dataset, batch_sampler=EpochBatches(indices, batch_size, shuffle=False),
                            num_workers=workers, collate_fn=collate, pin_memory=device.type == "cuda")
    idx, feats, probs, skipped = [], [], {}, []
    t0, seen, steps = time.perf_counter(), 0, len(loader)
    for step, batch in enumerate(loader):
        skipped += batch["skipped"]
        if "image" not in batch:
            continue
        x = to_input(batch, device, channels_last)
        with autocast(device, amp):
            f, logits = model(x)
            mirrored = model(x.flip(3))[1] if flip else None
        feats.append(F.normalize(f.float(), dim=1).cpu())
        for t, lg in logits.items():
            p = lg.float().softmax(1)
            if mirrored is not None:
                p = (p + mirrored[t].float().softmax(1)) / 2
            probs.setdefault(t, []).append(p.cpu())
        idx.append(batch["index"])
        seen += len(x)
        if progress:
            dt = time.perf_counter() - t0
            progress({"phase": phase, "epoch": epoch, "epochs": epochs, "step": step + 1, "steps": steps,
                      "loss": None, "images_per_s": seen / dt if dt else 0.0,
                      "eta_s": dt / (step + 1) * (steps - step - 1)})
    model.train(was_training)
    dim = getattr(model, "feature_dim", 0)
    return {
        "index": torch.cat(idx).numpy() if idx else np.zeros(0, dtype=np.int64),
        "features": torch.cat(feats).numpy() if feats else np.zeros((0, dim), dtype=np.float32),
        "probs": {t: torch.cat(p).numpy() for t, p in probs.items()}
        or {t: np.zeros((0, h.out_features), np.float32) for t, h in model.heads.items()},
        "skipped": skipped,
        "images_per_s": seen / (time.perf_counter() - t0 + 1e-9),
    }


def split_metrics(result: dict, targets: np.ndarray, splits: Sequence[str],
                  tasks: dict[str, list[str]]) -> dict:
    """``{split: {task: classification_metrics}}`` over the good, labelled rows of ``result``."""
    idx = result["index"]
    row_split = np.asarray(splits)[idx] if len(idx) else np.zeros(0, dtype=str)
    out: dict = {}
    for split in sorted(set(row_split.tolist())):
        for j, (t, labels) in enumerate(tasks.items()):
            y = targets[idx, j]
            keep = (row_split == split) & (y >= 0)
            pred = result["probs"][t].argmax(1)
            out.setdefault(split, {})[t] = classification_metrics(y[keep], pred[keep], labels)
    return out


def prediction_arrays(result: dict, uris: Sequence[str], splits: Sequence[str], targets: np.ndarray,
                      tasks: dict[str, list[str]]) -> dict[str, np.ndarray]:
    """The arrays of ``predictions.npz``: plain names for one task, ``<task>.<name>`` for several."""
    idx = result["index"]
    arrays = {"uri": np.asarray([uris[i] for i in idx], dtype=str),
              "split": np.asarray([splits[i] for i in idx], dtype=str)}
    single = len(tasks) == 1
    for j, (t, labels) in enumerate(tasks.items()):
        pre = "" if single else f"{t}."
        prob = result["probs"][t].astype(np.float32)
        pred = prob.argmax(1) if len(prob) else np.zeros(0, dtype=np.int64)
        label = targets[idx, j] if len(idx) else np.zeros(0, dtype=np.int64)
        arrays[pre + "label"] = label.astype(np.int64)
        arrays[pre + "pred"] = pred.astype(np.int64)
        arrays[pre + "confidence"] = prob.max(1) if len(prob) else np.zeros(0, np.float32)
        arrays[pre + "correct"] = (pred == label) & (label >= 0)
        arrays[pre + "prob"] = prob
        arrays[pre + "labels"] = np.asarray(labels, dtype=str)
    if not single:
        arrays["tasks"] = np.asarray(list(tasks), dtype=str)
    return arrays


def metrics_doc(per_split: dict, tasks: dict) -> dict:
    """metrics.json: ``{split: metrics}`` for a single task; ``{"tasks": {task: {split: metrics}}}`` for several."""
    if len(tasks) == 1:
        t = next(iter(tasks))
        return {split: m[t] for split, m in per_split.items()}
    return {"tasks": {t: {split: m[t] for split, m in per_split.items() if t in m} for t in tasks}}


def write_results(out: str, result: dict, manifest) -> dict:
    """Write ``metrics.json``, ``predictions.npz`` and ``embeddings.npz`` of an :func:`infer`
    result over ``manifest``'s rows under ``out``; returns the metrics document."""
    tasks = manifest.tasks
    metrics = metrics_doc(split_metrics(result, manifest.targets, manifest.splits, tasks), tasks)
    storage.write_json(storage.join(out, "metrics.json"), metrics)
    storage.write_bytes(storage.join(out, "predictions.npz"), npz_bytes(
        prediction_arrays(result, manifest.uris, manifest.splits, manifest.targets, tasks)))
    storage.write_bytes(storage.join(out, "embeddings.npz"), npz_bytes(
        {"uri": np.asarray([manifest.uris[i] for i in result["index"]], dtype=str),
         "emb": result["features"].astype(np.float16)}))
    return metrics


def embed_uris(model, uris: Sequence[str], image_size: int, *, device: torch.device, batch_size: int = 64,
               workers: int | None = None, progress: Callable[[dict], None] | None = None) -> dict:
    """``{"uri", "emb", "probs", "skipped"}`` for a list of image URIs (one :func:`infer` pass)."""
    uris = [storage.to_uri(u) for u in uris]
    failures = prefetch(uris)
    keep = [i for i, u in enumerate(uris) if u not in failures]
    ds = ImageDataset(uris, np.full((len(uris), 1), -1), eval_crop(image_size))
    res = infer(model, ds, keep, device=device, batch_size=batch_size,
                workers=default_workers(device) if workers is None else workers,
                amp=amp_default(None, device), channels_last=channels_last_default(None, device),
                progress=progress, phase="embed")
    skipped = {uris[i]: r for i, r in res["skipped"]} | failures
    return {"uri": np.asarray([uris[i] for i in res["index"]], dtype=str),
            "emb": res["features"], "probs": res["probs"], "skipped": skipped}


# --------------------------------------------------------------------------- runs: test and predict

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")


def list_images(path_or_uri: str) -> list[str]:
    """One image URI, or every image file under a folder / S3 prefix (sorted)."""
    uri = storage.to_uri(path_or_uri)
    if not storage.is_s3(uri) and storage.local_path(uri).is_file():
        return [uri]
    if storage.is_s3(uri) and uri.lower().endswith(IMAGE_SUFFIXES):
        return [uri]
    return [f.uri for f in storage.list_files(uri) if f.uri.lower().endswith(IMAGE_SUFFIXES)]


def test_run(run_uri: str, manifest_uri: str | None = None, output_uri: str | None = None, *,
             device: str = "auto", batch_size: int = 64, progress=None) -> dict:
    """Score a trained run on a manifest (default: the one it trained on); writes ``metrics.json``,
    ``predictions.npz`` and ``embeddings.npz`` under ``output_uri`` (default: the run)."""
    from .models import load_run

    dev = resolve_device(device)
    model, run = load_run(run_uri, dev)
    manifest = read_manifest(manifest_uri or run["manifest"]["uri"], run["tasks"])
    failures = prefetch(manifest.uris)
    keep = [i for i, u in enumerate(manifest.uris) if u not in failures]
    ds = ImageDataset(manifest.uris, manifest.targets, eval_crop(run["config"]["image_size"]))
    res = infer(model, ds, keep, device=dev, batch_size=batch_size, workers=default_workers(dev),
                amp=amp_default(None, dev), channels_last=channels_last_default(None, dev), progress=progress)
    metrics = write_results(output_uri or run_uri, res, manifest)
    skipped = {manifest.uris[i]: r for i, r in res["skipped"]} | failures
    return {"metrics": metrics, "skipped": skipped}


def predict(run_uri: str, path_or_uri: str, topk: int = 5, *, device: str = "auto",
            batch_size: int = 64) -> list[dict]:
    """Top-k labels with probabilities for one image or every image in a folder/prefix.

    Each item: ``{"uri", "top": [[label, prob], ...]}`` (single task) or
    ``{"uri", "tasks": {task: [[label, prob], ...]}}``; unreadable images get ``"error"``.
    """
    from .models import load_run

    dev = resolve_device(device)
    model, run = load_run(run_uri, dev)
    uris = list_images(path_or_uri)
    res = embed_uris(model, uris, run["config"]["image_size"], device=dev, batch_size=batch_size)
    by_uri = {u: i for i, u in enumerate(res["uri"].tolist())}
    items = []
    for u in uris:
        if u not in by_uri:
            items.append({"uri": u, "error": res["skipped"].get(u, "unreadable")})
            continue
        tops = {}
        for t, labels in run["tasks"].items():
            p = res["probs"][t][by_uri[u]]
            order = np.argsort(-p)[:topk]
            tops[t] = [[labels[k], round(float(p[k]), 6)] for k in order]
        items.append({"uri": u, "top": next(iter(tops.values()))} if len(tops) == 1 else {"uri": u, "tasks": tops})
    return items
