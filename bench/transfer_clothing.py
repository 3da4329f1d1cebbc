"""Bench 3: transfer learning on real clothing photos, ImageNet MobileNetV2 vs the same net from scratch.

Data: the top-10-class subset of the clothing dataset with its published
train/validation/test split (``small_subset_splits.csv``; labels from its class folders).
The zip is read directly and the subset's JPEGs are written to a temporary folder outside
the repository (``--work``), then both runs go through ``mlcore.train.train`` from a manifest.

Same budget for both: same network (MobileNetV2), image size, epochs, batch size, optimizer
(AdamW, cosine); validation on the published validation split, scores on the test split.
  pretrained: ImageNet feature weights (torchvision keys), frozen backbone, head trained;
  scratch:    random init, whole network trained.

    .venv/bin/python bench/transfer_clothing.py --epochs 4 --image-size 128
"""
from __future__ import annotations

import argparse
import csv
import sys
import time
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import clothing_arguments, machine_info, print_table, write_result  # noqa: E402
from mlcore.train import TrainConfig, train  # noqa: E402

SPLITS = {"train": "train", "validation": "val", "test": "test"}


def prepare(root: Path, work: Path, limit: int = 0) -> tuple[Path, list[str]]:
    """Extract the subset's images and write a manifest; returns (manifest path, labels)."""
    rows = list(csv.DictReader(open(root / "small_subset_splits.csv")))
    if limit:
        rows = [r for i, r in enumerate(rows) if i % max(1, len(rows) // limit) == 0][:limit]
    work.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(root / "clothing_dataset_full_short224_q75.zip") as z:
        names = {Path(n).stem: n for n in z.namelist() if n.endswith(".jpg")}
        for r in rows:
            dest = work / f"{r['image']}.jpg"
            if not dest.exists():
                dest.write_bytes(z.read(names[r["image"]]))
    labels = sorted({r["small_class_dir"] for r in rows})
    manifest = work / "manifest.csv"
    with open(manifest, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["uri", "split", "label"])
        for r in rows:
            w.writerow([f"{r['image']}.jpg", SPLITS[r["small_split"]], r["small_class_dir"]])
    return manifest, labels


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--limit", type=int, default=0, help="use only about this many images (smoke test)")
    clothing_arguments(ap, work="retag-bench-clothing", out="transfer_clothing.json")
    args = ap.parse_args(argv)

    manifest, labels = prepare(args.data, args.work / "images", args.limit)
    common = dict(manifest_uri=str(manifest), labels=labels, arch="mobilenet_v2", image_size=args.image_size,
                  epochs=args.epochs, batch_size=args.batch_size, optimizer="adamw", lr=args.lr,
                  weight_decay=0.01, warmup_epochs=0.3, device="auto", seed=0)
    results = {}
    for name, extra in (("pretrained", dict(weights=str(args.weights), freeze_backbone=True)),
                        ("scratch", dict())):
        t0 = time.time()

        def progress(p, name=name):
            if p["step"] == p["steps"]:
                print(f"{name}: {p['phase']} epoch {p.get('epoch')}/{p.get('epochs')} "
                      f"{p['images_per_s']:.0f} img/s", flush=True)

        run = train(TrainConfig(output_uri=str(args.work / "runs" / name), **common, **extra), progress=progress)
        test = run["metrics"]["test"]
        results[name] = {"test_macro_f1": test["macro_f1"], "test_accuracy": test["accuracy"],
                         "val_macro_f1_per_epoch": [h.get("val_macro_f1") for h in run["history"]],
                         "train_images_per_s": run["timing"]["images_per_s"], "wall_s": round(time.time() - t0, 1),
                         "skipped": len(run["skipped"])}
        print(f"{name}: test macro-F1 {test['macro_f1']:.4f}, accuracy {test['accuracy']:.4f}", flush=True)

    out = {
        "pretrained_macro_f1": results["pretrained"]["test_macro_f1"],
        "scratch_macro_f1": results["scratch"]["test_macro_f1"],
        "runs": results,
        "setup": {"network": "mobilenet_v2", "image_size": args.image_size, "epochs": args.epochs,
                  "batch_size": args.batch_size, "optimizer": f"AdamW lr {args.lr} wd 0.01, warm-up + cosine",
                  "loss": "class-weighted cross-entropy (inverse frequency)",
                  "augment": "random resized crop (0.5-1), horizontal flip",
                  "pretrained": "ImageNet features (shared weights file), backbone frozen, head trained",
                  "scratch": "random init, all layers trained",
                  "data": "clothing small_subset_splits.csv: top-10 classes, published train/validation/test",
                  "labels": labels, "limit": args.limit or None},
        "machine": machine_info(),
    }
    print_table([("pretrained test macro-F1", out["pretrained_macro_f1"]),
                 ("scratch test macro-F1", out["scratch_macro_f1"])], "Transfer on clothing photos")
    write_result(args.out, out)


if __name__ == "__main__":
    main()
