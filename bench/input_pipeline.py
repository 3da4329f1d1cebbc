"""Bench: mlcore's training input per core, against the fastest bare decode of the same files;
and a K=4 frozen-backbone fold run with and without cached features.

Input: images/s from mlcore's loader to the training step's input tensor (``ImageDataset``
with ``train_crop``: reduced-size JPEG decode, seeded crop + resize, uint8 collate, then
``to_input``: flip and normalise), one process, one thread (so: per core), on
  photos  the clothing JPEGs as shipped (short side 224, in a temporary folder), and
  large   the same photos upscaled once to 1600x1200 (JPEG q90, kept in ``--work``).
Ceiling: the fastest bare decode-and-resize to 224x224 of the same bytes (Pillow draft
mode, and simplejpeg's scaled decode + Pillow resize where simplejpeg is installed), in
the same process, rounds interleaved with mlcore's. ``ratio_large`` = mlcore / ceiling
on the large files (median of the per-round ratios). The old path (full decode,
torchvision float transforms in the worker) is measured beside them for reference.

Fold run: ``mlcore.folds.fold_configs`` K=4 on the clothing subset, MobileNetV2 with the
shared ImageNet weights and a frozen backbone, every fold trained with ``train``:
``cache_features`` off (the backbone runs every epoch: the code before) and on.

The machine may be shared: the JSON notes the load average before and after. Ratios are
measured within each round, so contention that changes between rounds cancels out.

    .venv/bin/python bench/input_pipeline.py [--images 300] [--rounds 5] [--fold-images 400]
"""
from __future__ import annotations

import argparse
import csv
import io
import os
import statistics
import sys
import tempfile
import time
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from bench.common import machine_info, print_table, shared_data, write_result  # noqa: E402


def prepare_photos(data: Path, work: Path, n: int) -> tuple[list[Path], list[Path]]:
    """The first ``n`` clothing JPEGs as shipped, and the same upscaled to 1600x1200 (made once)."""
    from PIL import Image

    photos, large = work / "photos", work / "large"
    photos.mkdir(parents=True, exist_ok=True)
    large.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(data / "clothing_dataset_full_short224_q75.zip") as z:
        names = sorted(x for x in z.namelist() if x.lower().endswith(".jpg"))[:n]
        for name in names:
            p = photos / Path(name).name
            if not p.exists():
                p.write_bytes(z.read(name))
            q = large / p.name
            if not q.exists():
                img = Image.open(p).convert("RGB").resize((1600, 1200), Image.Resampling.BICUBIC)
                img.save(q, "JPEG", quality=90)
    return sorted(photos.glob("*.jpg")), sorted(large.glob("*.jpg"))


def mlcore_input(files: list[Path], size: int, batch: int, legacy: bool = False) -> float:
    """images/s of mlcore's loader (workers=0, this process) to the step's input tensor."""
    import numpy as np
    import torch
    from torch.utils.data import DataLoader

    from mlcore import data, storage

    transform = data.train_transform(size) if legacy else data.train_crop(size)
    ds = data.ImageDataset([storage.to_uri(f) for f in files], np.zeros(len(files), dtype=np.int64), transform)
    sampler = data.EpochBatches(np.arange(len(files)), batch, shuffle=True, seed=0)
    loader = DataLoader(ds, batch_sampler=sampler, num_workers=0, collate_fn=data.collate)
    cpu = torch.device("cpu")
    t0, n = time.perf_counter(), 0
    for b in loader:
        x = data.to_input(b, cpu)
        n += len(x)
    return n / (time.perf_counter() - t0)


def bare_pillow(files: list[Path], size: int) -> float:
    import numpy as np
    from PIL import Image

    t0 = time.perf_counter()
    for f in files:
        img = Image.open(io.BytesIO(f.read_bytes()))
        img.draft("RGB", (size, size))
        np.asarray(img.convert("RGB").resize((size, size), Image.Resampling.BILINEAR))
    return len(files) / (time.perf_counter() - t0)


def bare_simplejpeg(files: list[Path], size: int) -> float | None:
    try:
        import simplejpeg
    except ImportError:
        return None
    import numpy as np
    from PIL import Image

    t0 = time.perf_counter()
    for f in files:
        arr = simplejpeg.decode_jpeg(f.read_bytes(), colorspace="RGB", min_height=size, min_width=size)
        np.asarray(Image.fromarray(arr).resize((size, size), Image.Resampling.BILINEAR))
    return len(files) / (time.perf_counter() - t0)


def input_rounds(sets: dict[str, list[Path]], size: int, batch: int, rounds: int) -> dict:
    per = {name: {"mlcore": [], "pillow": [], "simplejpeg": [], "legacy": [], "ratio": []} for name in sets}
    for name, files in sets.items():  # warm the page cache and the imports
        mlcore_input(files[:batch], size, batch)
        bare_pillow(files[:batch], size)
    for r in range(rounds):
        for name, files in sets.items():
            m = mlcore_input(files, size, batch)
            p = bare_pillow(files, size)
            s = bare_simplejpeg(files, size)
            legacy = mlcore_input(files, size, batch, legacy=True) if r < 2 else None  # slow: twice is enough
            ceiling = max(p, s or 0.0)
            rec = per[name]
            rec["mlcore"].append(m), rec["pillow"].append(p), rec["ratio"].append(m / ceiling)
            if s is not None:
                rec["simplejpeg"].append(s)
            if legacy is not None:
                rec["legacy"].append(legacy)
            print(f"round {r + 1}/{rounds} {name:<6} mlcore {m:7.1f}  pillow-draft {p:7.1f}  "
                  f"simplejpeg {s or 0:7.1f}  ratio {m / ceiling:.3f}"
                  + (f"  old path {legacy:6.1f}" if legacy else ""), flush=True)
    med = {name: {k: (statistics.median(v) if v else None) for k, v in rec.items()} for name, rec in per.items()}
    return {"median": med, "rounds": per}


