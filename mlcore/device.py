"""Where a run computes and how its data gets there: the device, its defaults, the loader's workers.

One small module that training, evaluation, embedding and feature extraction all read, so
that each of them picks the same device, autocast and loader defaults for the same config.
"""
from __future__ import annotations

import contextlib
import os
import platform

import torch


def resolve_device(name: str) -> torch.device:
    """``auto``: CUDA when there is one, else the CPU; anything else as torch spells it."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def default_workers(device: torch.device) -> int:
    """DataLoader processes when the config names none: a GPU wants many decoders, a small CPU none."""
    cpus = os.cpu_count() or 1
    if device.type == "cuda":
        return min(16, cpus)
    return 0 if cpus <= 2 else min(4, cpus // 2)


def amp_default(amp: bool | None, device: torch.device) -> bool:
    """bf16 autocast unless said otherwise: on for CUDA, off on the CPU."""
    return amp if amp is not None else device.type == "cuda"


def channels_last_default(channels_last: bool | None, device: torch.device) -> bool:
    """NHWC memory unless said otherwise: on for CUDA (tensor cores want it), off on the CPU."""
    return channels_last if channels_last is not None else device.type == "cuda"


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast on ``device`` when ``enabled``, else a no-op context."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.amp.autocast(device_type=device.type, dtype=torch.bfloat16)


def environment(device: torch.device) -> dict:
    """What run.json records of the machine a run trained on."""
    import torchvision

    env = {"python": platform.python_version(), "torch": torch.__version__,
           "torchvision": torchvision.__version__, "platform": platform.platform(),
           "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "device": str(device)}
    if device.type == "cuda":
        env["device_name"] = torch.cuda.get_device_name(device)
        env["cuda"] = torch.version.cuda
    return env
