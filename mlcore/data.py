"""Image reading with corrupt-image tolerance, transforms, datasets and the S3 cache.

Manifests (the CSV a run trains on, and the split vocabulary) live in :mod:`mlcore.manifest`.

A dataset never raises on a bad image: it returns a sentinel sample
(``ok=False`` with a reason) that :func:`collate` drops and reports, so one
truncated JPEG cannot end a training run.

The training input path keeps the CPU work per image small, so that a few cores feed a
GPU: a :class:`Crop` dataset decodes a JPEG at the size the model needs (libjpeg's DCT
scaling through Pillow's draft mode: a 1600x1200 photo for a 224 px model is decoded at
400x300, a sixteenth of the pixels), crops and resizes it in the same Pillow call and
hands the loader a uint8 HWC array; :func:`to_input` then moves the batch to the device
and flips, converts and normalises it there, batched (channels_last for free: an NHWC
batch viewed as NCHW already has those strides).
"""
from __future__ import annotations

import hashlib
import io
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from . import storage
from .images import MAX_PIXELS, decode
from .manifest import SPLITS, Manifest, load_labels_file, read_manifest, write_manifest  # noqa: F401 - their old home

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# --------------------------------------------------------------------------- S3 cache

def cache_dir() -> Path:
    return Path(os.environ.get("MLCORE_CACHE_DIR") or Path.home() / ".cache" / "mlcore")


def _ref_path(uri: str) -> Path:
    h = hashlib.sha256(uri.encode()).hexdigest()
    return cache_dir() / "refs" / h[:2] / h


def _blob_path(digest: str) -> Path:
    return cache_dir() / "blobs" / digest[:2] / digest


def cached_path(uri: str) -> Path | None:
    """The local copy of an S3 object, if it is in the cache.

    Objects are stored once by content hash (``blobs/``); ``refs/`` maps a URI to its
    content. Retag's storage keys are immutable, so a URI is never re-checked.
    """
    ref = _ref_path(uri)
    try:
        blob = _blob_path(ref.read_text().strip())
    except FileNotFoundError:
        return None
    return blob if blob.exists() else None


def fetch(uri: str) -> bytes:
    """The bytes of a local file, or of an S3 object via the local cache."""
    if not storage.is_s3(uri):
        return storage.local_path(uri).read_bytes()
    path = cached_path(uri)
    if path is not None:
        return path.read_bytes()
    data = storage.read_bytes(uri)
    digest = storage.sha256(data)
    blob = _blob_path(digest)
    if not blob.exists():
        storage.write_bytes(storage.to_uri(blob), data)
    storage.write_bytes(storage.to_uri(_ref_path(uri)), digest.encode())
    return data


def prefetch(uris: Sequence[str], workers: int = 16,
             progress: Callable[[int, int], None] | None = None) -> dict[str, str]:
    """Fetch S3 objects concurrently into the cache; returns {uri: reason} for failures."""
    todo = [u for u in uris if storage.is_s3(u) and cached_path(u) is None]
    failures: dict[str, str] = {}

    def one(u):
        try:
            fetch(u)
        except Exception as e:  # a missing object is a skipped image, not a failed run
            failures[u] = f"unreadable: {type(e).__name__}: {e}"

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for n, _ in enumerate(pool.map(one, todo), 1):
            if progress:
                progress(n, len(todo))
    return failures


# --------------------------------------------------------------------------- transforms

