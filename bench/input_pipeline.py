"""Bench: mlcore's training input per core, against the fastest bare decode of the same files;
and a K=4 frozen-backbone fold run with and without cached features.

Input: images/s from mlcore's loader to the training step's input (``ImageDataset`` with
``train_crop``: read, reduced-size JPEG decode, seeded crop + resize, uint8, collated into
the batch a DataLoader worker hands over; ``to_input``, the flip and normalisation, runs on
the training device and is timed on the CPU separately, ``*_cpu_normalise``), one process,
one thread (so: per core), on
  photos  the clothing JPEGs as shipped (short side 224, in a temporary folder), and
  large   the same photos upscaled once to 1600x1200 (JPEG q90, kept in ``--work``).
Ceiling: the fastest bare decode-and-resize to 224x224 of the same bytes (Pillow draft
mode, and simplejpeg's scaled decode + Pillow resize where simplejpeg is installed), in
the same process, each batch timed for every contender in turn. ``ratio_large`` = mlcore / ceiling
on the large files (median of the per-round ratios). The old path (full decode,
torchvision float transforms in the worker) is measured beside them for reference.

Fold run: ``mlcore.folds.fold_configs`` K=4 on the clothing subset, MobileNetV2 with the
shared ImageNet weights and a frozen backbone, the K folds trained one after the other with
``train``, in each mode of ``FOLD_MODES``: ``cache_features`` off (the backbone runs every
epoch: ``fold_run_s_before``), on with each fold extracting its own features, on with the
FeatureStore shared by the folds (``fold_run_s_after``: fold 1 runs the backbone, folds 2..K
read), and the same with each fold in a fresh process, as the app runs fold runs.
``--only folds`` measures the fold part alone and keeps the input figures of ``--out``.

The machine may be shared: the JSON notes the load average before and after. Ratios are
measured within each round, so contention that changes between rounds cancels out.

    .venv/bin/python bench/input_pipeline.py [--only all|input|folds] [--images 300] [--rounds 5] [--fold-images 400]
"""
from __future__ import annotations

import argparse
import dataclasses
import io
import json
import os
import statistics
import sys
import time
import zipfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from bench.common import REPO, RESULTS, clothing_arguments, machine_info, print_table, write_result  # noqa: E402


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


def _mlcore_batch(files: list[Path], size: int, legacy: bool = False):
    """A function: (a batch of files, seed) -> (seconds to the loader's batch, seconds of to_input on the CPU)."""
    import numpy as np
    import torch

    from mlcore import data, storage

    transform = data.train_transform(size) if legacy else data.train_crop(size)
    ds = data.ImageDataset([storage.to_uri(f) for f in files], np.zeros(len(files), dtype=np.int64), transform)
    cpu = torch.device("cpu")

    def one(rows: list[int], epoch: int) -> tuple[float, float]:
        t0 = time.perf_counter()
        batch = data.collate([ds[(i, data.sample_seed(0, epoch, i))] for i in rows])  # what the loader does
        t1 = time.perf_counter()
        data.to_input(batch, cpu)
        return t1 - t0, time.perf_counter() - t1

    return one


def _bare(files: list[Path], size: int, kind: str):
    import numpy as np
    from PIL import Image

    if kind == "simplejpeg":
        try:
            import simplejpeg
        except ImportError:
            return None

    def one(rows: list[int]) -> float:
        t0 = time.perf_counter()
        for i in rows:
            raw = files[i].read_bytes()
            if kind == "pillow":
                img = Image.open(io.BytesIO(raw))
                img.draft("RGB", (size, size))
                np.asarray(img.convert("RGB").resize((size, size), Image.Resampling.BILINEAR))
            else:
                arr = simplejpeg.decode_jpeg(raw, colorspace="RGB", min_height=size, min_width=size)
                np.asarray(Image.fromarray(arr).resize((size, size), Image.Resampling.BILINEAR))
        return time.perf_counter() - t0

    return one


