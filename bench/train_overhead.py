"""Bench 2: mlcore's training-step throughput against a minimal plain PyTorch loop, same run, CPU.

Both train the same ResNet-18 (small-image stem) on the same in-memory 28x28 tensors with
the same batch size, optimizer and precision. The plain loop indexes a pre-stacked tensor;
mlcore goes through its whole loop (``mlcore.train.fit``: sampler, DataLoader, collate,
class-weighted loss, scheduler, stats, progress callback). Rounds alternate (mlcore, plain,
mlcore, plain ...) and each side's figure is its best round (the ``timeit`` convention: other
processes on a shared machine can only slow a round down); ``ratio`` is best over best, and the
median of the per-round ratios is reported beside it. mlcore is timed around the whole ``fit()``
call (set-up included).

    .venv/bin/python bench/train_overhead.py --rounds 8 --steps 8
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import machine_info, print_table, write_result  # noqa: E402
from mlcore.data import TensorImages  # noqa: E402
from mlcore.models import build_model  # noqa: E402
from mlcore.train import TrainConfig, fit  # noqa: E402


def plain_loop(model, x, y, batch_size, lr) -> tuple[float, float]:
    """The minimal loop: shuffle, slice, forward, loss, backward, step. Returns images per wall second
    and per CPU second of this process."""
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=1e-4)
    model.train()
    perm = torch.randperm(len(x))
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(0, len(x) - batch_size + 1, batch_size):
        idx = perm[i:i + batch_size]
        xb = x[idx].contiguous(memory_format=torch.channels_last)
        loss = F.cross_entropy(model(xb)[1]["label"], y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    n = len(x) // batch_size * batch_size
    return n / (time.perf_counter() - t0), n / (time.process_time() - c0)


def mlcore_loop(model, ds, batch_size, lr) -> tuple[float, float]:
    config = TrainConfig(epochs=1, batch_size=batch_size, lr=lr, warmup_epochs=0, device="cpu", workers=0,
                         amp=False, channels_last=True, class_weights="inverse")
    reports = []
    t0, c0 = time.perf_counter(), time.process_time()
    fit(config, model, {"label": [str(i) for i in range(10)]}, ds, np.arange(len(ds)), progress=reports.append)
    n = len(ds) // batch_size * batch_size
    return n / (time.perf_counter() - t0), n / (time.process_time() - c0)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--steps", type=int, default=8, help="training steps per measurement")
    ap.add_argument("--batch-size", type=int, default=64)
    args = ap.parse_args(argv)

    g = torch.Generator().manual_seed(0)
    n = args.steps * args.batch_size
    images = torch.randint(0, 256, (n, 28, 28), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 10, (n,), generator=g)
    ds = TensorImages(images, labels.numpy(), pad=0)  # no augmentation: the plain loop has none either
    x = torch.stack([ds[i]["image"] for i in range(n)]).contiguous()  # the same tensors, pre-stacked

    torch.manual_seed(0)
    model_m = build_model("resnet18", 10, small_input=True).to(memory_format=torch.channels_last)
    torch.manual_seed(0)
    model_p = build_model("resnet18", 10, small_input=True).to(memory_format=torch.channels_last)
    mlcore_loop(model_m, TensorImages(images[:2 * args.batch_size], labels[:2 * args.batch_size].numpy(), pad=0),
                args.batch_size, 0.05)  # warm-up both
    plain_loop(model_p, x[:2 * args.batch_size], labels[:2 * args.batch_size], args.batch_size, 0.05)

    m_ips, p_ips, m_cpu, p_cpu = [], [], [], []
    for r in range(args.rounds):
        for ips, cpu, fn in ((m_ips, m_cpu, lambda: mlcore_loop(model_m, ds, args.batch_size, 0.05)),
                             (p_ips, p_cpu, lambda: plain_loop(model_p, x, labels, args.batch_size, 0.05))):
            wall, per_cpu = fn()
            ips.append(wall)
            cpu.append(per_cpu)
        print(f"round {r + 1}: mlcore {m_ips[-1]:.1f} img/s, plain {p_ips[-1]:.1f} img/s, "
              f"ratio {m_ips[-1] / p_ips[-1]:.3f} (per CPU second: {m_cpu[-1] / p_cpu[-1]:.3f})", flush=True)
    ratios = [m / p for m, p in zip(m_ips, p_ips)]
    out = {
        "mlcore_images_per_s": round(max(m_ips), 2),
        "plain_images_per_s": round(max(p_ips), 2),
        "ratio": round(max(m_ips) / max(p_ips), 4),
        "ratio_median_of_rounds": round(statistics.median(ratios), 4),
        "ratio_per_cpu_second": round(statistics.median([m / p for m, p in zip(m_cpu, p_cpu)]), 4),
        "rounds": [{"mlcore": round(m, 2), "plain": round(p, 2), "mlcore_per_cpu_s": round(mc, 2),
                    "plain_per_cpu_s": round(pc, 2)} for m, p, mc, pc in zip(m_ips, p_ips, m_cpu, p_cpu)],
        "setup": {"model": "resnet18, 3x3 stride-1 stem + max-pool", "input": "3x28x28", "batch_size": args.batch_size,
                  "steps_per_round": args.steps, "precision": "fp32", "memory_format": "channels_last",
                  "optimizer": "SGD nesterov", "mlcore_timing": "wall time of the whole fit() call",
                  "statistic": "best round of each side; ratio = best mlcore / best plain",
                  "loadavg_at_end": Path("/proc/loadavg").read_text().split()[:3]},
        "machine": machine_info("cpu"),
    }
    print_table([("mlcore images/s (best)", out["mlcore_images_per_s"]),
                 ("plain images/s (best)", out["plain_images_per_s"]),
                 ("ratio (best/best)", out["ratio"]), ("ratio (median of rounds)", out["ratio_median_of_rounds"]), ("ratio per CPU second", out["ratio_per_cpu_second"])], "Training step overhead, CPU")
    write_result("train_overhead.json", out)


if __name__ == "__main__":
    main()
