"""``python -m mlcore train|test|predict|embed|plot|suspects|clean``: the ML core from the command line."""
from __future__ import annotations

import argparse
import json
import sys
import time

from .config import OPTIONS, add_arguments, given


class ProgressBar:
    """A one-line text progress bar on stderr, fed by the progress callback."""

    def __init__(self, stream=sys.stderr):
        self.stream, self.last = stream, None

    def __call__(self, p: dict) -> None:
        width = 30
        done = int(width * p["step"] / max(1, p["steps"]))
        loss = f" loss {p['loss']:.4f}" if p.get("loss") is not None else ""
        epoch = f"epoch {p['epoch']}/{p['epochs']} " if p.get("epochs") else ""
        line = (f"\r{p['phase']:<5} {epoch}[{'#' * done}{'.' * (width - done)}] {p['step']}/{p['steps']}"
                f"{loss} {p['images_per_s']:.0f} img/s eta {_fmt(p['eta_s'])}")
        self.stream.write(line.ljust(100))
        if p["step"] == p["steps"]:
            self.stream.write("\n")
        self.stream.flush()


def _fmt(seconds: float) -> str:
    seconds = int(seconds or 0)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def _labels(args):
    from .data import load_labels_file

    if args.labels_file:
        return load_labels_file(args.labels_file)
    if args.labels:
        return [s.strip() for s in args.labels.split(",") if s.strip()]
    return None


def cmd_train(args) -> int:
    from .train import Cancelled, TrainConfig, train

    cfg = TrainConfig(**given(args))
    cfg.labels = _labels(args)
    t0 = time.time()
    try:
        run = train(cfg, progress=None if args.quiet else ProgressBar())
    except Cancelled as e:
        print(f"\nstopped: {e}; continue with --resume", file=sys.stderr)
        return 3
    summary = {"output": cfg.output_uri, "metrics": run["metrics"], "skipped": len(run["skipped"]),
               "epochs": len(run["history"]), "wall_s": round(time.time() - t0, 1)}
    print(json.dumps(summary, indent=1))
    return 0


def cmd_test(args) -> int:
    from .evaluate import test_run

    out = test_run(args.run, args.manifest, args.output, device=args.device, batch_size=args.batch_size,
                   progress=None if args.quiet else ProgressBar())
    m = out["metrics"]
    short = ({s: {"accuracy": v["accuracy"], "macro_f1": v["macro"]["f1"]} for s, v in m.items()}
             if "tasks" not in m else
             {t: {s: {"accuracy": v["accuracy"], "macro_f1": v["macro"]["f1"]} for s, v in d.items()}
              for t, d in m["tasks"].items()})
    print(json.dumps({"metrics": short, "skipped": out["skipped"]}, indent=1))
    return 0


def cmd_predict(args) -> int:
    from .evaluate import predict

    for item in predict(args.run, args.input, args.topk, device=args.device, batch_size=args.batch_size):
        print(json.dumps(item))
    return 0


def cmd_embed(args) -> int:
    from .embed import embed_run
    from .evaluate import list_images

    if args.manifest:
        from .data import read_manifest

        uris = read_manifest(args.manifest).uris
    else:
        uris = list_images(args.input)
    out = embed_run(args.run, uris, args.output, device=args.device, batch_size=args.batch_size,
                    progress=None if args.quiet else ProgressBar())
    print(json.dumps({"images": len(out["uri"]), "dim": int(out["emb"].shape[1]) if len(out["emb"]) else 0,
                      "output": args.output, "skipped": out["skipped"]}, indent=1))
    return 0


def cmd_plot(args) -> int:
    from .plot import plot_run

    print(plot_run(args.run, args.output))
    return 0


def cmd_suspects(args) -> int:
    from .suspects import score_run

    summary = score_run(args.run, args.output, oos_uri=args.oos, folds=args.folds or 0, fold_epochs=args.fold_epochs,
                        progress=None if args.quiet else ProgressBar(), method=args.method,
                        cluster_threshold=args.cluster_threshold, core_share=args.core_share, knn=args.knn,
                        decision=args.decision)
    print(json.dumps({k: v for k, v in summary.items() if k != "top"} | {"top": summary["top"][:10]}, indent=1))
    return 0


