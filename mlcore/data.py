"""Manifests, image reading with corrupt-image tolerance, transforms and the S3 cache.

A manifest is a CSV with ``uri,split`` and one label column per task: ``label``
for a single task, or any other column names for a multi-facet manifest
(``uri,split,neckline,sleeve``). Relative URIs are resolved against the
manifest's folder. An empty label cell means "no label for this task": the
image is predicted and embedded, but not trained on or scored for that task.

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

import csv
import hashlib
import io
import json
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from . import storage
from .images import MAX_PIXELS, decode

SPLITS = ("train", "val", "test")
_SPLIT_ALIASES = {"validation": "val", "valid": "val", "dev": "val"}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# --------------------------------------------------------------------------- manifests

@dataclass
class Manifest:
    """Rows of a manifest, with each task's labels in their fixed order."""

    uri: str
    sha256: str
    uris: list[str]
    splits: list[str]
    tasks: dict[str, list[str]]       # task name -> ordered labels
    targets: np.ndarray               # int64 [N, T], -1 where a row has no label for a task
    notes: list[str] = field(default_factory=list)

    @property
    def task_names(self) -> list[str]:
        return list(self.tasks)

    def __len__(self) -> int:
        return len(self.uris)

    def indices(self, split: str) -> np.ndarray:
        return np.flatnonzero(np.asarray(self.splits) == split)


def _resolve(base_uri: str, uri: str) -> str:
    if uri.startswith("s3://") or uri.startswith("file://") or os.path.isabs(uri):
        return storage.to_uri(uri)
    base = base_uri.rsplit("/", 1)[0]
    return storage.to_uri(storage.join(base, uri)) if not storage.is_s3(base) else storage.join(base, uri)


def read_manifest(uri: str, labels: Sequence[str] | dict[str, Sequence[str]] | None = None) -> Manifest:
    """Read and validate a manifest; ``labels`` fixes the label order (per task for multi-facet).

    Without ``labels``, each task's labels are its distinct values, sorted (noted in
    ``Manifest.notes``). A value not in a given label list is an error, not a silent drop.
    """
    uri = storage.to_uri(uri)
    raw = storage.read_bytes(uri)
    rows = list(csv.DictReader(io.StringIO(raw.decode("utf-8-sig"))))
    if not rows:
        raise ValueError(f"manifest {uri} has no rows")
    columns = list(rows[0].keys())
    missing = {"uri", "split"} - set(columns)
    if missing:
        raise ValueError(f"manifest {uri} lacks column(s) {sorted(missing)}; it has {columns}")
    task_cols = [c for c in columns if c not in ("uri", "split")]
    if not task_cols:
        raise ValueError(f"manifest {uri} has no label column (expected 'label' or one column per task)")

    if labels is None:
        given: dict[str, list[str]] = {}
    elif isinstance(labels, dict):
        given = {k: list(v) for k, v in labels.items()}
    else:
        if len(task_cols) != 1:
            raise ValueError(f"a plain label list needs a single-task manifest; tasks are {task_cols}")
        given = {task_cols[0]: list(labels)}
    unknown_tasks = set(given) - set(task_cols)
    if unknown_tasks:
        raise ValueError(f"labels given for task(s) {sorted(unknown_tasks)} not in manifest columns {task_cols}")

    notes = []
    tasks: dict[str, list[str]] = {}
    for t in task_cols:
        if t in given:
            if len(set(given[t])) != len(given[t]):
                raise ValueError(f"task {t!r}: duplicate labels in {given[t]}")
            tasks[t] = given[t]
        else:
            tasks[t] = sorted({r[t] for r in rows if r[t]})
            notes.append(f"task {t!r}: no label order given, using sorted values")

    uris, splits, errors = [], [], []
    targets = np.full((len(rows), len(task_cols)), -1, dtype=np.int64)
    index = {t: {lab: i for i, lab in enumerate(labs)} for t, labs in tasks.items()}
    seen = set()
    for n, r in enumerate(rows):
        line = n + 2
        if not r["uri"]:
            errors.append(f"line {line}: empty uri")
            continue
        split = _SPLIT_ALIASES.get(r["split"].strip().lower(), r["split"].strip().lower())
        if split not in SPLITS:
            errors.append(f"line {line}: split {r['split']!r} is not one of {SPLITS}")
        u = _resolve(uri, r["uri"].strip())
        if u in seen:
            errors.append(f"line {line}: duplicate uri {u}")
        seen.add(u)
        uris.append(u)
        splits.append(split)
        for j, t in enumerate(task_cols):
            v = (r[t] or "").strip()
            if v:
                if v not in index[t]:
                    errors.append(f"line {line}: label {v!r} of task {t!r} is not in {tasks[t]}")
                else:
                    targets[n, j] = index[t][v]
    if errors:
        more = f" (and {len(errors) - 20} more)" if len(errors) > 20 else ""
        raise ValueError(f"manifest {uri} is invalid:\n  " + "\n  ".join(errors[:20]) + more)
    return Manifest(uri, storage.sha256(raw), uris, splits, tasks, targets, notes)


def write_manifest(path_or_uri: str, uris: Sequence[str], splits: Sequence[str],
                   labels: dict[str, Sequence[str]] | Sequence[str]) -> str:
    """Write a manifest CSV (``labels``: one column of label names, or task -> column)."""
    cols = labels if isinstance(labels, dict) else {"label": labels}
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["uri", "split", *cols])
    for i, (u, s) in enumerate(zip(uris, splits)):
        w.writerow([u, s, *[c[i] or "" for c in cols.values()]])
    uri = storage.to_uri(path_or_uri)
    storage.write_bytes(uri, out.getvalue().encode(), "text/csv")
    return uri


def load_labels_file(uri: str) -> list[str] | dict[str, list[str]]:
    """A JSON list (single task) or object (task -> list) of labels, or a text file, one per line."""
    raw = storage.read_bytes(storage.to_uri(uri)).decode("utf-8")
    if raw.lstrip().startswith(("[", "{")):
        return json.loads(raw)
    return [line.strip() for line in raw.splitlines() if line.strip()]


# --------------------------------------------------------------------------- S3 cache

def cache_dir() -> Path:
    return Path(os.environ.get("MLCORE_CACHE_DIR") or Path.home() / ".cache" / "mlcore")


def _ref_path(uri: str) -> Path:
    h = hashlib.sha256(uri.encode()).hexdigest()
    return cache_dir() / "refs" / h[:2] / h


def _blob_path(digest: str) -> Path:
    return cache_dir() / "blobs" / digest[:2] / digest


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


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
        _atomic_write(blob, data)
    _atomic_write(_ref_path(uri), digest.encode())
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
    and the flip; :func:`to_input` normalises on the device.
    """

    size: int
    train: bool = False
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
            left, top, ch, cw, flip = (w - side) // 2, (h - side) // 2, side, side, False
        out = img.resize((self.size, self.size), Image.Resampling.BILINEAR, box=(left, top, left + cw, top + ch),
                         reducing_gap=None)
        return np.array(out), flip  # a writable copy: torch.from_numpy wants one


def train_crop(size: int) -> Crop:
    return Crop(size, train=True)


def eval_crop(size: int) -> Crop:
    return Crop(size, train=False)


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

def _sample_seed(seed: int, epoch: int, index: int) -> int:
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
                yield [(int(i), _sample_seed(self.seed, self.epoch, int(i))) for i in chunk]
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
