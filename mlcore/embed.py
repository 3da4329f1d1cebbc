"""Embeddings: the L2-normalised penultimate-layer features of a trained model.

``embeddings.npz`` holds ``uri`` (the image order) and ``emb`` (float16, one unit-length
row per readable image); unreadable images are left out and listed by the caller.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch

from . import storage
from .data import ImageDataset, eval_crop, prefetch
from .evaluate import infer, npz_bytes
from .models import load_run
from .train import default_workers, resolve_device


def embed_uris(model, uris: Sequence[str], image_size: int, *, device: torch.device, batch_size: int = 64,
               workers: int | None = None, progress: Callable[[dict], None] | None = None) -> dict:
    """``{"uri", "emb", "skipped"}`` for a list of image URIs."""
    uris = [storage.to_uri(u) for u in uris]
    failures = prefetch(uris)
    keep = [i for i, u in enumerate(uris) if u not in failures]
    ds = ImageDataset(uris, np.full((len(uris), 1), -1), eval_crop(image_size))
    res = infer(model, ds, keep, device=device, batch_size=batch_size,
                workers=default_workers(device) if workers is None else workers,
                amp=device.type == "cuda", channels_last=device.type == "cuda", progress=progress, phase="embed")
    skipped = {uris[i]: r for i, r in res["skipped"]} | failures
    return {"uri": np.asarray([uris[i] for i in res["index"]], dtype=str),
            "emb": res["features"], "probs": res["probs"], "skipped": skipped}


def embed_run(run_uri: str, uris: Sequence[str], output_uri: str | None = None, *, device: str = "auto",
              batch_size: int = 64, progress=None) -> dict:
    """Embed ``uris`` with a run's model; writes ``embeddings.npz`` to ``output_uri`` when given."""
    dev = resolve_device(device)
    model, run = load_run(run_uri, dev)
    out = embed_uris(model, uris, run["config"]["image_size"], device=dev, batch_size=batch_size,
                     progress=progress)
    if output_uri:
        storage.write_bytes(storage.join(output_uri, "embeddings.npz"),
                            npz_bytes({"uri": out["uri"], "emb": out["emb"].astype(np.float16)}))
    return out