def input_rounds(sets: dict[str, list[Path]], size: int, batch: int, rounds: int) -> dict:
    """Per round and set: images/s of each contender, timed batch by batch in turn (so a burst of
    load from the neighbours falls on all of them alike)."""
    per = {name: {k: [] for k in ("mlcore", "mlcore_cpu_normalise", "pillow", "simplejpeg", "legacy", "ratio",
                                  "ratio_cpu_normalise")} for name in sets}
    for r in range(rounds):
        for name, files in sets.items():
            m, legacy = _mlcore_batch(files, size), _mlcore_batch(files, size, legacy=True)
            pil, sj = _bare(files, size, "pillow"), _bare(files, size, "simplejpeg")
            t = {"mlcore": 0.0, "norm": 0.0, "pillow": 0.0, "simplejpeg": 0.0, "legacy": 0.0}
            order = np.random.default_rng(r).permutation(len(files)).tolist()
            m(order[:4], r), pil(order[:4])  # warm
            chunks = [order[i:i + batch] for i in range(0, len(order), batch)]
            for k, rows in enumerate(chunks):
                load_s, norm_s = m(rows, r)
                t["mlcore"] += load_s
                t["norm"] += norm_s
                t["pillow"] += pil(rows)
                if sj:
                    t["simplejpeg"] += sj(rows)
                if k % 4 == 0:  # the old path is slow: a quarter of the batches is enough
                    t["legacy"] += sum(legacy(rows, r)) * 4
            n = len(order)
            rec = per[name]
            rates = {"mlcore": n / t["mlcore"], "mlcore_cpu_normalise": n / (t["mlcore"] + t["norm"]),
                     "pillow": n / t["pillow"], "simplejpeg": n / t["simplejpeg"] if sj else None,
                     "legacy": n / t["legacy"] if t["legacy"] else None}
            ceiling = max(rates["pillow"], rates["simplejpeg"] or 0.0)
            for k, v in rates.items():
                if v is not None:
                    rec[k].append(v)
            rec["ratio"].append(rates["mlcore"] / ceiling)
            rec["ratio_cpu_normalise"].append(rates["mlcore_cpu_normalise"] / ceiling)
            print(f"round {r + 1}/{rounds} {name:<6} mlcore {rates['mlcore']:7.1f} (+cpu normalise "
                  f"{rates['mlcore_cpu_normalise']:7.1f})  pillow-draft {rates['pillow']:7.1f}  simplejpeg "
                  f"{rates['simplejpeg'] or 0:7.1f}  ratio {rec['ratio'][-1]:.3f}  old path {rates['legacy'] or 0:6.1f}",
                  flush=True)
    med = {name: {k: (statistics.median(v) if v else None) for k, v in rec.items()} for name, rec in per.items()}
    return {"median": med, "rounds": per}


FOLD_MODES = {
    "uncached": "cache_features off: the backbone runs every epoch (the code before #12 item 5)",
    "per_fold": "cache_features on, MLCORE_FEATURE_STORE=off: each fold runs the backbone once over its images",
    "shared": "cache_features on with the FeatureStore (emptied first): fold 1 runs the backbone, folds 2..K read",
    "shared_processes": "as shared, each fold in a fresh Python process (as the app trains each fold run)",
}