def fold_run(data: Path, work: Path, weights: Path, images: int, k: int, epochs: int, size: int,
             cache: bool) -> dict:
    """Train the K fold runs of a frozen-backbone base config; wall time and held-out accuracy."""
    import numpy as np

    from bench.transfer_clothing import prepare
    from mlcore.evaluate import load_npz
    from mlcore.folds import fold_configs
    from mlcore.train import TrainConfig, train
    from mlcore import storage

    manifest, labels = prepare(data, work / "subset", images)
    out = work / ("folds_cached" if cache else "folds_uncached")
    base = TrainConfig(manifest_uri=str(manifest), output_uri=str(out), labels=labels, arch="mobilenet_v2",
                       weights=str(weights), freeze_backbone=True, cache_features=cache, image_size=size,
                       epochs=epochs, batch_size=32, optimizer="adamw", lr=2e-3, weight_decay=0.01,
                       warmup_epochs=0.3, device="cpu", workers=0, seed=0)
    configs = fold_configs(base, k, storage.to_uri(out))
    t0 = time.perf_counter()
    correct = total = 0
    for c in configs:
        train(c)
        p = load_npz(storage.read_bytes(storage.join(c.output_uri, "predictions.npz")))
        held = p["split"] == "val"
        correct += int((p["pred"][held] == p["label"][held]).sum())
        total += int(held.sum())
    return {"wall_s": time.perf_counter() - t0, "held_out_accuracy": correct / max(1, total),
            "held_out_images": total, "train_images": int(sum(1 for _ in open(manifest)) - 1)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=300, help="photos per set")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--fold-images", type=int, default=400, help="clothing subset for the fold run (0: skip it)")
    ap.add_argument("--fold-epochs", type=int, default=3)
    ap.add_argument("--fold-size", type=int, default=128)
    ap.add_argument("--data", type=Path, default=shared_data() / "clothing")
    ap.add_argument("--weights", type=Path,
                    default=shared_data() / "weights" / "mobilenet_v2_imagenet_features_torchvision_keys.pth")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "retag-bench-input")
    ap.add_argument("--out", default="input_pipeline.json")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(1)  # per core: one process, one thread
    os.environ["MLCORE_CACHE_DIR"] = str(args.work / "mlcore-cache")
    load_before = os.getloadavg()
    photos, large = prepare_photos(args.data, args.work, args.images)
    res = input_rounds({"photos": photos, "large": large}, args.size, args.batch_size, args.rounds)
    med = res["median"]
    folds = {}
    if args.fold_images:
        for cache in (False, True, False, True):  # interleaved: before, after, before, after
            r = fold_run(args.data, args.work, args.weights, args.fold_images, 4, args.fold_epochs, args.fold_size,
                         cache)
            folds.setdefault("after" if cache else "before", []).append(r)
            print(f"fold run K=4 {'cached' if cache else 'uncached'}: {r['wall_s']:.1f} s, held-out accuracy "
                  f"{r['held_out_accuracy']:.3f}", flush=True)
    load_after = os.getloadavg()

    def ceiling(name):
        m = med[name]
        return max(m["pillow"], m["simplejpeg"] or 0.0)

    result = {
        "cores": os.cpu_count(),
        "photos_images_per_s": med["photos"]["mlcore"],
        "photos_ceiling_images_per_s": ceiling("photos"),
        "large_images_per_s": med["large"]["mlcore"],
        "large_ceiling_images_per_s": ceiling("large"),
        "ratio_large": med["large"]["ratio"],
        "ratio_photos": med["photos"]["ratio"],
        "large_images_per_s_old_path": med["large"]["legacy"],
        "photos_images_per_s_old_path": med["photos"]["legacy"],
        "fold_run_s_before": statistics.median(r["wall_s"] for r in folds["before"]) if folds else None,
        "fold_run_s_after": statistics.median(r["wall_s"] for r in folds["after"]) if folds else None,
        "fold_held_out_accuracy_before": folds["before"][0]["held_out_accuracy"] if folds else None,
        "fold_held_out_accuracy_after": folds["after"][0]["held_out_accuracy"] if folds else None,
        "details": {"input_rounds": res["rounds"], "input_median": med, "folds": folds},
        "setup": {"per_core": "one process, torch.set_num_threads(1), DataLoader workers=0",
                  "input": f"train_crop({args.size}) + to_input, batch {args.batch_size}, {args.images} files per set",
                  "ceiling": "max(Pillow draft + resize, simplejpeg scaled decode + Pillow resize), same bytes, "
                             "same process, interleaved",
                  "large": "clothing photos upscaled to 1600x1200, JPEG q90",
                  "fold_run": f"K=4 fold runs of mobilenet_v2 (shared ImageNet weights), frozen backbone, "
                              f"{args.fold_images} clothing subset images, {args.fold_epochs} epochs, "
                              f"{args.fold_size} px, CPU; before = cache_features off",
                  "rounds": args.rounds},
        "contention": {"load_average_before": load_before, "load_average_after": load_after,
                       "note": "a 2-core machine shared with other engineers' tests and workers; absolute "
                               "images/s move with their load, the ratios are measured within each round"},
        "machine": machine_info("cpu"),
    }
    print_table([(k, v) for k, v in result.items() if k not in ("details", "setup", "contention", "machine")],
                "Input pipeline")
    write_result(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