def cmd_clean(args) -> int:
    from .clean import autoclean
    from .train import TrainConfig

    cfg = TrainConfig(**given(args))
    cfg.labels = _labels(args)
    out = autoclean(cfg, rounds=args.rounds, threshold=args.threshold,
                    progress=None if args.quiet else ProgressBar())
    print(json.dumps({"rounds": [{k: r[k] for k in ("round", "excluded", "test_accuracy", "test_macro_f1")}
                                 for r in out["rounds"]], "stopped": out["stopped"], "final_run": out["final_run"],
                      "excluded": len(out["excluded"])}, indent=1))
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m mlcore", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train on a manifest, then predict, score and embed every image",
                       description="Train a model on a manifest (CSV: uri,split,label or one column per task). "
                                   "Writes model.pt, run.json, metrics.json, predictions.npz, embeddings.npz and "
                                   "checkpoints/ under --output.")
    t.add_argument("manifest_uri", metavar="MANIFEST", help="manifest CSV: path, file:// or s3://")
    t.add_argument("-o", "--output", dest="output_uri", required=True, help="run folder or s3:// prefix")
    t.add_argument("--labels", help="comma-separated label order (single task)")
    t.add_argument("--labels-file", help="JSON list, JSON {task: [labels]} or one label per line")
    add_arguments(t, [n for n in OPTIONS if n not in ("manifest_uri", "output_uri", "labels", "notes")])
    t.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=cmd_train)

    def common(sp, batch=64):
        sp.add_argument("--run", required=True, help="run folder or s3:// prefix (run.json + model.pt)")
        sp.add_argument("--device", default="auto")
        sp.add_argument("--batch-size", type=int, default=batch)

    s = sub.add_parser("test", help="score a trained run on a manifest",
                       description="Predict every image of a manifest with a trained run; write metrics.json, "
                                   "predictions.npz and embeddings.npz.")
    common(s)
    s.add_argument("--manifest", help="default: the manifest the run trained on")
    s.add_argument("-o", "--output", help="default: the run folder")
    s.add_argument("-q", "--quiet", action="store_true")
    s.set_defaults(func=cmd_test)

    s = sub.add_parser("predict", help="top-k labels for an image or a folder",
                       description="Print one JSON line per image: its top-k labels with probabilities.")
    common(s)
    s.add_argument("input", help="image path/URI, or a folder / s3:// prefix")
    s.add_argument("-k", "--topk", type=int, default=5)
    s.set_defaults(func=cmd_predict)

    s = sub.add_parser("embed", help="L2-normalised embeddings of images",
                       description="Write embeddings.npz (uri, emb) for a manifest's images or a folder's.")
    common(s)
    g = s.add_mutually_exclusive_group(required=True)
    g.add_argument("--manifest", help="embed the images of this manifest")
    g.add_argument("--input", help="embed an image, or a folder / s3:// prefix")
    s.add_argument("-o", "--output", required=True, help="folder or s3:// prefix for embeddings.npz")
    s.add_argument("-q", "--quiet", action="store_true")
    s.set_defaults(func=cmd_embed)

    s = sub.add_parser("plot", help="draw a run's loss and F1 curves to PNG",
                       description="Draw loss and validation F1/accuracy per epoch from run.json.")
    s.add_argument("--run", required=True)
    s.add_argument("-o", "--output", help="PNG path/URI (default: <run>/curves.png)")
    s.set_defaults(func=cmd_plot)

    s = sub.add_parser("suspects", help="rank images whose label is probably wrong",
                       description="Score every image of a finished run (out-of-sample probabilities + embedding "
                                   "clusters per class + kNN labels); write suspects.npz, clusters.npz and "
                                   "suspects.json to --out.")
    s.add_argument("--run", required=True, help="a finished run (predictions.npz + embeddings.npz)")
    s.add_argument("--oos", help="oos.npz (or its folder) with out-of-sample probabilities")
    s.add_argument("--folds", type=int, help="without --oos: train K fold models now for out-of-sample probabilities")
    s.add_argument("--fold-epochs", type=int, help="epochs of each fold run (default: the run's)")
    from .suspects import DECISIONS, DEFAULT_DECISION, METHODS
    s.add_argument("--method", default="fused", choices=METHODS)
    s.add_argument("--cluster-threshold", type=float, default=None,
                   help="complete-linkage cut, cosine distance (default: per class, from --core-share)")
    s.add_argument("--core-share", type=float, default=None,
                   help="share of each class in its core (default: 1 - the class's estimated error rate)")
    s.add_argument("--decision", default=DEFAULT_DECISION, choices=DECISIONS)
    s.add_argument("--knn", type=int, default=10)
    s.add_argument("--out", dest="output", required=True, help="folder or s3:// prefix")
    s.add_argument("-q", "--quiet", action="store_true")
    s.set_defaults(func=cmd_suspects)

    s = sub.add_parser("clean", help="automatic cleaning rounds: exclude class-cluster outliers and retrain",
                       description="Train, cluster each class's embeddings, exclude images outside the class core "
                                   "from the next training set (kept, never deleted), retrain; writes clean.json.")
    s.add_argument("manifest_uri", metavar="MANIFEST")
    s.add_argument("-o", "--output", dest="output_uri", required=True)
    s.add_argument("--rounds", type=int, default=3)
    s.add_argument("--threshold", type=float, default=None,
                   help="one complete-linkage cut (cosine distance) for every class; default: each class's cut "
                        "from the data (its core holds 1 - its estimated rate of label errors)")
    s.add_argument("--labels", help="comma-separated label order")
    s.add_argument("--labels-file")
    add_arguments(s, ["arch", "weights", "small_input", "image_size", "epochs", "batch_size", "lr", "seed", "device"])
    s.add_argument("-q", "--quiet", action="store_true")
    s.set_defaults(func=cmd_clean)
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
