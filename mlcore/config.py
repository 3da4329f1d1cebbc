"""The training options, declared once: :class:`TrainConfig` and what each field accepts.

Every field carries its help, and where it has them its bounds and choices, in its
``metadata``; ``app`` says whether a Retag user may set it ("basic": on the start-run
form and filled in with its default on every run, "advanced": accepted when given,
absent: the app sets it or it is for the command line only). Everything else reads this:
the command line (:func:`add_arguments`), the web app's config check (:func:`check`), its
start-run form, its API and its ``manage.py train``. Plain Python, no torch, so that a web
process can validate a config without loading it.
"""
from __future__ import annotations

import argparse
import typing
from dataclasses import MISSING, dataclass, field, fields

ARCHS = ("resnet18", "resnet34", "resnet50", "resnet101", "mobilenet_v2")  # what mlcore.models builds
OPTIMIZERS = ("sgd", "adamw")
CLASS_WEIGHTS = ("inverse", "none")


def option(default, help: str = "", *, min=None, max=None, choices=None, app: str | None = None,
           flag: tuple[str, str] = ()):
    """A TrainConfig field with what it accepts: ``min``/``max`` for numbers, ``choices``,
    ``app`` ("basic", "advanced" or None, see the module docstring), ``flag``: the command
    line's switch that turns a default-on field off, and its help (``--no-maxpool``, ...)."""
    meta = {"help": help, "min": min, "max": max, "choices": choices, "app": app, "flag": flag}
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class TrainConfig:
    manifest_uri: str = option("", "manifest CSV: path, file:// or s3://")
    output_uri: str = option("", "run folder or s3:// prefix")
    labels: list | dict | None = option(None, "label order (task -> list for multi-facet)")
    arch: str = option("resnet18", "backbone", choices=ARCHS, app="basic")
    weights: str | None = option(None, "torchvision weights name in the local cache (e.g. IMAGENET1K_V1) "
                                       "or a state_dict path/URI", app="basic")
    freeze_backbone: bool = option(False, "train only the head(s); features fixed (BN in eval mode)", app="basic")
    cache_features: bool = option(True, "with a frozen backbone: run it once per image, not every epoch",
                                  flag=("--no-cache-features", "with --freeze-backbone: run the backbone every "
                                                               "epoch instead of once per image"))
    feature_views: int = option(0, "with cached features: augmented views per training image (0: the plain view)",
                                min=0)
    small_input: bool = option(False, "3x3 stride-1 stem for small (28-64 px) images", app="basic")
    maxpool: bool = option(True, "keep ResNet's stem max-pool", app="advanced",
                           flag=("--no-maxpool", "drop ResNet's stem max-pool"))
    image_size: int = option(224, "input side in pixels", min=16, max=1024, app="basic")
    epochs: int = option(10, "training epochs", min=1, max=1000, app="basic")
    batch_size: int = option(64, "images per training step", min=1, max=4096, app="basic")
    optimizer: str = option("sgd", "sgd (momentum, nesterov) or adamw", choices=OPTIMIZERS, app="advanced")
    lr: float | None = option(None, "learning rate (default: sgd 0.1 * batch/256, adamw 1e-3)", min=1e-8, max=10.0,
                              app="basic")
    momentum: float = option(0.9, "SGD momentum", min=0.0, max=1.0, app="advanced")
    weight_decay: float | None = option(None, "default: sgd 1e-4, adamw 0.05", min=0.0, max=1.0, app="advanced")
    warmup_epochs: float = option(1.0, "linear warm-up, then cosine to zero", min=0.0, max=100.0, app="advanced")
    label_smoothing: float = option(0.0, "cross-entropy label smoothing", min=0.0, max=0.5, app="advanced")
    class_weights: str = option("inverse", "loss weights: inverse (frequency) or none", choices=CLASS_WEIGHTS,
                                app="basic")
    val_fraction: float = option(0.0, "hold out this share of train if there is no val split", min=0.0, max=0.5,
                                 app="advanced")
    patience: int | None = option(None, "early stopping: epochs without a better validation macro-F1", min=0,
                                  max=1000, app="advanced")
    checkpoint_every: int = option(0, "also checkpoint every N steps (0: epoch ends only)", min=0, max=10**7,
                                   app="advanced")
    resume: bool = option(False, "continue from <output>/checkpoints/last.pt")
    seed: int = option(0, "seed of the data order, augmentation and initialisation", min=0, max=2**31 - 1,
                       app="advanced")
    device: str = option("auto", "auto, cpu, cuda, cuda:N")
    amp: bool | None = option(None, "bf16 autocast (default: on for CUDA)", app="advanced")
    channels_last: bool | None = option(None, "channels-last memory format (default: on for CUDA)")
    compile: bool = option(False, "torch.compile the model (CUDA)", app="advanced")
    workers: int | None = option(None, "data loader processes (default: by device)", min=0, max=64, app="advanced")
    prefetch_workers: int = option(16, "concurrent S3 downloads into the cache", min=1)
    eval_batch_size: int | None = option(None, "batch size of prediction and embedding", min=1, max=8192,
                                         app="advanced")
    tta_flip: bool = option(False, "predictions average each image and its left-right mirror (test-time flip; "
                                   "suspects folds do by default)", app="advanced")
    predict: bool = option(True, "write predictions, metrics and embeddings at the end",
                           flag=("--no-predict", "skip predictions, metrics and embeddings at the end"))
    stop_after_steps: int | None = option(None, "checkpoint and stop at this global step (exit status 3); "
                                                "continue later with --resume", min=1)
    gpus: int = option(1, "train with DistributedDataParallel in this many processes under torchrun, one per GPU "
                          "(on the CPU: gloo)", min=1, max=64, app="advanced")
    notes: dict = option({}, "free-form facts recorded in run.json")


