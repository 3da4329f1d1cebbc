"""Near duplicates of a suspects run's images: copies across splits (test leakage), copies with
two labels (one is wrong), and plain copies.

Found in spaces where "the same picture" means something (mlcore.duplicates): a perceptual
hash of each image's bytes for exact, re-encoded and resized copies, and, when
``DUPLICATES_WEIGHTS`` names a pretrained backbone's state_dict (ImageNet features that never
saw the project's labels), its features for near copies such as crops. Both cuts are
calibrated on synthetic copies of the project's own images and stored with the run
(``SuspectRun.duplicate_stats``) so that the page can show them.

Hashes are kept per image with the checksum they came from (``ImageHash``): a second suspects
run reads them instead of decoding every image again; new bytes mean new hashes.

Called from the suspects scoring step (services.suspects.score_suspect_run), in a worker.
"""
from __future__ import annotations

import logging
import time

import numpy as np
from django.conf import settings
from django.db import transaction

from ..models import Annotation, Image, ImageHash, NearDuplicate, SuspectRun

logger = logging.getLogger(__name__)
PAGE_SIZE = 50
CALIBRATION_IMAGES = 200
BULK = 5000
Kind = NearDuplicate.Kind


def backbone_config() -> dict | None:
    """The pretrained backbone for near copies, or None: ``DUPLICATES_WEIGHTS`` (a state_dict URI
    with torchvision keys), ``DUPLICATES_ARCH`` (mobilenet_v2) and ``DUPLICATES_IMAGE_SIZE`` (128)."""
    uri = getattr(settings, "DUPLICATES_WEIGHTS", "") or ""
    if not uri:
        return None
    return {"weights": uri, "arch": getattr(settings, "DUPLICATES_ARCH", "mobilenet_v2"),
            "image_size": int(getattr(settings, "DUPLICATES_IMAGE_SIZE", 128))}


