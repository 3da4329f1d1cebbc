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

:class:`FeatureStore` keeps what :func:`extract` computed on the machine's disk, keyed by the
backbone's weights, the input transform and each image's content, so that runs which share
all three read the features instead of computing them: the K fold runs of a suspects run
train K heads on one backbone pass (fold 1 computes, folds 2..K read), whichever processes
they run in.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from . import storage
from .data import cache_dir, cached_path, collate, sample_seed, to_input
from .device import autocast


@dataclass
class FeatureCache:
    """``eval[i]``: features of row i's evaluation view (valid where ``ok[i]``);
    ``views[v][i]``: of its v-th augmented training view (rows of ``train_rows`` only);
    ``mirror[i]``: of the evaluation view flipped left-right, when asked (test-time flips)."""

    eval: torch.Tensor                      # float32 [N, D] on the training device
    ok: np.ndarray                          # bool [N]: rows whose image decoded
    views: list[torch.Tensor] = field(default_factory=list)
    skipped: dict[int, str] = field(default_factory=dict)
    seconds: float = 0.0
    from_store: int = 0                     # rows (over all views) read from a FeatureStore, not computed
    mirror: torch.Tensor | None = None      # float32 [N, D]: the mirrored evaluation view, or None

    def train_features(self, epoch: int) -> torch.Tensor:
        """The features training reads in ``epoch``: augmented view ``epoch % views``, or the eval view."""
        return self.views[epoch % len(self.views)] if self.views else self.eval


class Stopped(Exception):
    """``should_stop()`` returned true during extraction (nothing to checkpoint yet)."""


class FeatureStore:
    """Backbone features on disk, shared by every run of one backbone on this machine.

    ``<root>/<transform>/<shard>.npz``: ``key`` (each row's image content sha256, with the
    augmentation seed for a training view) and ``feat`` (float32, exactly what the backbone
    gave). ``root`` is named by the backbone's weights (every tensor of its state_dict), the
    device kind, autocast and memory format, so a hit is the value a fresh pass would give. A
    run writes one shard of what it computed; a lock per root makes a concurrent run wait for
    it and read instead. ``MLCORE_FEATURE_STORE=off`` switches it off.
    """

    def __init__(self, root: Path):
        self.root = Path(root)

    @classmethod
    def for_model(cls, model, *, device: torch.device, amp: bool, channels_last: bool) -> FeatureStore | None:
        if os.environ.get("MLCORE_FEATURE_STORE", "").lower() in ("0", "off", "false", "no"):
            return None
        h = hashlib.sha256(f"{type(model.backbone).__name__}|{device.type}|amp={amp}|cl={channels_last}|"
                           f"torch={torch.__version__}".encode())
        for name, t in model.backbone.state_dict().items():
            h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
            h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        return cls(cache_dir() / "features" / h.hexdigest()[:32])

    def _folder(self, transform) -> Path:
        return self.root / hashlib.sha256(repr(transform).encode()).hexdigest()[:16]

    @contextlib.contextmanager
    def locked(self, should_stop: Callable[[], bool] | None = None):
        """Hold this backbone's lock (another run computing the same features finishes first)."""
        import fcntl

        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a+b") as f:
            while True:
                try:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if should_stop is not None and should_stop():
                        raise Stopped("stopped while waiting for another run's features") from None
                    time.sleep(0.2)
            try:
                yield self
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def get(self, transform, keys: list[str | None]) -> tuple[np.ndarray, np.ndarray]:
        """(positions in ``keys`` found, their features [n, D])."""
        where: dict[str, tuple[Path, int]] = {}
        for shard in sorted(self._folder(transform).glob("*.npz")):
            with np.load(shard, allow_pickle=False) as z:
                where.update({k: (shard, i) for i, k in enumerate(z["key"].tolist())})
        found = [(j, *where[k]) for j, k in enumerate(keys) if k is not None and k in where]
        if not found:
            return np.zeros(0, dtype=np.int64), np.zeros((0, 0), dtype=np.float32)
        feats = [None] * len(found)
        by_shard: dict[Path, list[int]] = {}
        for n, (_, shard, _) in enumerate(found):
            by_shard.setdefault(shard, []).append(n)
        for shard, ns in by_shard.items():
            with np.load(shard, allow_pickle=False) as z:
                f = z["feat"]
                for n in ns:
                    feats[n] = f[found[n][2]]
        return np.asarray([j for j, _, _ in found], dtype=np.int64), np.stack(feats).astype(np.float32)

    def put(self, transform, keys: list[str], feats: np.ndarray) -> None:
        if not keys:
            return
        name = hashlib.sha256("\n".join(keys).encode()).hexdigest()[:32]
        buf = io.BytesIO()
        np.savez(buf, key=np.asarray(keys, dtype=str), feat=np.asarray(feats, dtype=np.float32))
        storage.write_bytes(storage.to_uri(self._folder(transform) / f"{name}.npz"), buf.getvalue())


def content_key(uri: str) -> str | None:
    """The sha256 of an image's bytes (an S3 object's from the S3 cache, no read); None if unreadable."""
    try:
        if storage.is_s3(uri):
            blob = cached_path(uri)  # blobs are named by their content's sha256
            return blob.name if blob is not None else None
        return hashlib.sha256(storage.local_path(uri).read_bytes()).hexdigest()
    except OSError:
        return None


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


