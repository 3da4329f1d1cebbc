"""Cached backbone features: a frozen backbone runs once per image, the heads train on the cache.

With ``freeze_backbone`` the backbone is a fixed function (weights frozen, batch norm in
eval mode), so running it every epoch over the same images recomputes the same numbers.
:func:`extract` runs it once per image (the un-augmented evaluation view, and
``feature_views`` augmented views of each training image when asked), keeps the pooled
features on the device, and training, validation and the final predictions then need only
the linear heads: a K-fold suspects run on a pretrained backbone takes one backbone pass
per fold instead of one per epoch.

:func:`head_infer` returns what :func:`mlcore.evaluate.infer` returns (index, L2-normalised
features, probabilities), so predictions.npz, embeddings.npz and metrics.json are made by
the same code either way.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from .data import _sample_seed, collate, to_input
from .evaluate import autocast


@dataclass
class FeatureCache:
    """``eval[i]``: features of row i's evaluation view (valid where ``ok[i]``);
    ``views[v][i]``: of its v-th augmented training view (rows of ``train_rows`` only)."""

    eval: torch.Tensor                      # float32 [N, D] on the training device
    ok: np.ndarray                          # bool [N]: rows whose image decoded
    views: list[torch.Tensor] = field(default_factory=list)
    skipped: dict[int, str] = field(default_factory=dict)
    seconds: float = 0.0

    def train_features(self, epoch: int) -> torch.Tensor:
        """The features training reads in ``epoch``: augmented view ``epoch % views``, or the eval view."""
        return self.views[epoch % len(self.views)] if self.views else self.eval


class Stopped(Exception):
    """``should_stop()`` returned true during extraction (nothing to checkpoint yet)."""


@torch.no_grad()
def _pass(model, dataset, keys: list, out: torch.Tensor, ok: np.ndarray, skipped: dict, *, device, batch_size,
          workers, amp, channels_last, should_stop, progress, done: list, total: int, t0: float) -> None:
    batches = [keys[b:b + batch_size] for b in range(0, len(keys), batch_size)]
    loader = DataLoader(dataset, batch_sampler=batches, num_workers=workers, collate_fn=collate,
                        pin_memory=device.type == "cuda")
    for batch in loader:
        if should_stop is not None and should_stop():
            raise Stopped("stopped while extracting features")
        skipped.update({int(i): r for i, r in batch["skipped"]})
        if "image" in batch:
            x = to_input(batch, device, channels_last)
            with autocast(device, amp):
                f = model.backbone(x)
            rows = batch["index"].to(device, non_blocking=True)
            out.index_copy_(0, rows, f.float())
            ok[batch["index"].numpy()] = True
            done[0] += len(batch["index"])
        done[1] += 1
        if progress:
            dt = time.perf_counter() - t0
            progress({"phase": "features", "epoch": 0, "epochs": 0, "step": done[1], "steps": total, "loss": None,
                      "images_per_s": done[0] / dt if dt else 0.0,
                      "eta_s": dt / done[1] * (total - done[1])})


def extract(model, eval_set, indices: Sequence[int], *, device: torch.device, batch_size: int, workers: int = 0,
            amp: bool = False, channels_last: bool = False, train_set=None, train_idx: Sequence[int] = (),
            views: int = 0, seed: int = 0, should_stop: Callable[[], bool] | None = None,
            progress: Callable[[dict], None] | None = None) -> FeatureCache:
    """Run ``model.backbone`` (eval mode) once over ``eval_set[indices]``, and ``views`` times over
    ``train_set[train_idx]`` with the augmentation seeds of views 0..views-1."""
    was_training = model.training
    model.eval()
    n = len(eval_set)
    dim = model.feature_dim
    t0 = time.perf_counter()
    ok = np.zeros(n, dtype=bool)
    skipped: dict[int, str] = {}
    eval_keys = [int(i) for i in indices]
    view_keys = [[(int(i), _sample_seed(seed, v, int(i))) for i in train_idx] for v in range(views)]
    total = sum(-(-len(k) // batch_size) for k in [eval_keys, *view_keys])
    done = [0, 0]
    common = dict(device=device, batch_size=batch_size, workers=workers, amp=amp, channels_last=channels_last,
                  should_stop=should_stop, progress=progress, done=done, total=total, t0=t0)
    try:
        feats = torch.zeros(n, dim, device=device)
        _pass(model, eval_set, eval_keys, feats, ok, skipped, **common)
        view_feats = []
        for keys in view_keys:
            v = torch.zeros(n, dim, device=device)
            _pass(model, train_set, keys, v, np.zeros(n, dtype=bool), skipped, **common)
            view_feats.append(v)
    finally:
        model.train(was_training)
    return FeatureCache(feats, ok, view_feats, skipped, time.perf_counter() - t0)


@torch.no_grad()
def head_infer(model, cache: FeatureCache, indices: Sequence[int], batch_size: int = 65536) -> dict:
    """:func:`mlcore.evaluate.infer`'s result for ``indices``, computed from the cached features."""
    t0 = time.perf_counter()
    idx = np.asarray([i for i in indices if cache.ok[i]], dtype=np.int64)
    feats, probs = [], {}
    for b in range(0, len(idx), batch_size):
        f = cache.eval[torch.as_tensor(idx[b:b + batch_size], device=cache.eval.device)]
        feats.append(F.normalize(f, dim=1).cpu())
        for t, h in model.heads.items():
            probs.setdefault(t, []).append(h(f).float().softmax(1).cpu())
    return {
        "index": idx,
        "features": torch.cat(feats).numpy() if feats else np.zeros((0, model.feature_dim), np.float32),
        "probs": {t: torch.cat(p).numpy() for t, p in probs.items()}
        or {t: np.zeros((0, h.out_features), np.float32) for t, h in model.heads.items()},
        "skipped": [],
        "images_per_s": len(idx) / (time.perf_counter() - t0 + 1e-9),
    }


def batch_rows(keys: list) -> torch.Tensor:
    """The row indices of a sampler batch (keys are indices or ``(index, seed)``)."""
    return torch.as_tensor([k[0] if isinstance(k, tuple) else k for k in keys], dtype=torch.long)
