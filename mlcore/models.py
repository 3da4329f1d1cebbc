"""Model builders: a torchvision backbone with one linear head per task.

Weights come from nothing (``weights=None``), from a torchvision weights name that is
already in the local torch hub cache (nothing is ever downloaded), or from a
state_dict file/URI loaded with ``weights_only=True``: either a torchvision-keyed
backbone (e.g. an ImageNet MobileNetV2 without classifier) or an mlcore ``model.pt``.
"""
from __future__ import annotations

import io
import os
from pathlib import Path

import torch
from torch import nn

from . import storage
from .config import ARCHS


class Net(nn.Module):
    """``backbone`` (pooled features) + ``heads[task]`` (linear). ``forward`` returns
    ``(features, {task: logits})`` so one pass gives predictions and embeddings."""

    def __init__(self, backbone: nn.Module, feature_dim: int, num_classes: dict[str, int]):
        super().__init__()
        self.backbone = backbone
        self.feature_dim = feature_dim
        self.heads = nn.ModuleDict({t: nn.Linear(feature_dim, n) for t, n in num_classes.items()})

    def forward(self, x):
        f = self.backbone(x)
        return f, {t: h(f) for t, h in self.heads.items()}


def _backbone(arch: str, small_input: bool, maxpool: bool) -> tuple[nn.Module, int]:
    import torchvision

    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; choose from {ARCHS}")
    m = getattr(torchvision.models, arch)(weights=None)
    if arch.startswith("resnet"):
        dim = m.fc.in_features
        m.fc = nn.Identity()
        if small_input:  # 28-64 px inputs: a 3x3 stride-1 stem keeps spatial detail
            m.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        if not maxpool:
            m.maxpool = nn.Identity()
    else:
        dim = m.classifier[-1].in_features
        m.classifier = nn.Identity()
        if small_input:
            m.features[0][0].stride = (1, 1)
    return m, dim


def _hub_file(arch: str, name: str) -> Path:
    """The cached file of a torchvision weights name such as ``IMAGENET1K_V1``; never downloads."""
    import torchvision

    w = torchvision.models.get_model_weights(arch)
    enum_name = name.split(".")[-1]
    try:
        weights = w[enum_name] if enum_name != "DEFAULT" else w.DEFAULT
    except KeyError:
        raise ValueError(f"{arch} has no weights {name!r}; it has {[e.name for e in w]}") from None
    path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)
    if not path.exists():
        raise FileNotFoundError(
            f"weights {arch}/{weights.name} are not in the local cache ({path}); "
            "mlcore never downloads: copy the file there or pass a state_dict path")
    return path


def load_state_dict(uri: str, *, exact: bool = True) -> dict:
    """A state_dict from a path or URI, tensors only (``weights_only=True``), on the CPU.

    The path or URI is taken as the place that was checked (a run's weights are checked when
    the run is made and read later by a worker): it is not resolved again, and with
    ``exact`` the file opened must be exactly there, so a file swapped for a symlink since
    is refused (pass the real path, not one through a link).
    """
    data = storage.read_bytes(uri, exact=exact)
    sd = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    if isinstance(sd, dict) and "model" in sd and isinstance(sd["model"], dict):
        sd = sd["model"]  # an mlcore checkpoint
    return sd


def load_weights(model: Net, state_dict: dict) -> dict:
    """Load an mlcore state_dict (``backbone.*``/``heads.*``) or a torchvision-keyed one into the
    backbone. Heads load only when their shapes match. Returns what was loaded and ignored."""
    if any(k.startswith("backbone.") for k in state_dict):
        own = model.state_dict()
        use = {k: v for k, v in state_dict.items() if k in own and own[k].shape == v.shape}
        model.load_state_dict(use, strict=False)
        backbone_missing = [k for k in own if k.startswith("backbone.") and k not in use]
        if backbone_missing:
            raise ValueError(f"state_dict does not fit this backbone: {backbone_missing[:5]} ...")
        return {"loaded": len(use), "ignored": sorted(set(state_dict) - set(use))}
    own = model.backbone.state_dict()
    mismatched = [k for k, v in state_dict.items() if k in own and own[k].shape != v.shape]
    if mismatched:
        raise ValueError(f"state_dict shapes do not fit the backbone: {mismatched[:5]}")
    result = model.backbone.load_state_dict(state_dict, strict=False)
    if result.missing_keys:
        raise ValueError(f"state_dict lacks backbone weights: {result.missing_keys[:5]} ...")
    return {"loaded": len(state_dict) - len(result.unexpected_keys), "ignored": sorted(result.unexpected_keys)}


def build_model(arch: str, num_classes: dict[str, int] | int, weights: str | None = None,
                small_input: bool = False, maxpool: bool = True) -> Net:
    """A :class:`Net`; ``num_classes`` is an int (single task ``label``) or task -> count."""
    if isinstance(num_classes, int):
        num_classes = {"label": num_classes}
    backbone, dim = _backbone(arch, small_input, maxpool)
    model = Net(backbone, dim, num_classes)
    if weights:
        if "://" in weights or os.path.sep in weights or Path(weights).suffix in (".pt", ".pth"):
            sd = load_state_dict(weights)
        else:
            sd = torch.load(_hub_file(arch, weights), map_location="cpu", weights_only=True)
        load_weights(model, sd)
    return model


def set_backbone_trainable(model: Net, trainable: bool) -> None:
    for p in model.backbone.parameters():
        p.requires_grad_(trainable)


def load_run(run_uri: str, device: str | torch.device = "cpu") -> tuple[Net, dict]:
    """The trained model of a run folder/prefix (``run.json`` + ``model.pt``), in eval mode."""
    import json

    run = json.loads(storage.read_bytes(storage.join(run_uri, "run.json")))
    cfg = run["config"]
    model = build_model(cfg["arch"], {t: len(v) for t, v in run["tasks"].items()},
                        small_input=cfg.get("small_input", False), maxpool=cfg.get("maxpool", True))
    model.load_state_dict(load_state_dict(storage.join(run_uri, "model.pt"), exact=False))
    return model.to(device).eval(), run