def _stored(store: FeatureStore, dataset, keys: list, out: torch.Tensor, ok: np.ndarray) -> tuple[list, list]:
    """Fill ``out``/``ok`` from the store; returns (the keys still to compute, their content keys)."""
    digests: dict[int, str | None] = {}
    content = []
    for k in keys:
        i, seed = k if isinstance(k, tuple) else (k, None)
        if i not in digests:
            digests[i] = content_key(dataset.uris[i])
        content.append(None if digests[i] is None else digests[i] if seed is None else f"{digests[i]}:{seed}")
    pos, feats = store.get(dataset.transform, content)
    if len(pos):
        rows = [keys[j][0] if isinstance(keys[j], tuple) else keys[j] for j in pos]
        out[torch.as_tensor(rows, device=out.device)] = torch.from_numpy(feats).to(out.device)
        ok[rows] = True
    hit = set(pos.tolist())
    todo = [j for j in range(len(keys)) if j not in hit]
    return [keys[j] for j in todo], [content[j] for j in todo]


def extract(model, eval_set, indices: Sequence[int], *, device: torch.device, batch_size: int, workers: int = 0,
            amp: bool = False, channels_last: bool = False, train_set=None, train_idx: Sequence[int] = (),
            views: int = 0, seed: int = 0, should_stop: Callable[[], bool] | None = None,
            progress: Callable[[dict], None] | None = None, store: FeatureStore | None = None,
            mirror_set=None) -> FeatureCache:
    """Run ``model.backbone`` (eval mode) once over ``eval_set[indices]``, and ``views`` times over
    ``train_set[train_idx]`` with the augmentation seeds of views 0..views-1, and once over
    ``mirror_set[indices]`` if given (the evaluation view mirrored); with ``store``, only over
    the images whose features it does not hold yet (and then add them to it)."""
    if store is not None and not (hasattr(eval_set, "uris") and (views == 0 or hasattr(train_set, "uris"))):
        store = None  # in-memory images (benchmarks) have no content to key by
    with store.locked(should_stop) if store is not None else contextlib.nullcontext():
        return _extract(model, eval_set, indices, device=device, batch_size=batch_size, workers=workers, amp=amp,
                        channels_last=channels_last, train_set=train_set, train_idx=train_idx, views=views,
                        seed=seed, should_stop=should_stop, progress=progress, store=store, mirror_set=mirror_set)


def _extract(model, eval_set, indices, *, device, batch_size, workers, amp, channels_last, train_set, train_idx,
             views, seed, should_stop, progress, store, mirror_set=None) -> FeatureCache:
    was_training = model.training
    model.eval()
    n = len(eval_set)
    t0 = time.perf_counter()
    ok = np.zeros(n, dtype=bool)
    skipped: dict[int, str] = {}
    passes = [(eval_set, [int(i) for i in indices], ok)]
    passes += [(train_set, [(int(i), sample_seed(seed, v, int(i))) for i in train_idx], np.zeros(n, dtype=bool))
               for v in range(views)]
    if mirror_set is not None:
        passes.append((mirror_set, [int(i) for i in indices], np.zeros(n, dtype=bool)))
    outs = [torch.zeros(n, model.feature_dim, device=device) for _ in passes]
    todo = [_stored(store, ds, keys, out, o) if store is not None else (keys, [])
            for (ds, keys, o), out in zip(passes, outs)]
    from_store = sum(len(keys) - len(left) for (_, keys, _), (left, _) in zip(passes, todo))
    done = [0, 0]
    common = dict(device=device, batch_size=batch_size, workers=workers, amp=amp, channels_last=channels_last,
                  should_stop=should_stop, progress=progress, done=done,
                  total=sum(-(-len(left) // batch_size) for left, _ in todo), t0=t0)
    try:
        for (ds, _, o), out, (left, content) in zip(passes, outs, todo):
            _pass(model, ds, left, out, o, skipped, **common)
            if store is not None:
                fresh = [(k[0] if isinstance(k, tuple) else k, c) for k, c in zip(left, content)]
                fresh = [(i, c) for i, c in fresh if o[i] and c is not None]
                store.put(ds.transform, [c for _, c in fresh],
                          out[torch.as_tensor([i for i, _ in fresh], dtype=torch.long, device=device)].cpu().numpy())
    finally:
        model.train(was_training)
    mirror = outs.pop() if mirror_set is not None else None
    return FeatureCache(outs[0], ok, outs[1:], skipped, time.perf_counter() - t0, from_store, mirror)


@torch.no_grad()
def head_infer(model, cache: FeatureCache, indices: Sequence[int], batch_size: int = 65536,
               flip: bool = False) -> dict:
    """:func:`mlcore.evaluate.infer`'s result for ``indices``, computed from the cached features
    (``flip``: probabilities averaged with the mirrored view's, which the cache must hold)."""
    if flip and cache.mirror is None:
        raise ValueError("flip needs the mirrored features (extract with mirror_set)")
    t0 = time.perf_counter()
    idx = np.asarray([i for i in indices if cache.ok[i]], dtype=np.int64)
    feats, probs = [], {}
    for b in range(0, len(idx), batch_size):
        f = cache.eval[torch.as_tensor(idx[b:b + batch_size], device=cache.eval.device)]
        feats.append(F.normalize(f, dim=1).cpu())
        m = cache.mirror[torch.as_tensor(idx[b:b + batch_size], device=cache.eval.device)] if flip else None
        for t, h in model.heads.items():
            p = h(f).float().softmax(1)
            if m is not None:
                p = (p + h(m).float().softmax(1)) / 2
            probs.setdefault(t, []).append(p.cpu())
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