def _calibration_sample(images: list[Image], ok: np.ndarray, n: int | None = None) -> list:
    """Up to ``n`` decoded images spread over the set (every k-th readable one: deterministic)."""
    from mlcore import storage
    from mlcore.images import CorruptImage, decode

    n = n or CALIBRATION_IMAGES
    idx = np.flatnonzero(ok)
    step = max(1, len(idx) // n)
    out = []
    for i in idx[::step][:n]:
        try:
            out.append(decode(storage.read_bytes(storage.to_uri(images[i].uri))))
        except (CorruptImage, OSError, ValueError):
            continue
    return out


def describe_images(images: list[Image], *, backbone: dict | None = None) -> dict:
    """mlcore.duplicates.describe over ``images``, reading cached hashes where the checksum still
    matches (only when no features are needed: features need the pixels anyway)."""
    from mlcore import duplicates as dup

    n = len(images)
    cached = {h.image_id: h for h in ImageHash.objects.filter(image_id__in=[im.pk for im in images])}
    model = None
    if backbone is not None:
        model = dup.load_backbone(backbone["weights"], backbone["arch"])
        todo = list(range(n))
    else:
        todo = [i for i, im in enumerate(images)
                if im.pk not in cached or cached[im.pk].checksum != (im.checksum or "")]
    got = dup.describe([images[i].uri for i in todo], model=model,
                       image_size=backbone["image_size"] if backbone else 128)
    out = {"phash": np.zeros(n, dtype=np.int64), "dhash": np.zeros(n, dtype=np.int64),
           "ok": np.zeros(n, dtype=bool), "errors": {}, "features": None, "model": model}
    for i, im in enumerate(images):
        h = cached.get(im.pk)
        if h is not None and h.checksum == (im.checksum or ""):
            out["phash"][i], out["dhash"][i], out["ok"][i] = h.phash, h.dhash, True
    pos = np.asarray(todo, dtype=np.int64)
    if len(pos):
        out["phash"][pos], out["dhash"][pos] = got["phash"], got["dhash"]
        out["ok"][pos] = got["ok"]
        out["errors"] = {int(pos[k]): why for k, why in got["errors"].items()}
        if got["features"] is not None:
            out["features"] = np.zeros((n, got["features"].shape[1]), dtype=np.float32)
            out["features"][pos] = got["features"]
    fresh = [ImageHash(image_id=images[i].pk, checksum=images[i].checksum or "", phash=int(out["phash"][i]),
                       dhash=int(out["dhash"][i])) for i in todo if out["ok"][i]]
    ImageHash.objects.bulk_create(fresh, batch_size=BULK, update_conflicts=True, unique_fields=["image"],
                                  update_fields=["checksum", "phash", "dhash"])
    return out


def find_near_duplicates(sr: SuspectRun, *, image_ids, splits, labels) -> dict:
    """Find and store the near-duplicate pairs among the run's images (rows aligned with
    ``image_ids``, ``splits`` and ``labels``: label indices, -1 unlabelled); replaces what
    ``sr`` had. Returns the stats stored on ``sr.duplicate_stats``."""
    from mlcore import duplicates as dup

    t0 = time.perf_counter()
    ids = [int(i) for i in image_ids]
    by_id = Image.objects.in_bulk(ids)
    images = [by_id[i] for i in ids]
    backbone = backbone_config()
    d = describe_images(images, backbone=backbone)
    sample = _calibration_sample(images, d["ok"])
    stats: dict = {"images": len(images), "unreadable": int((~d["ok"]).sum()), "calibration_images": len(sample)}
    hash_cut = dup.calibrate_hash(sample, d["phash"][d["ok"]]) if sample else {"threshold": 0}
    stats["hash"] = {"method": "phash (64-bit DCT hash), Hamming distance", **_plain(hash_cut),
                     "similarity_cut": 1.0 - int(hash_cut["threshold"]) / dup.BITS}
    hp = dup.hamming_pairs(d["phash"], int(hash_cut["threshold"]), valid=d["ok"])
    fp = None
    if d["features"] is not None:
        feat_cut = dup.calibrate_features(d["model"], sample, d["features"], image_size=backbone["image_size"],
                                          negative_rows=dup.rows_without_pairs(len(images), hp, d["ok"]))
        stats["features"] = {"method": f"{backbone['arch']} pretrained features at {backbone['image_size']} px, "
                                       f"cosine similarity", "weights": backbone["weights"], **_plain(feat_cut)}
        fp = dup.cosine_pairs(d["features"], feat_cut["threshold"], valid=d["ok"])
    pairs = dup.merge_pairs(hp, fp)
    splits, labels = np.asarray(splits).astype(str), np.asarray(labels)
    rows = []
    for i, j, sim, method in pairs:
        for part in dup.pair_kind(i, j, splits=splits, labels=labels).split("+"):
            rows.append(NearDuplicate(suspect_run=sr, image_a_id=ids[i], image_b_id=ids[j], similarity=float(sim),
                                      kind=part, method=method))
    with transaction.atomic():
        NearDuplicate.objects.filter(suspect_run=sr).delete()
        NearDuplicate.objects.bulk_create(rows, batch_size=BULK)
        stats["pairs"] = len(pairs)
        stats["by_kind"] = {k: sum(1 for r in rows if r.kind == k) for k in Kind.values}
        stats["seconds"] = round(time.perf_counter() - t0, 2)
        counts = {**(SuspectRun.objects.filter(pk=sr.pk).values_list("counts", flat=True).first() or {}),
                  "near_duplicates": len(rows)}
        SuspectRun.objects.filter(pk=sr.pk).update(duplicate_stats=stats, counts=counts)
    sr.duplicate_stats, sr.counts = stats, counts
    logger.info("suspects %s: %s near-duplicate pairs (hash cut %s bits%s) in %.1f s", sr.pk, len(pairs),
                hash_cut["threshold"], f", features cut {stats['features']['threshold']}" if fp else "",
                stats["seconds"])
    return stats


def _plain(cut: dict) -> dict:
    """JSON-safe figures of a calibration (numpy scalars to floats)."""
    return {k: (float(v) if isinstance(v, (np.floating, float)) else v) for k, v in cut.items()}


# --------------------------------------------------------------------------- reading

def kind_counts(sr: SuspectRun) -> dict[str, int]:
    from django.db.models import Count

    got = dict(NearDuplicate.objects.filter(suspect_run=sr).values_list("kind").annotate(n=Count("id")))
    return {k: got.get(k, 0) for k in Kind.values}


def _with_labels(sr: SuspectRun, pairs: list[NearDuplicate]) -> list[NearDuplicate]:
    ids = {p.image_a_id for p in pairs} | {p.image_b_id for p in pairs}
    labels = dict(Annotation.objects.filter(task_id=sr.task_id, image_id__in=ids).values_list("image_id", "label__name"))
    for p in pairs:
        p.label_a, p.label_b = labels.get(p.image_a_id), labels.get(p.image_b_id)
    return pairs


def pairs_page(sr: SuspectRun, *, kind: str, page: int = 1, size: int | None = None) -> dict:
    """One page of the pairs of ``kind``, most similar first: ``{"pairs", "count", "page",
    "pages", "start", "end"}`` (start/end 1-based, for "showing 1-50 of N")."""
    if kind not in Kind.values:
        raise ValueError(f"unknown kind {kind!r}; choose one of {', '.join(Kind.values)}")
    size = size or PAGE_SIZE
    qs = NearDuplicate.objects.filter(suspect_run=sr, kind=kind)
    count = qs.count()
    pages = max(1, -(-count // size))
    page = min(max(1, int(page)), pages)
    start = (page - 1) * size
    pairs = list(qs.select_related("image_a", "image_b").order_by("-similarity", "id")[start:start + size])
    return {"pairs": _with_labels(sr, pairs), "count": count, "page": page, "pages": pages,
            "start": start + 1 if pairs else 0, "end": start + len(pairs)}


def near_duplicate_pairs(sr: SuspectRun, kind: str | None = None, limit: int = 500) -> list[NearDuplicate]:
    """The most similar pairs (of one kind, or all), with both images' current labels (the API)."""
    qs = NearDuplicate.objects.filter(suspect_run=sr).select_related("image_a", "image_b")
    if kind:
        qs = qs.filter(kind=kind)
    return _with_labels(sr, list(qs.order_by("-similarity", "id")[:limit]))
