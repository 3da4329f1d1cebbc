"""Bench 4: what a CUDA box can do for Retag. Needs only torch, torchvision, numpy and Pillow.

Measures, on one GPU:
  train_images_per_s   ResNet-50, 224 px, bf16 autocast, channels_last, SGD, synthetic batches
  embed_images_per_s   ResNet-50 forward (no grad), same settings
  decode_images_per_s  JPEG decode + resize to 224 with Pillow, all CPU cores (the data loader's job),
                       from the clothing zip (default ../shared/data/clothing) or --images DIR|ZIP
  matmul_tflops        bf16 8192x8192 matmul
and writes bench/results/gpu.json. Exits with status 2 and a clear message when no CUDA device is present
(``--decode-only`` runs just the CPU decode part, anywhere).

    python bench/gpu_bench.py [--batch-size 256] [--steps 30] [--images PATH] [--out PATH]
"""
from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
import zipfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from bench.common import machine_info, print_table, shared_data  # noqa: E402  (stdlib only)


def _jpegs(path: Path, limit: int) -> list[bytes]:
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg"))[:limit]
        return [p.read_bytes() for p in files]
    if path.is_file() and path.suffix == ".zip":
        with zipfile.ZipFile(path) as z:
            names = sorted(n for n in z.namelist() if n.lower().endswith((".jpg", ".jpeg")))[:limit]
            return [z.read(n) for n in names]
    zips = sorted(path.glob("*.zip")) if path.is_dir() else []
    if zips:
        return _jpegs(zips[0], limit)
    raise FileNotFoundError(f"no JPEGs in {path}")


def _decode_chunk(blobs: list[bytes]) -> int:
    from PIL import Image

    for b in blobs:
        img = Image.open(io.BytesIO(b))
        img.draft("RGB", (224, 224))  # what a fast loader does: let libjpeg scale while decoding
        img.convert("RGB").resize((224, 224))
    return len(blobs)


def decode_bench(path: Path, limit: int, workers: int) -> dict:
    blobs = _jpegs(path, limit)
    chunks = [blobs[i::workers] for i in range(workers)]
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(_decode_chunk, [c[:8] for c in chunks]))  # start the processes
        t0 = time.perf_counter()
        n = sum(pool.map(_decode_chunk, chunks))
        dt = time.perf_counter() - t0
    return {"decode_images_per_s": n / dt, "decode_images": n, "decode_workers": workers, "decode_source": str(path)}


def _timed(fn, steps: int, warmup: int = 5) -> float:
    import torch

    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    torch.cuda.synchronize()
    return time.perf_counter() - t0


def gpu_bench(batch_size: int, steps: int, compile_model: bool) -> dict:
    import torch
    import torch.nn.functional as F
    import torchvision

    dev = torch.device("cuda")
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    model = torchvision.models.resnet50(num_classes=1000).to(dev, memory_format=torch.channels_last)
    run_model = torch.compile(model) if compile_model else model
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch_size, 3, 224, 224, device=dev).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (batch_size,), device=dev)

    def train_step():
        with torch.amp.autocast(device_type="cuda", dtype=torch.bfloat16):
            loss = F.cross_entropy(run_model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    train_s = _timed(train_step, steps)
    model.eval()

    @torch.no_grad()
    def embed_step():
        with torch.amp.autocast(device_type="cuda", dtype=torch.bfloat16):
            run_model(x)

    embed_s = _timed(embed_step, steps)
    n = 8192
    a = torch.randn(n, n, device=dev, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=dev, dtype=torch.bfloat16)
    mm_steps = 50
    mm_s = _timed(lambda: a @ b, mm_steps)
    return {
        "device": torch.cuda.get_device_name(dev),
        "train_images_per_s": batch_size * steps / train_s,
        "embed_images_per_s": batch_size * steps / embed_s,
        "matmul_tflops": 2 * n**3 * mm_steps / mm_s / 1e12,
        "max_memory_gb": torch.cuda.max_memory_allocated(dev) / 1024**3,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--compile", action="store_true", help="torch.compile ResNet-50 first")
    ap.add_argument("--images", type=Path, default=shared_data() / "clothing",
                    help="folder of JPEGs, a zip of JPEGs, or a folder holding one (default: the clothing zip)")
    ap.add_argument("--decode-limit", type=int, default=2000)
    ap.add_argument("--decode-workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--decode-only", action="store_true", help="only the CPU decode part (no GPU needed)")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "gpu.json")
    args = ap.parse_args(argv)

    import torch

    if not args.decode_only and not torch.cuda.is_available():
        print("gpu_bench: no CUDA device is available (torch.cuda.is_available() is False); nothing to measure. "
              "Run it on a GPU machine, or pass --decode-only for the CPU decode figure.", file=sys.stderr)
        return 2
    result = {}
    if not args.decode_only:
        result.update(gpu_bench(args.batch_size, args.steps, args.compile))
    result.update(decode_bench(args.images, args.decode_limit, args.decode_workers))
    result.update({"batch_size": args.batch_size, "steps": args.steps, "compile": args.compile,
                   "model": "resnet50 224px bf16 autocast channels_last",
                   "machine": machine_info("cuda" if not args.decode_only else "cpu")})
    print_table([(k, v) for k, v in result.items() if k != "machine"], "GPU bench")
    if args.decode_only:
        print(json.dumps(result, indent=1))
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
