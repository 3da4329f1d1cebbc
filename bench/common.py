"""Shared helpers for the benchmarks: where the shared data is, and what machine ran them.

Imports only the standard library (and torch lazily), so that GPU boxes with nothing but
torch can run the scripts that use it.
"""
from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"


def shared_data() -> Path:
    """``RETAG_SHARED_DATA``, default ``<repo>/../shared/data``."""
    return Path(os.environ.get("RETAG_SHARED_DATA") or REPO.parent / "shared" / "data")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                return round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    return None


def machine_info(device: str | None = None) -> dict:
    """CPU model, cores, memory, Python/torch versions and the device a bench ran on."""
    info = {"cpu": _cpu_model(), "cores": os.cpu_count(), "memory_gb": _memory_gb(),
            "python": platform.python_version(), "platform": platform.platform()}
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if str(device).startswith("cuda") and torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
            info["cuda"] = torch.version.cuda
    except ImportError:
        info["torch"] = None
    info["device"] = device or "cpu"
    return info


def print_table(rows: list[tuple[str, object]], title: str = "") -> None:
    if title:
        print(title)
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        v = f"{v:,.3f}" if isinstance(v, float) else v
        print(f"  {k:<{width}}  {v}")


def write_result(name: str, result: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / name
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {path}", file=sys.stderr)
    return path