def train_transform(size: int, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """Product photos: crops that keep most of the item, left-right flips, never upside down."""
    from torchvision import transforms as T

    return T.Compose([
        T.RandomResizedCrop(size, scale=(0.5, 1.0), antialias=True),
        T.RandomHorizontalFlip(),
        T.ToTensor(),
        T.Normalize(mean, std),
    ])


def eval_transform(size: int, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    from torchvision import transforms as T

    return T.Compose([
        T.Resize(size, antialias=True),
        T.CenterCrop(size),
        T.ToTensor(),
        T.Normalize(mean, std),
    ])


def _scaled_open(data: bytes, min_side: int):
    """A plain JPEG decoded at reduced size (shorter side still >= ``min_side``), upright RGB;
    None for anything else (PNG, CMYK, a bomb, a damaged file...), which then goes through
    :func:`mlcore.images.decode`, the one place that says why an image is unusable."""
    from PIL import Image, ImageOps

    if data[:3] != b"\xff\xd8\xff":
        return None
    try:
        img = Image.open(io.BytesIO(data))
        w, h = img.size
        if img.format != "JPEG" or w * h > MAX_PIXELS or img.mode not in ("RGB", "L"):
            return None
        img.draft("RGB", (min_side, min_side))  # libjpeg scales by 1/2, 1/4 or 1/8 while decoding
        img.load()
        img = ImageOps.exif_transpose(img)
        return img if img.mode == "RGB" else img.convert("RGB")
    except Exception:  # noqa: BLE001 - decode() below gives the reason
        return None


def decode_at(data: bytes, min_side: int):
    """Bytes -> upright RGB image, decoded no larger than needed for a ``min_side`` px input.
    Raises :class:`mlcore.images.CorruptImage` exactly as :func:`mlcore.images.decode` does."""
    return _scaled_open(data, min_side) or decode(data)


@dataclass(frozen=True)
class Crop:
    """The model's input, made from a decoded image with one Pillow call (crop + resize).

    Training: the crop of ``train_transform`` (RandomResizedCrop, scale 0.5-1, drawn by
    torchvision from the sample's seed) and a left-right flip drawn after it, applied on the
    device; evaluation: the centre square of ``eval_transform``. Returns a uint8 HWC array
    and the flip; :func:`to_input` normalises on the device. ``mirror``: the evaluation view
    left-right flipped (test-time flips of a frozen backbone's cached features).
    """

    size: int
    train: bool = False
    mirror: bool = False
    scale: tuple = (0.5, 1.0)
    ratio: tuple = (3 / 4, 4 / 3)

    def __call__(self, img) -> tuple[np.ndarray, bool]:
        from PIL import Image
        from torchvision import transforms as T

        w, h = img.size
        if self.train:
            top, left, ch, cw = T.RandomResizedCrop.get_params(img, list(self.scale), list(self.ratio))
            flip = bool(torch.rand(1) < 0.5)
        else:
            side = min(w, h)
            left, top, ch, cw, flip = (w - side) // 2, (h - side) // 2, side, side, self.mirror
        out = img.resize((self.size, self.size), Image.Resampling.BILINEAR, box=(left, top, left + cw, top + ch),
                         reducing_gap=None)
        return np.array(out), flip  # a writable copy: torch.from_numpy wants one


def train_crop(size: int) -> Crop:
    return Crop(size, train=True)


def eval_crop(size: int, mirror: bool = False) -> Crop:
    return Crop(size, train=False, mirror=mirror)


_AFFINE: dict = {}


def _affine(mean, std, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(1/(255 std), -mean/std) on ``device``, made once per device."""
    key = (tuple(mean), tuple(std), str(device))
    if key not in _AFFINE:
        m, s = torch.tensor(mean, dtype=torch.float64), torch.tensor(std, dtype=torch.float64)
        _AFFINE[key] = ((1 / (255 * s)).float().to(device), (-m / s).float().to(device))
    return _AFFINE[key]


def to_input(batch: dict, device: torch.device, channels_last: bool = False,
             mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """A batch's images as the model's float input on ``device``.

    uint8 NHWC batches (from a :class:`Crop` dataset) are copied as bytes, a quarter of
    float32, then flipped, converted and normalised on the device in a few batched ops;
    float NCHW batches (legacy transforms, :class:`TensorImages`) are moved as they are.
    """
    x = batch["image"].to(device, non_blocking=True)
    if x.dtype == torch.uint8:
        if "flip" in batch:  # on the bytes, before they become floats; no host sync (where, not indexing)
            flip = batch["flip"].to(device, non_blocking=True)
            x = torch.where(flip[:, None, None, None], x.flip(2), x)
        scale, shift = _affine(mean, std, device)
        x = x.float().mul_(scale).add_(shift)  # (x/255 - mean)/std along the contiguous last axis
        x = x.permute(0, 3, 1, 2)  # NCHW view of NHWC memory: channels_last strides
    return x.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


# --------------------------------------------------------------------------- datasets

def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A per-sample augmentation seed: the same image in the same epoch gets the same crop,
    whichever worker loads it and whether or not the run was resumed."""
    return (seed * 1_000_003 + epoch * 7_919 + index * 104_729) % (2**63)


class ImageDataset(Dataset):
    """Images by URI with their targets. Keys are an index, or ``(index, aug_seed)``.

    ``transform`` is a :class:`Crop` (the fast path: reduced-size decode, uint8 out) or any
    PIL -> tensor transform such as :func:`train_transform` (full decode, float out).
    """

    def __init__(self, uris: Sequence[str], targets: np.ndarray, transform):
        self.uris = list(uris)
        self.targets = torch.as_tensor(np.asarray(targets, dtype=np.int64).reshape(len(self.uris), -1))
        self.transform = transform

    def __len__(self) -> int:
        return len(self.uris)

    def __getitem__(self, key):
        i, seed = key if isinstance(key, tuple) else (key, None)
        crop = self.transform if isinstance(self.transform, Crop) else None
        try:
            data = fetch(self.uris[i])
            img = decode_at(data, crop.size) if crop else decode(data)
        except Exception as e:  # corrupt, missing or unreachable: reported, never fatal
            return {"index": i, "ok": False, "reason": getattr(e, "reason", None) or f"{type(e).__name__}: {e}"}
        if seed is not None:  # the CPU generator only: torch.manual_seed also seeds CUDA, ~1 ms a call
            torch.default_generator.manual_seed(seed)
        if crop is None:
            return {"index": i, "ok": True, "image": self.transform(img), "target": self.targets[i]}
        arr, flip = crop(img)
        return {"index": i, "ok": True, "image": torch.from_numpy(arr), "flip": flip, "target": self.targets[i]}


class TensorImages(Dataset):
    """In-memory images (uint8 ``[N,H,W]`` or ``[N,C,H,W]``) for benchmarks and tests.

    Training keys ``(index, seed)`` get a random shift of up to ``pad`` pixels and a
    horizontal flip; grey images are repeated to 3 channels.
    """

    def __init__(self, images: torch.Tensor, targets, pad: int = 2, mean=0.5, std=0.5):
        x = torch.as_tensor(images)
        self.images = x.unsqueeze(1) if x.dim() == 3 else x
        self.targets = torch.as_tensor(np.asarray(targets, dtype=np.int64).reshape(len(self.images), -1))
        self.pad, self.mean, self.std = pad, mean, std

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key):
        i, seed = key if isinstance(key, tuple) else (key, None)
        x = self.images[i].float().div_(255).sub_(self.mean).div_(self.std)
        if seed is not None and self.pad:
            g = torch.Generator().manual_seed(seed)
            dx, dy = (torch.randint(-self.pad, self.pad + 1, (2,), generator=g)).tolist()
            x = torch.roll(x, (dy, dx), (1, 2))
            if dy > 0: x[:, :dy] = -self.mean / self.std
            if dy < 0: x[:, dy:] = -self.mean / self.std
            if dx > 0: x[:, :, :dx] = -self.mean / self.std
            if dx < 0: x[:, :, dx:] = -self.mean / self.std
            if torch.rand(1, generator=g).item() < 0.5:
                x = x.flip(2)
        if x.shape[0] == 1:
            x = x.expand(3, -1, -1)
        return {"index": i, "ok": True, "image": x, "target": self.targets[i]}


def collate(samples: list[dict]) -> dict:
    """Stack the good samples; list the bad ones under ``skipped`` as (index, reason)."""
    good = [s for s in samples if s["ok"]]
    batch = {"skipped": [(s["index"], s["reason"]) for s in samples if not s["ok"]]}
    if good:
        batch["image"] = torch.stack([s["image"] for s in good])
        if "flip" in good[0]:
            batch["flip"] = torch.tensor([s["flip"] for s in good])
        batch["target"] = torch.stack([s["target"] for s in good])
        batch["index"] = torch.tensor([s["index"] for s in good])
    return batch


class EpochBatches(torch.utils.data.Sampler):
    """Batches of keys in a seeded per-epoch order, that can start mid-epoch (for resume).

    With ``shuffle`` the keys are ``(index, aug_seed)`` so training transforms are
    reproducible; otherwise plain indices in order. With ``world`` > 1 each process gets
    every ``world``-th key of the same global batch (from ``rank``): together the processes
    see exactly the batches, crops and flips that one process would.
    """

    def __init__(self, indices: Sequence[int], batch_size: int, shuffle: bool, seed: int = 0,
                 drop_last: bool = False, rank: int = 0, world: int = 1):
        self.indices = np.asarray(indices, dtype=np.int64)
        self.batch_size, self.shuffle, self.seed, self.drop_last = batch_size, shuffle, seed, drop_last
        self.rank, self.world = rank, world  # data parallel: this process's share of each global batch
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        self.epoch, self.start = epoch, start_step

    def __len__(self) -> int:
        n = len(self.indices)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self):
        idx = self.indices
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000 + self.epoch)
            idx = idx[torch.randperm(len(idx), generator=g).numpy()]
        for b in range(self.start, len(self)):
            chunk = idx[b * self.batch_size:(b + 1) * self.batch_size][self.rank::self.world]
            if self.shuffle:
                yield [(int(i), sample_seed(self.seed, self.epoch, int(i))) for i in chunk]
            else:
                yield [int(i) for i in chunk]


def holdout(indices: np.ndarray, uris: Sequence[str], fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Split ``indices`` into (keep, held out) by a hash of each URI: stable across runs and
    unaffected by row order or by images added later."""
    if fraction <= 0:
        return indices, indices[:0]
    keys = np.array([int(hashlib.sha1(uris[i].encode()).hexdigest()[:8], 16) / 2**32 for i in indices])
    held = keys < fraction
    return indices[~held], indices[held]
