"""Embeddings: the L2-normalised penultimate-layer features of a trained model.

``embeddings.npz`` holds ``uri`` (the image order) and ``emb`` (float16, one unit-length
row per readable image); unreadable images are left out and listed by the caller.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from . import storage
from .device import resolve_device
from .evaluate import embed_uris
from .models import load_run


def embed_run(run_uri: str, uris: Sequence[str], output_uri: str | None = None, *, device: str = "auto",
              batch_size: int = 64, progress=None) -> dict:
    """Embed ``uris`` with a run's model; writes ``embeddings.npz`` to ``output_uri`` when given."""
    dev = resolve_device(device)
    model, run = load_run(run_uri, dev)
    out = embed_uris(model, uris, run["config"]["image_size"], device=dev, batch_size=batch_size,
                     progress=progress)
    if output_uri:
        storage.write_bytes(storage.join(output_uri, "embeddings.npz"),
                            storage.npz_bytes({"uri": out["uri"], "emb": out["emb"].astype(np.float16)}))
    return out