@dataclass(frozen=True)
class Option:
    """One TrainConfig field as the schema describes it."""

    name: str
    kind: type            # int, float, bool or str (anything else is not set by a user)
    default: object
    nullable: bool
    help: str
    min: float | None
    max: float | None
    choices: tuple | None
    app: str | None
    flag: tuple[str, str]


def _options() -> dict[str, Option]:
    hints = typing.get_type_hints(TrainConfig)
    out = {}
    for f in fields(TrainConfig):
        args = typing.get_args(hints[f.name]) or (hints[f.name],)
        kinds = [a for a in args if a is not type(None)]
        kind = kinds[0] if len(kinds) == 1 and kinds[0] in (int, float, bool, str) else object
        default = f.default if f.default is not MISSING else f.default_factory()
        m = f.metadata
        out[f.name] = Option(f.name, kind, default, type(None) in args, m.get("help", ""), m.get("min"),
                             m.get("max"), m.get("choices"), m.get("app"), tuple(m.get("flag", ())))
    return out


OPTIONS: dict[str, Option] = _options()
USER_OPTIONS = tuple(n for n, o in OPTIONS.items() if o.app)        # what a Retag user may set
BASIC_OPTIONS = tuple(n for n, o in OPTIONS.items() if o.app == "basic")  # filled in on every run


def check_value(o: Option, value):
    """``value`` as option ``o`` takes it (numbers and switches from their text too), or
    ValueError with the rule it breaks, phrased for a person ("must be between 1 and 1000")."""
    if value is None and o.nullable:
        return None
    if o.choices is not None:
        if value not in o.choices:
            raise ValueError(f"unknown {o.name} {value!r}; choose one of {', '.join(o.choices)}")
        return value
    if o.kind is bool:
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "on", "off", "yes", "no"):
            value = value.lower() in ("true", "1", "on", "yes")
        if not isinstance(value, bool):
            raise ValueError("must be true or false")
        return value
    if o.kind in (int, float):
        if value is None or value == "":
            if o.nullable:
                return None
            raise ValueError("is required")
        try:
            if isinstance(value, bool):
                raise ValueError
            number = o.kind(value)
            if o.kind is int and float(value) != number:
                raise ValueError
        except (TypeError, ValueError):
            raise ValueError(f"must be {'an integer' if o.kind is int else 'a number'}") from None
        if (o.min is not None and number < o.min) or (o.max is not None and number > o.max):
            raise ValueError(f"must be {_range(o)}")
        return number
    return value


def _range(o: Option) -> str:
    if o.max is None:
        return f"at least {o.min:g}"
    if o.min is None:
        return f"at most {o.max:g}"
    return f"between {o.min:g} and {o.max:g}"


def check(config: dict) -> tuple[dict, dict[str, str]]:
    """Check each known field of ``config``: (the values as the options take them,
    {field: the rule it breaks}). Unknown keys are the caller's to refuse."""
    out, errors = dict(config), {}
    for name, value in config.items():
        if name in OPTIONS:
            try:
                out[name] = check_value(OPTIONS[name], value)
            except ValueError as e:
                errors[name] = str(e)
    return out, errors


def _cli_bool(s: str) -> bool:
    if s.lower() in ("1", "true", "yes", "on"):
        return True
    if s.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {s!r}")


def _cli_type(o: Option):
    def parse(text: str):
        try:
            return check_value(o, text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(f"{text!r}: {e}") from None
    parse.__name__ = o.kind.__name__  # argparse names the type in its messages
    return parse


def add_arguments(parser, names) -> None:
    """Add ``--name`` options for these TrainConfig fields to an argparse parser (the
    command line and ``manage.py train``); every option defaults to None (not given), so
    the caller passes on only what was given and TrainConfig keeps its defaults."""
    for name in names:
        o = OPTIONS[name]
        dest, flag = o.name, "--" + o.name.replace("_", "-")
        shown = f"{o.help} (default {o.default})" if o.help and o.default not in (None, "") else o.help
        if o.kind is bool and o.flag:
            parser.add_argument(o.flag[0], dest=dest, action="store_false", default=None, help=o.flag[1])
        elif o.kind is bool and o.default is False:
            parser.add_argument(flag, dest=dest, action="store_true", default=None, help=o.help)
        elif o.kind is bool:
            parser.add_argument(flag, dest=dest, type=_cli_bool, metavar="true|false", help=o.help)
        elif o.choices is not None:
            parser.add_argument(flag, dest=dest, choices=o.choices, help=shown)
        elif o.kind in (int, float):
            parser.add_argument(flag, dest=dest, type=_cli_type(o), help=shown)
        else:
            parser.add_argument(flag, dest=dest, help=shown)


def given(args, names=None) -> dict:
    """The TrainConfig fields an argparse namespace (or a dict of options) gave a value."""
    values = args if isinstance(args, dict) else vars(args)
    return {k: v for k, v in values.items() if k in (names or OPTIONS) and v is not None}