def fold_run(data: Path, work: Path, weights: Path, images: int, k: int, epochs: int, size: int,
             mode: str) -> dict:
    """Train the K fold runs of a frozen-backbone base config one after the other (``mode``: a
    key of FOLD_MODES); wall time of the K runs, held-out accuracy."""
    import json
    import shutil
    import subprocess

    from bench.transfer_clothing import prepare
    from mlcore import storage
    from mlcore.data import cache_dir
    from mlcore.folds import fold_configs
    from mlcore.storage import load_npz
    from mlcore.train import TrainConfig, train

    manifest, labels = prepare(data, work / "subset", images)
    out = work / f"folds_{mode}"
    base = TrainConfig(manifest_uri=str(manifest), output_uri=str(out), labels=labels, arch="mobilenet_v2",
                       weights=str(weights), freeze_backbone=True, cache_features=mode != "uncached",
                       image_size=size, epochs=epochs, batch_size=32, optimizer="adamw", lr=2e-3, weight_decay=0.01,
                       warmup_epochs=0.3, device="cpu", workers=0, seed=0)
    configs = fold_configs(base, k, storage.to_uri(out))
    shutil.rmtree(cache_dir() / "features", ignore_errors=True)  # fold 1 of every mode starts cold
    os.environ["MLCORE_FEATURE_STORE"] = "on" if mode.startswith("shared") else "off"
    child = ("import json, sys, torch; torch.set_num_threads(1); from mlcore.train import TrainConfig, train; "
             "train(TrainConfig(**json.loads(sys.argv[1])))")
    t0 = time.perf_counter()
    correct = total = 0
    per_fold = []
    for c in configs:
        t = time.perf_counter()
        if mode == "shared_processes":
            subprocess.run([sys.executable, "-c", child, json.dumps(dataclasses.asdict(c))], check=True,
                           cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"})
        else:
            train(c)
        per_fold.append(time.perf_counter() - t)
        p = load_npz(storage.read_bytes(storage.join(c.output_uri, "predictions.npz")))
        held = p["split"] == "val"
        correct += int((p["pred"][held] == p["label"][held]).sum())
        total += int(held.sum())
    os.environ.pop("MLCORE_FEATURE_STORE")
    return {"wall_s": time.perf_counter() - t0, "per_fold_s": per_fold, "held_out_accuracy": correct / max(1, total),
            "held_out_images": total, "train_images": int(sum(1 for _ in open(manifest)) - 1)}


def run_folds(args) -> dict:
    """Each mode of FOLD_MODES ``--fold-repeats`` times, interleaved; {mode: [runs]}."""
    folds: dict = {}
    for _ in range(args.fold_repeats):
        for mode in args.fold_modes:
            r = fold_run(args.data, args.work, args.weights, args.fold_images, 4, args.fold_epochs, args.fold_size,
                         mode)
            folds.setdefault(mode, []).append(r)
            print(f"fold run K=4 {mode}: {r['wall_s']:.1f} s (per fold {', '.join(f'{t:.1f}' for t in r['per_fold_s'])}),"
                  f" held-out accuracy {r['held_out_accuracy']:.3f}", flush=True)
    return folds


def fold_figures(folds: dict, args) -> dict:
    """The result's fold keys: ``before`` is the uncached mode, ``after`` the shared store."""
    def med(mode):
        return statistics.median(r["wall_s"] for r in folds[mode]) if mode in folds else None

    def acc(mode):
        return folds[mode][0]["held_out_accuracy"] if mode in folds else None

    return {
        "fold_run_s_before": med("uncached"),
        "fold_run_s_after": med("shared"),
        "fold_run_s_after_per_fold_features": med("per_fold"),
        "fold_run_s_after_processes": med("shared_processes"),
        "fold_held_out_accuracy_before": acc("uncached"),
        "fold_held_out_accuracy_after": acc("shared"),
        "fold_held_out_accuracy_after_processes": acc("shared_processes"),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=("all", "input", "folds"), default="all",
                    help="measure one part; the other part's figures are kept from --out")
    ap.add_argument("--images", type=int, default=300, help="photos per set")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--fold-images", type=int, default=400, help="clothing subset for the fold run (0: skip it)")
    ap.add_argument("--fold-epochs", type=int, default=3)
    ap.add_argument("--fold-repeats", type=int, default=2, help="rounds of every fold mode, interleaved")
    ap.add_argument("--fold-modes", nargs="+", choices=list(FOLD_MODES), default=list(FOLD_MODES))
    ap.add_argument("--fold-size", type=int, default=128)
    clothing_arguments(ap, work="retag-bench-input", out="input_pipeline.json")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(1)  # per core: one process, one thread
    os.environ["MLCORE_CACHE_DIR"] = str(args.work / "mlcore-cache")
    load_before = os.getloadavg()
    result = json.loads((RESULTS / args.out).read_text()) if args.only != "all" else {}
    if args.only in ("all", "input"):
        new = input_figures(args)
        result.update({k: v for k, v in new.items() if k not in ("details", "setup")})
        for k in ("details", "setup"):
            result[k] = {**result.get(k, {}), **new[k]}
    if args.only in ("all", "folds") and args.fold_images:
        folds = run_folds(args)
        result.update(fold_figures(folds, args))
        result.setdefault("details", {})["folds"] = folds
        result.setdefault("setup", {}).update(
            fold_run=f"K=4 fold runs of mobilenet_v2 (shared ImageNet weights), frozen backbone, {args.fold_images} "
                     f"clothing subset images, {args.fold_epochs} epochs, {args.fold_size} px, CPU, one thread, "
                     f"folds one after the other; before = {FOLD_MODES['uncached']}; after = {FOLD_MODES['shared']}",
            fold_modes=FOLD_MODES, fold_repeats=args.fold_repeats)
    result["contention" if args.only == "all" else f"contention_{args.only}"] = {
        "load_average_before": load_before, "load_average_after": os.getloadavg(),
        "note": "a 2-core machine shared with other engineers' tests and workers; absolute "
                "images/s and seconds move with their load, the ratios are measured within each round"}
    result["machine"] = machine_info("cpu")
    result["command"] = "bench/input_pipeline.py " + " ".join(sys.argv[1:] if argv is None else argv)
    print_table([(k, v) for k, v in result.items() if not isinstance(v, dict)], "Input pipeline")
    write_result(args.out, result)
    return 0


def input_figures(args) -> dict:
    """The loader's images/s against the bare-decode ceiling, on the photos and the large JPEGs."""
    photos, large = prepare_photos(args.data, args.work, args.images)
    res = input_rounds({"photos": photos, "large": large}, args.size, args.batch_size, args.rounds)
    med = res["median"]

    def ceiling(name):
        m = med[name]
        return max(m["pillow"], m["simplejpeg"] or 0.0)

    return {
        "cores": os.cpu_count(),
        "photos_images_per_s": med["photos"]["mlcore"],
        "photos_ceiling_images_per_s": ceiling("photos"),
        "large_images_per_s": med["large"]["mlcore"],
        "large_ceiling_images_per_s": ceiling("large"),
        "ratio_large": med["large"]["ratio"],
        "ratio_photos": med["photos"]["ratio"],
        "large_images_per_s_cpu_normalise": med["large"]["mlcore_cpu_normalise"],
        "photos_images_per_s_cpu_normalise": med["photos"]["mlcore_cpu_normalise"],
        "ratio_large_cpu_normalise": med["large"]["ratio_cpu_normalise"],
        "large_images_per_s_old_path": med["large"]["legacy"],
        "photos_images_per_s_old_path": med["photos"]["legacy"],
        "input_measures": "mlcore: dataset items (read, reduced decode, seeded crop + resize, uint8) collated into "
                          "the batch the loader hands the step, the CPU work per image when the device is a GPU "
                          "(to_input then runs there); *_cpu_normalise adds to_input on the CPU (a CPU device); "
                          "old_path: full decode + torchvision float transforms, as before this change",
        "details": {"input_rounds": res["rounds"], "input_median": med},
        "setup": {"per_core": "one process, torch.set_num_threads(1), DataLoader workers=0",
                  "input": f"ImageDataset(train_crop({args.size})) + collate [+ to_input], batch {args.batch_size}, "
                           f"{args.images} files per set, each batch timed for every contender in turn",
                  "ceiling": "max(Pillow draft + resize, simplejpeg scaled decode + Pillow resize), same bytes, "
                             "same process, interleaved",
                  "large": "clothing photos upscaled to 1600x1200, JPEG q90",
                  "rounds": args.rounds},
    }


if __name__ == "__main__":
    sys.exit(main())
