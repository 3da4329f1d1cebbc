"""Bench 1: ResNet-18 from scratch on Fashion-MNIST on the CPU, through mlcore's training loop.

Reads the IDX .gz files straight into tensors (no PNGs), trains with mlcore.train.fit on
the 60k training images and reports test accuracy on the 10k test images.

    .venv/bin/python bench/train_fashion_mnist.py --epochs 12
"""
from __future__ import annotations

import argparse
import gzip
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import machine_info, print_table, shared_data, write_result  # noqa: E402
from mlcore.data import TensorImages  # noqa: E402
from mlcore.evaluate import classification_metrics, infer  # noqa: E402
from mlcore.models import build_model  # noqa: E402
from mlcore.train import TrainConfig, fit  # noqa: E402

CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
           "Ankle boot"]


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (gzip) as a numpy array: magic, dims, then big-endian sizes, then uint8 data."""
    data = gzip.open(path, "rb").read()
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load(root: Path, kind: str):
    return (torch.from_numpy(read_idx(root / f"{kind}-images-idx3-ubyte.gz").copy()),
            read_idx(root / f"{kind}-labels-idx1-ubyte.gz").astype(np.int64))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--no-maxpool", action="store_true", help="drop the stem max-pool (4x the compute)")
    ap.add_argument("--fp32", action="store_true", help="no bf16 autocast on the CPU")
    ap.add_argument("--limit", type=int, default=0, help="use only this many training images (smoke test)")
    ap.add_argument("--data", type=Path, default=shared_data() / "fashion-mnist")
    ap.add_argument("--out", default="train_fashion_mnist.json")
    args = ap.parse_args(argv)

    xtr, ytr = load(args.data, "train")
    xte, yte = load(args.data, "t10k")
    if args.limit:
        xtr, ytr = xtr[:args.limit], ytr[:args.limit]
    train_set = TensorImages(xtr, ytr, pad=2, mean=0.286, std=0.353)
    test_set = TensorImages(xte, yte, pad=0, mean=0.286, std=0.353)
    tasks = {"label": CLASSES}
    config = TrainConfig(arch="resnet18", small_input=True, maxpool=not args.no_maxpool, epochs=args.epochs,
                         batch_size=args.batch_size, lr=args.lr, weight_decay=5e-4, warmup_epochs=0.5,
                         label_smoothing=0.1, class_weights="none", device="cpu", amp=not args.fp32,
                         channels_last=True, workers=0, seed=0)
    model = build_model("resnet18", 10, small_input=True, maxpool=not args.no_maxpool)

    last = {"step": 0}

    def progress(p):
        if p["phase"] == "train" and (p["step"] // 50 != last["step"] // 50 or p["step"] == p["steps"]):
            print(f"epoch {p['epoch']}/{p['epochs']} step {p['step']}/{p['steps']} loss {p['loss']:.4f} "
                  f"{p['images_per_s']:.0f} img/s eta {p['eta_s'] / 60:.1f} min", flush=True)
        last["step"] = p["step"]

    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        config.output_uri = tmp  # checkpoints only
        result = fit(config, model, tasks, train_set, np.arange(len(train_set)), test_set,
                     np.arange(len(test_set)), progress=progress)
    wall = time.time() - t0
    res = infer(model, test_set, np.arange(len(test_set)), device=torch.device("cpu"), batch_size=512,
                amp=config.amp, channels_last=True)
    m = classification_metrics(yte[res["index"]], res["probs"]["label"].argmax(1), CLASSES)
    for h in result["history"]:
        print(f"epoch {h['epoch']}: train loss {h['train_loss']:.4f} acc {h['train_accuracy']:.4f} "
              f"test acc {h.get('val_accuracy', float('nan')):.4f} F1 {h.get('val_macro_f1', float('nan')):.4f} "
              f"{h['images_per_s']:.0f} img/s", flush=True)
    out = {
        "test_accuracy": m["accuracy"], "test_macro_f1": m["macro"]["f1"], "epochs": result["epochs_run"],
        "wall_s": round(wall, 1), "train_s": round(result["train_s"], 1),
        "images_per_s": round(result["images_per_s"], 1),
        "train_images": len(train_set), "test_images": len(test_set),
        "model": "resnet18, 3x3 stride-1 stem" + ("" if args.no_maxpool else " + max-pool") + ", 3-channel grey",
        "recipe": {"optimizer": "SGD nesterov m=0.9", "lr": args.lr, "batch_size": args.batch_size,
                   "weight_decay": 5e-4, "schedule": "0.5 epoch warm-up + cosine", "label_smoothing": 0.1,
                   "augment": "shift +-2 px, horizontal flip", "bf16_autocast": config.amp,
                   "channels_last": True},
        "history": result["history"],
        "machine": machine_info("cpu"),
    }
    print_table([("test accuracy", out["test_accuracy"]), ("epochs", out["epochs"]), ("wall s", out["wall_s"]),
                 ("train images/s", out["images_per_s"])], "Fashion-MNIST, ResNet-18 from scratch, CPU")
    write_result(args.out, out)


if __name__ == "__main__":
    main()
