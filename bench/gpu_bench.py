"""Bench: can mlcore's input path keep a GPU fed? Needs only torch, torchvision, numpy and Pillow.

On one GPU, ResNet-50 (mlcore's builder), 224 px, bf16 autocast, channels_last, SGD:
  synthetic_images_per_s   training steps on one fixed batch already on the GPU: the model's ceiling
  jpeg_images_per_s        the same steps fed from real JPEGs through mlcore's loader
                           (ImageDataset + train_crop: reduced-size decode, seeded crop, uint8
                           batches; DataLoader workers on all cores; to_input on the GPU)
  loader_only_images_per_s mlcore's loader to the GPU input tensor, no model: what the CPUs can feed
The gap between jpeg and synthetic is bound by the loader when loader_only < synthetic
(``bound`` in the JSON says which). JPEGs: the clothing zip (``../shared/data/clothing``)
unpacked to a temporary folder, or ``--images DIR|ZIP``; the files cycle for as many steps
as asked. Writes ``bench/results/gpu.json``.

Without CUDA it exits with status 2 and says so. ``--cpu-smoke`` runs the same code on
the CPU with a tiny setting (32 px, batch 2, 1 step after 1 warm-up, 8 images) to check that the path
works anywhere; it prints its figures and writes nothing unless ``--out`` is given.

    python bench/gpu_bench.py [--batch-size 256] [--steps 50] [--workers N] [--images PATH]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from bench.common import machine_info, print_table, shared_data  # noqa: E402  (stdlib only)


def jpeg_files(path: Path, limit: int, work: Path) -> list[Path]:
    """Up to ``limit`` JPEG files: those of a folder, or of a zip (or a folder's first zip) unpacked to ``work``."""
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg"))[:limit]
        if files:
            return files
        zips = sorted(path.glob("*.zip"))
        if not zips:
            raise FileNotFoundError(f"no JPEGs or zip in {path}")
        path = zips[0]
    work.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path) as z:
        names = sorted(n for n in z.namelist() if n.lower().endswith((".jpg", ".jpeg")))[:limit]
        out = []
        for n in names:
            p = work / Path(n).name
            if not p.exists():
                p.write_bytes(z.read(n))
            out.append(p)
    if not out:
        raise FileNotFoundError(f"no JPEGs in {path}")
    return out


def _loader(files: list[Path], size: int, batch: int, steps: int, workers: int, device):
    import numpy as np
    from torch.utils.data import DataLoader

    from mlcore import data, storage

    reps = -(-batch * steps // len(files))
    uris = [storage.to_uri(f) for f in files] * reps  # cycle the files for the steps asked
    ds = data.ImageDataset(uris, np.zeros(len(uris), dtype=np.int64), data.train_crop(size))
    sampler = data.EpochBatches(np.arange(len(uris)), batch, shuffle=True, seed=0, drop_last=True)
    return DataLoader(ds, batch_sampler=sampler, num_workers=workers, collate_fn=data.collate,
                      pin_memory=device.type == "cuda", persistent_workers=workers > 0,
                      prefetch_factor=4 if workers > 0 else None)


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run(files: list[Path], *, device_name: str, size: int, batch: int, steps: int, warmup: int,
        workers: int) -> dict:
    import torch
    import torch.nn.functional as F

    from mlcore.data import to_input
    from mlcore.device import autocast
    from mlcore.models import build_model

    device = torch.device(device_name)
    amp = channels_last = device.type == "cuda"
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(0)
    model = build_model("resnet50", 1000).to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step(x, y):
        with autocast(device, amp):
            _, logits = model(x)
            loss = F.cross_entropy(logits["label"].float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def timed(batches, fn) -> float:
        it = iter(batches)
        for _ in range(warmup):
            fn(next(it))
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(steps):
            fn(next(it))
        _sync(device)
        return batch * steps / (time.perf_counter() - t0)

    x0 = torch.randn(batch, 3, size, size, device=device)
    x0 = x0.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    y0 = torch.randint(0, 1000, (batch,), device=device)
    synthetic = timed(iter(lambda: None, 1), lambda _: step(x0, y0))

    def fed(b):
        step(to_input(b, device, channels_last), b["target"][:, 0].clamp(min=0).to(device, non_blocking=True))

    jpeg = timed(_loader(files, size, batch, steps + warmup, workers, device), fed)
    loader_only = timed(_loader(files, size, batch, steps + warmup, workers, device),
                        lambda b: to_input(b, device, channels_last))
    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "jpeg_images_per_s": jpeg,
        "synthetic_images_per_s": synthetic,
        "loader_only_images_per_s": loader_only,
        "jpeg_vs_synthetic": jpeg / synthetic,
        "bound": "loader (CPU decode)" if loader_only < 0.95 * synthetic else "model (GPU)",
        "max_memory_gb": torch.cuda.max_memory_allocated(device) / 1024**3 if device.type == "cuda" else None,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="DataLoader processes")
    ap.add_argument("--images", type=Path, default=shared_data() / "clothing",
                    help="folder of JPEGs, a zip of JPEGs, or a folder holding one (default: the clothing zip)")
    ap.add_argument("--limit", type=int, default=5000, help="JPEGs to read (they cycle)")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "retag-gpu-bench")
    ap.add_argument("--cpu-smoke", action="store_true", help="tiny run on the CPU: checks the code path, no figures")
    ap.add_argument("--out", type=Path, default=None, help="default: bench/results/gpu.json (none with --cpu-smoke)")
    args = ap.parse_args(argv)

    import torch

    if args.cpu_smoke:
        args.batch_size, args.steps, args.warmup, args.size, args.limit = 2, 1, 1, 32, 8
        args.workers = min(args.workers, 2)
        device = "cpu"
    elif not torch.cuda.is_available():
        print("gpu_bench: no CUDA device is available (torch.cuda.is_available() is False); nothing to measure. "
              "Run it on a GPU machine, or pass --cpu-smoke to check the code path on the CPU.", file=sys.stderr)
        return 2
    else:
        device = "cuda"
    files = jpeg_files(args.images, args.limit, args.work)
    result = run(files, device_name=device, size=args.size, batch=args.batch_size, steps=args.steps,
                 warmup=args.warmup, workers=args.workers)
    result.update({"batch_size": args.batch_size, "steps": args.steps, "image_size": args.size,
                   "loader_workers": args.workers, "jpegs": len(files), "jpeg_source": str(args.images),
                   "model": f"resnet50 {args.size}px" + (" bf16 autocast channels_last SGD" if device == "cuda"
                                                         else " fp32 (cpu smoke)"),
                   "cpu_smoke": args.cpu_smoke, "machine": machine_info(device)})
    print_table([(k, v) for k, v in result.items() if k != "machine"], "GPU bench" + (" (cpu smoke)" * args.cpu_smoke))
    out = args.out or (None if args.cpu_smoke else HERE / "results" / "gpu.json")
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
