"""What a run optimises and how: class weights, the loss, the optimizer, the schedule, and the
validation scores that pick the best epoch. Plain functions of a config and tensors, used by
the loop of :mod:`mlcore.loop`.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .evaluate import classification_metrics


def class_weights(targets: np.ndarray, num_classes: int) -> torch.Tensor:
    """Inverse-frequency weights, mean 1 over the classes present; absent classes weigh 0."""
    counts = np.bincount(targets[targets >= 0], minlength=num_classes).astype(np.float64)
    w = np.where(counts > 0, counts.sum() / np.maximum(counts, 1), 0.0)
    present = w > 0
    if present.any():
        w[present] /= w[present].mean()
    return torch.tensor(w, dtype=torch.float32)


def lr_lambda(warmup_steps: int, total_steps: int):
    def f(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return 0.5 * (1 + math.cos(math.pi * (step - warmup_steps) / max(1, total_steps - warmup_steps)))
    return f


def make_optimizer(config, params):
    if config.optimizer == "sgd":
        lr = config.lr if config.lr is not None else 0.1 * config.batch_size / 256
        wd = config.weight_decay if config.weight_decay is not None else 1e-4
        return torch.optim.SGD(params, lr=lr, momentum=config.momentum, nesterov=config.momentum > 0,
                               weight_decay=wd)
    if config.optimizer == "adamw":
        lr = config.lr if config.lr is not None else 1e-3
        wd = config.weight_decay if config.weight_decay is not None else 0.05
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    raise ValueError(f"unknown optimizer {config.optimizer!r} (sgd or adamw)")


def task_weights(config, targets: np.ndarray, train_idx: np.ndarray, tasks: dict,
                 device: torch.device) -> list[torch.Tensor]:
    """Per task, the class weights of the loss (ones unless ``class_weights`` is ``inverse``)."""
    out = []
    for j, labels in enumerate(tasks.values()):
        w = class_weights(targets[train_idx, j], len(labels)) if config.class_weights == "inverse" \
            else torch.ones(len(labels))
        out.append(w.to(device))
    return out


def batch_loss(heads: list[torch.Tensor], y: torch.Tensor, weights: list[torch.Tensor], smoothing: float,
               dist=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(this process's loss, images in the global batch): each task's weighted mean cross-entropy
    over the labelled images of the global batch, summed over tasks.

    The denominators (the sum of the labelled images' class weights, per task) are computed on
    the device, so there is no host sync and a batch without labels for a task adds 0 instead
    of NaN; in a data-parallel run they are all-reduced, so each process's loss is its share of
    the global batch's mean and DDP's averaged gradient is the one-process gradient.
    """
    sums, dens = [], []
    for j, (lg, w) in enumerate(zip(heads, weights)):
        yj = y[:, j]
        sums.append(F.cross_entropy(lg.float(), yj, weight=w, ignore_index=-1, label_smoothing=smoothing,
                                    reduction="sum"))
        dens.append((w[yj.clamp(min=0)] * (yj >= 0)).sum())
    den = torch.stack([*dens, torch.full((), float(len(y)), device=y.device)])  # a fill, not a host copy
    if dist is not None:
        dist.all_reduce(den)
    loss = sum(s / d.clamp(min=1e-12) for s, d in zip(sums, den[:-1]))
    return loss, den[-1]


def validation_scores(result: dict, targets: np.ndarray, tasks: dict[str, list[str]]) -> dict:
    """Loss, accuracy and macro-F1 of an :func:`infer` result, averaged over tasks."""
    per_task = {}
    for j, (t, labels) in enumerate(tasks.items()):
        y = targets[result["index"], j]
        keep = y >= 0
        p = result["probs"][t][keep]
        if not keep.any():
            continue
        m = classification_metrics(y[keep], p.argmax(1), labels)
        loss = float(-np.log(np.clip(p[np.arange(len(p)), y[keep]], 1e-12, None)).mean())
        per_task[t] = {"loss": loss, "accuracy": m["accuracy"], "macro_f1": m["macro"]["f1"]}
    if not per_task:
        return {}
    mean = {k: float(np.mean([v[k] for v in per_task.values()])) for k in ("loss", "accuracy", "macro_f1")}
    return {**mean, "tasks": per_task} if len(per_task) > 1 else mean
