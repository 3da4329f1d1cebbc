"""A run's config: the app's check of mlcore's training options (mlcore.config declares
them: types, bounds, choices, which a user may set), the weights it may start from, and
the config the start form shows first."""
from __future__ import annotations

import os

from django.conf import settings

from mlcore import storage
from mlcore.config import ARCHS, BASIC_OPTIONS, OPTIONS, USER_OPTIONS, check

from ...models import Image, ImageStatus, Task
from ..storage_roots import SourceRefused, check_allowed

__all__ = ["ARCHS", "DEFAULTS", "KNOWN", "RunConfigError", "canonical_weights_uri", "check_weights",
           "default_config", "validate_config"]

KNOWN = frozenset(USER_OPTIONS)                                # the fields a run's config may hold
DEFAULTS = {name: OPTIONS[name].default for name in BASIC_OPTIONS}  # filled in on every run


class RunConfigError(ValueError):
    """A config (or task) a run cannot start with; ``errors`` maps field -> message."""

    def __init__(self, errors: dict[str, str]):
        self.errors = errors
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))


def default_config(task: Task) -> dict:
    """The config the start-run form shows first: mlcore's defaults, and for small images
    (Fashion-MNIST's 28 px) their own size with mlcore's small-input stem."""
    config = dict(DEFAULTS)
    sizes = list(Image.objects.filter(project_id=task.project_id, status=ImageStatus.OK, width__isnull=False)
                 .values_list("width", "height")[:200])
    if sizes:
        side = max(max(w or 0, h or 0) for w, h in sizes)
        if 0 < side <= 64:
            config.update(image_size=max(16, side), small_input=True)
    return config


def validate_config(config: dict | None, *, task: Task | None = None) -> dict:
    """The complete, checked config (defaults filled in), or :class:`RunConfigError`.

    Checked here, before anything is queued, so that a bad config is a 400 / a form error
    and never a failed run: known fields only, each value by its rule in mlcore.config
    (numbers in range, switches, choices such as the architecture), and the weights: none,
    a torchvision weights name already in the local torch hub cache, or a state_dict URI
    inside an allowed storage root (or Retag's own storage, e.g. an earlier run's model.pt)
    that exists.
    """
    if config is not None and not isinstance(config, dict):
        raise RunConfigError({"config": "must be an object"})
    given = dict(config or {})
    errors: dict[str, str] = {}
    unknown = sorted(set(given) - KNOWN)
    if unknown:
        errors["config"] = f"unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(KNOWN))}"
    out, field_errors = check({**(default_config(task) if task is not None else DEFAULTS),
                               **{k: v for k, v in given.items() if k in KNOWN}})
    errors.update(field_errors)
    if "arch" not in errors:
        weights_error = check_weights(out["arch"], out.get("weights"))
        if weights_error:
            errors["weights"] = weights_error
        elif out.get("weights"):
            out["weights"] = str(out["weights"]).strip()
        else:
            out["weights"] = None
    if errors:
        raise RunConfigError(errors)
    return out


def check_weights(arch: str, weights) -> str | None:
    """Why ``weights`` cannot be used, or None. Never downloads anything."""
    if weights in (None, ""):
        return None
    if not isinstance(weights, str):
        return "must be a URI or a torchvision weights name"
    weights = weights.strip()
    if "://" in weights or "/" in weights or weights.endswith((".pt", ".pth")):
        try:
            uri = canonical_weights_uri(weights)
        except SourceRefused as e:
            return e.reason
        try:
            if not storage.exists(uri):
                return f"{weights} does not exist"
        except Exception as e:  # noqa: BLE001 - S3 errors, permissions: the user must hear why
            return f"{weights} cannot be read: {e}"
        return None
    try:  # a torchvision weights name, e.g. IMAGENET1K_V1: only if already in the local cache
        from mlcore.models import _hub_file

        _hub_file(arch, weights)
    except (ValueError, FileNotFoundError) as e:
        return str(e)
    return None


def canonical_weights_uri(weights: str) -> str:
    """Weights may come from an allowed storage root or from Retag's own storage."""
    try:
        return check_allowed(weights)
    except SourceRefused:
        own = settings.STORAGE_URI.rstrip("/") + "/"
        uri = storage.to_uri(weights) if not storage.is_s3(weights) else weights
        if storage.is_s3(uri):
            if uri.startswith(own) and ".." not in uri.split("/"):
                return uri
        elif not storage.is_s3(own):
            path = os.path.realpath(storage.local_path(uri))
            root = os.path.realpath(storage.local_path(own))
            if path.startswith(root.rstrip("/") + "/"):
                return storage.to_uri(path)
        raise
