"""A suspects run's configuration: the fields, their defaults and the rule that checks them."""
from __future__ import annotations

DEFAULTS = {"k": 4, "fold_epochs": None, "method": "fused", "cluster_threshold": None, "knn": 10,
            "duplicate_threshold": 0.97, "core_share": None, "decision": None, "embeddings": "folds", "flip": True}
# embeddings: "folds" (kNN and clusters of each image in the fold model that held it out: never
# saw its label) or "run" (the main run's, which trained on every label). decision None:
# mlcore.suspects.DEFAULT_DECISION. flip: the folds' held-out probabilities average each image
# and its mirror (mlcore.folds.fold_configs). The defaults: bench/suspects_cifar10n.py.
EMBEDDINGS = ("folds", "run")
NUMBERS = {"k": int, "knn": int, "fold_epochs": int, "cluster_threshold": float, "duplicate_threshold": float,
           "core_share": float}


class SuspectError(ValueError):
    """A suspects run cannot start (run not done, bad config...)."""


def validate_config(config: dict | None) -> dict:
    """``config`` with the defaults filled in and every value coerced, or :class:`SuspectError`."""
    given = dict(config or {})
    unknown = sorted(set(given) - set(DEFAULTS))
    if unknown:
        raise SuspectError(f"unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(DEFAULTS))}")
    out = {**DEFAULTS, **{k: v for k, v in given.items() if v not in ("",)}}
    from mlcore.config import OPTIONS, Option, check_value

    # Numbers are checked as training options are: an integer is not true or 1.5, and a message
    # names the field and the rule, never the value. The ranges follow.
    for name, kind in NUMBERS.items():
        o = Option(name, kind, DEFAULTS[name], DEFAULTS[name] is None, "", None, None, None, None, ())
        try:
            out[name] = check_value(o, out[name])
        except ValueError as e:
            raise SuspectError(f"{name} {e}") from None
    if not 2 <= out["k"] <= 20:
        raise SuspectError("k (folds) must be between 2 and 20")
    if out["fold_epochs"] is not None and not 1 <= out["fold_epochs"] <= 1000:
        raise SuspectError("fold_epochs must be between 1 and 1000")
    if not 1 <= out["knn"] <= 100:
        raise SuspectError("knn must be between 1 and 100")
    if out["cluster_threshold"] is not None and not 0 < out["cluster_threshold"] <= 2:  # also NaN
        raise SuspectError("cluster_threshold is a cosine distance in (0, 2]")
    if not 0 < out["duplicate_threshold"] <= 1:
        raise SuspectError("duplicate_threshold must be in (0, 1]")
    from mlcore.suspects import DECISIONS, METHODS

    if out["core_share"] is not None and not 0.5 <= out["core_share"] < 1:
        raise SuspectError("core_share must be in [0.5, 1)")
    if out["method"] not in METHODS:
        raise SuspectError(f"unknown method {out['method']!r}; choose one of {', '.join(METHODS)}")
    if out["decision"] not in (None, *DECISIONS):
        raise SuspectError(f"unknown decision {out['decision']!r}; choose one of {', '.join(DECISIONS)}")
    try:
        out["flip"] = check_value(OPTIONS["tta_flip"], out["flip"])  # it is the fold runs' tta_flip
    except ValueError as e:
        raise SuspectError(f"flip {e}") from None
    if out["embeddings"] not in EMBEDDINGS:
        raise SuspectError(f"unknown embeddings {out['embeddings']!r}; choose one of {', '.join(EMBEDDINGS)}")
    return out
