"""Bench: near-duplicate detection (mlcore.duplicates) on real clothing photos with injected copies.

Data: ``/work/shared/data/clothing/`` (5,756 JPEGs, short side 224 px), read from the zip.
The bench takes 4,800 photos as originals and injects 200 copies of 200 other photos
among them (5,000 images in all), 50 of each kind:

  exact      the same bytes
  reencoded  decoded and saved again as JPEG quality 60
  resized    scaled to 60 % (bilinear), JPEG quality 90
  cropped    4-8 % cut off each side (random per side), JPEG quality 90

The sources of the copies are also in the set, so each copy has exactly one true partner.
Per kind: **recall** = true (source, copy) pairs found / 50; **precision** = of the reported
pairs that involve a copy of that kind, the share that is its true pair. Pairs between two
originals are reported separately (the dataset may hold real duplicates: they are not
counted as errors of any kind, but listed with their number).

Thresholds are not given: mlcore calibrates them on synthetic copies of 150 other photos
(its own transforms: JPEG 60, half size, a 6 % crop) against each image's nearest other
image, as the app does: the hash by Youden's J, the features by the best recall that lets at
most 1 % of the images without a hash copy have a different image inside the cut.
``overall_precision`` counts every pair between two originals as false (a lower bound: some
may be real duplicates in the dataset). Methods measured in the same run: the perceptual hash alone, the
pretrained features alone (ImageNet MobileNetV2 from ``/work/shared/data/weights/``,
``--image-size`` px input), and both (the app's rule).

    .venv/bin/python bench/near_duplicates.py            # ~10 min on 2 cores shared by 8 engineers
"""
from __future__ import annotations

import argparse
import io
import random
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import machine_info, print_table, shared_data, write_result  # noqa: E402
from mlcore import duplicates as dup  # noqa: E402

KINDS = ("exact", "reencoded", "resized", "cropped")


def jpeg(img: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def make_copy(data: bytes, kind: str, rng: random.Random) -> bytes:
    if kind == "exact":
        return data
    img = Image.open(io.BytesIO(data)).convert("RGB")
    if kind == "reencoded":
        return jpeg(img, 60)
    if kind == "resized":
        return jpeg(img.resize((int(img.width * 0.6), int(img.height * 0.6)), Image.BILINEAR), 90)
    w, h = img.size
    box = (int(w * rng.uniform(.04, .08)), int(h * rng.uniform(.04, .08)),
           w - int(w * rng.uniform(.04, .08)), h - int(h * rng.uniform(.04, .08)))
    return jpeg(img.crop(box), 90)


def evaluate(pairs, truth: dict[int, tuple[int, str]], n_pairs_per_kind: int) -> tuple[dict, int]:
    """Per kind precision and recall; and the number of pairs between two originals."""
    found = {k: 0 for k in KINDS}
    reported = {k: 0 for k in KINDS}
    among_originals = 0
    for i, j, _sim, _method in pairs:
        hit = False
        for a, b in ((i, j), (j, i)):
            if a in truth:
                src, kind = truth[a]
                reported[kind] += 1
                if src == b:
                    found[kind] += 1
                hit = True
                break
        if not hit:
            among_originals += 1
    kinds = {k: {"precision": round(found[k] / reported[k], 4) if reported[k] else 0.0,
                 "recall": round(found[k] / n_pairs_per_kind, 4), "found": found[k], "reported": reported[k]}
             for k in KINDS}
    return kinds, among_originals


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--pairs", type=int, default=200)
    ap.add_argument("--image-size", type=int, default=128, help="backbone input (px); small: CPU is scarce")
    ap.add_argument("--calibration", type=int, default=150, help="photos the thresholds are calibrated on")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(2)
    data_dir = shared_data() / "clothing"
    weights = shared_data() / "weights" / "mobilenet_v2_imagenet_features_torchvision_keys.pth"
    rng = random.Random(args.seed)
    t_start = time.perf_counter()
    with zipfile.ZipFile(data_dir / "clothing_dataset_full_short224_q75.zip") as z:
        names = sorted(n for n in z.namelist() if n.lower().endswith(".jpg"))
        rng.shuffle(names)
        n_orig = args.images - args.pairs
        originals = names[:n_orig]
        sources = originals[:args.pairs]  # copies of originals: each has one true partner
        calib_names = names[n_orig:n_orig + args.calibration]  # photos outside the set
        blobs = [z.read(n) for n in originals]
        calib = [Image.open(io.BytesIO(z.read(n))).convert("RGB") for n in calib_names]
    per_kind = args.pairs // len(KINDS)
    truth: dict[int, tuple[int, str]] = {}
    for k, kind in enumerate(KINDS):
        for s in range(k * per_kind, (k + 1) * per_kind):
            truth[len(blobs)] = (s, kind)
            blobs.append(make_copy(blobs[s], kind, rng))
    order = list(range(len(blobs)))  # copies stay at the end: indices are what evaluate() reads

    model = dup.load_backbone(str(weights))
    t0 = time.perf_counter()
    described = dup.describe(order, model=model, image_size=args.image_size, read=lambda i: blobs[i])
    t_describe = time.perf_counter() - t0
    t0 = time.perf_counter()
    hash_cut = dup.calibrate_hash(calib, described["phash"], kinds=dup.TRANSFORMS)
    hp = dup.hamming_pairs(described["phash"], hash_cut["threshold"], valid=described["ok"])
    feat_cut = dup.calibrate_features(model, calib, described["features"], image_size=args.image_size,
                                      negative_rows=dup.rows_without_pairs(len(blobs), hp, described["ok"]))
    t_calibrate = time.perf_counter() - t0
    t0 = time.perf_counter()
    fp = dup.cosine_pairs(described["features"], feat_cut["threshold"], valid=described["ok"])
    t_pairs = time.perf_counter() - t0
    empty = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64))
    methods = {"hash": dup.merge_pairs(hp), "features": dup.merge_pairs(empty, fp), "both": dup.merge_pairs(hp, fp)}
    seconds = time.perf_counter() - t_start

    results = {}
    rows = []
    for name, pairs in methods.items():
        kinds, among = evaluate(pairs, truth, per_kind)
        true_pairs = sum(v["found"] for v in kinds.values())
        results[name] = {"kinds": kinds, "pairs_reported": len(pairs), "pairs_among_originals": among,
                         "overall_precision": round(true_pairs / len(pairs), 4) if pairs else 0.0}
        for kind in KINDS:
            rows.append((f"{name:8s} {kind:9s}", f"precision {kinds[kind]['precision']:.3f}  "
                                                  f"recall {kinds[kind]['recall']:.3f}"))
        rows.append((f"{name:8s} pairs", f"{len(pairs)} reported, {among} between two originals, "
                                         f"overall precision >= {results[name]['overall_precision']:.3f}"))
    rows += [("hash cut (phash bits)", f"<= {hash_cut['threshold']}  (calibration recall "
                                       f"{hash_cut['recall']:.3f}, nearest-other share {hash_cut['false_positive_rate']:.4f})"),
             ("features cut (cosine)", f">= {feat_cut['threshold']:.4f}  (calibration recall "
                                       f"{feat_cut['recall']:.3f}, expected false pairs "
                                       f"{feat_cut['expected_false_pairs']} of a budget of {feat_cut['false_pair_budget']})"),
             ("seconds", f"{seconds:.1f} (decode+hash+features {t_describe:.1f}, calibrate {t_calibrate:.1f}, "
                         f"pairs {t_pairs:.2f})")]
    print_table(rows, f"Near duplicates: {len(blobs)} clothing photos, {args.pairs} injected copies")
    both = results["both"]
    write_result("near_duplicates.json", {
        "images": len(blobs), "pairs": args.pairs,
        "kinds": {k: {"precision": v["precision"], "recall": v["recall"]} for k, v in both["kinds"].items()},
        "seconds": round(seconds, 1),
        "machine": machine_info("cpu"),
        "method": "phash (calibrated Hamming cut) or ImageNet MobileNetV2 features at "
                  f"{args.image_size} px (calibrated cosine cut)",
        "pairs_among_originals": both["pairs_among_originals"],
        "overall_precision": both["overall_precision"],
        "by_method": results,
        "thresholds": {"hash": hash_cut, "features": feat_cut},
        "timings_s": {"describe": round(t_describe, 1), "calibrate": round(t_calibrate, 1), "pairs": round(t_pairs, 2)},
        "goal": ">= 0.95 precision and recall for exact, reencoded and resized",
    })


if __name__ == "__main__":
    main()
