"""Bench: mislabel detection (mlcore.suspects) against cleanlab, on Fashion-MNIST with injected noise.

For each noise setting (``sym10``, ``sym20``: symmetric 10% / 20%; ``classcond20``: 20%
flipped between similar classes, T-shirt/Pullover/Coat/Shirt and Sandal/Sneaker/Ankle boot)
it runs the whole pipeline through mlcore's public API on PNG files and manifests:

1. ``folds.out_of_sample``: main run on the noisy train set + K fold runs -> oos.npz;
2. ``suspects.score`` (the default: witnesses weighted by the data, cuts per class, cleanlab's
   rule; rows for each witness alone and the old fixed mixes) on the out-of-sample
   probabilities and the main run's embeddings;
   ``cleanlab.filter.find_label_issues`` (and cleanlab's self-confidence ranking for
   AUROC) on the same probabilities; precision / recall / F1 of the flagged set, precision
   at k (k = number of injected errors) and AUROC against the injected errors;
3. retrains after the flagged images are worked: every suggestion taken (``retrained``), or
   only those a reviewer agrees with: one who errs like the labellers (an independent draw of
   the same noise, ``reviewed_crowd``) or one who knows the truth (``reviewed``);
4. ``clean.autoclean`` from the main run;
and one model on the clean labels. Figures: test accuracy on the full 10,000 test images.

Budget (2 shared CPU cores): a stratified subset of ``--train-size`` train images, ``--epochs``
for main/retrained/clean/autoclean runs and ``--fold-epochs`` for the fold runs, ``--seeds``
seeds (the noise drawn, the fold assignment, the initial weights; means and spread). The
default ``--backbone frozen`` is the app's freeze_backbone run on the shared ImageNet
MobileNetV2: the backbone runs once per image (and its mirror, for the folds' test-time flips)
on this machine and every run trains its linear head on the cache, which is what makes 20,000
images x 3 seeds fit on 2 cores; ``--backbone resnet18`` trains a small-input ResNet-18
whole (minutes per run). Partial JSON is written after every step. ``--quick`` only measures ``clustering_60k_s`` (60,000
structured synthetic 512-d embeddings, 6,000 per class, unless --real-embeddings-from gives a
run) and ``similar_query_p95_ms`` (1,000,000 synthetic embeddings), merged into the JSON.

Any labelled image set works: ``--manifest M.csv --given-col noisy --true-col label``
(columns ``uri, split`` plus both label columns).

    .venv/bin/python bench/suspects_fashion_mnist.py --quick
    nohup .venv/bin/python bench/suspects_fashion_mnist.py --train-size 20000 --test-size 0 --seeds 3 \
        --epochs 10 --fold-epochs 10 --image-size 96 --batch-size 128 --lr 0.1 > /tmp/suspects_bench.log 2>&1 &
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import RESULTS, machine_info, shared_data  # noqa: E402
from bench.common import detection as common_detection  # noqa: E402
from mlcore import storage  # noqa: E402
from mlcore.cluster import cluster_per_class  # noqa: E402
from mlcore.manifest import write_manifest  # noqa: E402
from mlcore.storage import load_npz  # noqa: E402
from mlcore.similar import SimilarIndex  # noqa: E402

CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
           "Ankle boot"]
SIMILAR_GROUPS = [[0, 2, 4, 6], [5, 7, 9]]  # tops; shoes
OUT_NAME = "suspects_fashion_mnist.json"
PROTOCOL = ("nothing tuned here: the suspects defaults come from bench/suspects_cifar10n.py (CIFAR-10N half A); "
            "the train subset is fixed (--seed), each of --seeds draws the noise, the folds and the initial weights; "
            "accuracies on the test images' true labels; clean: a model on the true train labels, same seed")


# --------------------------------------------------------------------------- data

def read_idx(path: Path) -> np.ndarray:
    import gzip
    data = gzip.open(path, "rb").read()
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def stratified(y: np.ndarray, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    classes = np.unique(y)
    per = n // len(classes)
    return np.sort(np.concatenate([rng.choice(np.flatnonzero(y == c), per, replace=False) for c in classes]))


def inject(y: np.ndarray, setting: str, seed: int, num_classes: int) -> np.ndarray:
    """Noisy copy of ``y``: ``symNN`` flips NN% to a uniformly random other class; ``classcond20``
    flips 20% of the images of the similar-class groups to another class of their group."""
    rng = np.random.default_rng(seed)
    noisy = y.copy()
    if setting.startswith("sym"):
        rate = int(setting[3:]) / 100
        flip = np.flatnonzero(rng.random(len(y)) < rate)
        noisy[flip] = (y[flip] + rng.integers(1, num_classes, len(flip))) % num_classes
    elif setting == "classcond20":
        for group in SIMILAR_GROUPS:
            rows = np.flatnonzero(np.isin(y, group))
            flip = rows[rng.random(len(rows)) < 0.2]
            for i in flip:
                noisy[i] = rng.choice([c for c in group if c != y[i]])
    else:
        raise ValueError(setting)
    return noisy


def write_pngs(images: np.ndarray, folder: Path, prefix: str) -> list[str]:
    from PIL import Image
    folder.mkdir(parents=True, exist_ok=True)
    uris = []
    for i, im in enumerate(images):
        p = folder / f"{prefix}{i:05d}.png"
        if not p.exists():
            Image.fromarray(im).save(p)
        uris.append(str(p))
    return uris


def fashion_dataset(args, work: Path) -> dict:
    root = args.data
    xtr, ytr = read_idx(root / "train-images-idx3-ubyte.gz"), read_idx(root / "train-labels-idx1-ubyte.gz")
    xte, yte = read_idx(root / "t10k-images-idx3-ubyte.gz"), read_idx(root / "t10k-labels-idx1-ubyte.gz")
    tr = stratified(ytr.astype(np.int64), args.train_size, args.seed)
    te = np.arange(len(yte)) if not args.test_size else stratified(yte.astype(np.int64), args.test_size, args.seed)
    rest = np.setdiff1d(np.arange(len(ytr)), tr)
    va = stratified(ytr[rest].astype(np.int64), args.val_size, args.seed + 1) if args.val_size else rest[:0]
    va = rest[va]
    tr_uris = write_pngs(xtr[tr], work / "images" / "train", "tr")
    va_uris = write_pngs(xtr[va], work / "images" / "val", "va")
    te_uris = write_pngs(xte[te], work / "images" / "test", "te")
    return {"uris": tr_uris + va_uris + te_uris,
            "splits": ["train"] * len(tr) + ["val"] * len(va) + ["test"] * len(te),
            "true": np.concatenate([ytr[tr], ytr[va], yte[te]]).astype(np.int64), "given": None,
            "labels": CLASSES, "source": f"fashion-mnist {len(tr)} train (stratified, seed {args.seed}) + "
                                         f"{len(va)} val (clean labels, per-epoch curves only) + {len(te)} test"}


def manifest_dataset(args) -> dict:
    rows = list(csv.DictReader(io.StringIO(storage.read_bytes(storage.to_uri(args.manifest)).decode("utf-8-sig"))))
    names = sorted({r[args.true_col] for r in rows} | {r[args.given_col] for r in rows if r[args.given_col]})
    idx = {n: i for i, n in enumerate(names)}
    base = storage.to_uri(args.manifest).rsplit("/", 1)[0]
    uris = [r["uri"] if "://" in r["uri"] or r["uri"].startswith("/") else storage.join(base, r["uri"]) for r in rows]
    return {"uris": uris, "splits": [r["split"] for r in rows], "true": np.array([idx[r[args.true_col]] for r in rows]),
            "given": np.array([idx[r[args.given_col]] if r[args.given_col] else -1 for r in rows]),
            "labels": names, "source": f"manifest {args.manifest} given={args.given_col} true={args.true_col}"}


# --------------------------------------------------------------------------- metrics

def detection(flagged: np.ndarray, score: np.ndarray, errors: np.ndarray) -> dict:
    """bench.common.detection, rounded to 4 places, with ``k`` (the number of errors)."""
    d = common_detection(flagged, score, errors)
    return {**{key: round(d[key], 4) for key in ("precision", "recall", "f1", "precision_at_k", "auroc")},
            "flagged": d["flagged"], "k": int(errors.sum())}


# --------------------------------------------------------------------------- runs

WEIGHTS = "weights/mobilenet_v2_imagenet_features_torchvision_keys.pth"


def base_config(args, manifest: str, out: Path, labels: list[str], seed: int = 0):
    """The runs' settings: ResNet-18 trained whole (``--backbone resnet18``), or the shared
    ImageNet MobileNetV2 frozen with its features cached (``--backbone frozen``: the app's
    freeze_backbone runs; the backbone runs once per image on this machine, every run after the
    first trains heads on the cache)."""
    from mlcore.train import TrainConfig
    common = dict(manifest_uri=manifest, output_uri=str(out), labels=labels, image_size=args.image_size,
                  epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, label_smoothing=0.1,
                  class_weights="none", device="cpu", amp=True, channels_last=True, workers=0, seed=seed)
    if args.backbone == "frozen":
        return TrainConfig(**common, arch="mobilenet_v2", weights=str(args.data.parent / WEIGHTS),
                           freeze_backbone=True, cache_features=True, weight_decay=1e-4, warmup_epochs=1.0)
    return TrainConfig(**common, arch="resnet18", small_input=True, maxpool=True, weight_decay=5e-4,
                       warmup_epochs=0.5)


def test_accuracy(run: Path | str) -> float:
    m = json.loads(storage.read_bytes(storage.join(storage.to_uri(str(run)), "metrics.json")))
    return round(m["test"]["accuracy"], 4)


def train_once(config, log) -> None:
    from mlcore.train import train
    if storage.exists(storage.join(storage.to_uri(config.output_uri), "predictions.npz")):
        return
    t0 = time.time()
    train(config, progress=log)
    print(f"  trained {config.output_uri} in {time.time() - t0:.0f} s", flush=True)


def progress_printer():
    last = {"t": 0.0}

    def log(p):
        now = time.time()
        if now - last["t"] > 60:
            last["t"] = now
            print(f"  [{p.get('job', '')}] {p['phase']} epoch {p['epoch']}/{p['epochs']} step {p['step']}/{p['steps']} "
                  f"{p['images_per_s']:.0f} img/s", flush=True)
    return log


def run_setting(name: str, ds: dict, args, work: Path, seed: int, save) -> dict:
    """One noise setting at one seed (the noise drawn, the fold assignment and the initial
    weights); a dict of its figures."""
    import cleanlab.filter
    import cleanlab.rank

    from mlcore.clean import autoclean
    from mlcore.folds import out_of_sample
    from mlcore.suspects import score

    t0 = time.time()
    labels = ds["labels"]
    true = ds["true"]
    train = np.asarray(ds["splits"]) == "train"
    given = ds["given"].copy() if ds["given"] is not None else true.copy()
    if ds["given"] is None:
        given[train] = inject(true[train], name, seed, len(labels))
    sdir = work / f"seed{seed}" / name
    manifest = write_manifest(str(sdir / "manifest.csv"), ds["uris"], ds["splits"],
                              [labels[v] if v >= 0 else "" for v in given])
    entry = {"name": name, "seed": seed, "injected_errors": int((given != true)[train].sum()),
             "train_images": int(train.sum())}
    log = progress_printer()

    base = base_config(args, manifest, sdir / "main", labels, seed)
    oos_uri = out_of_sample(base, k=args.folds, fold_epochs=args.fold_epochs, progress=log, seed=seed)
    entry["test_accuracy"] = {"noisy": test_accuracy(sdir / "main")}
    save()

    oos = load_npz(storage.read_bytes(oos_uri))
    emb = load_npz(storage.read_bytes(storage.join(storage.to_uri(str(sdir / "main")), "embeddings.npz")))
    row = {u: i for i, u in enumerate(emb["uri"].tolist())}
    e = emb["emb"][[row[u] for u in oos["uri"]]].astype(np.float32)
    uri_pos = {storage.to_uri(u): i for i, u in enumerate(ds["uris"])}
    pos = np.array([uri_pos[u] for u in oos["uri"]])
    tr = oos["split"] == "train"
    errors = (given[pos] != true[pos])[tr]
    g = oos["label"]

    t1 = time.time()
    s = score(oos["prob"], g, e, cluster_threshold=args.cluster_threshold, knn=args.knn)
    entry["suspects_s"] = round(time.time() - t1, 1)
    entry["fused"] = detection(s["flagged"][tr], s["score"][tr], errors)
    variants = {}
    for method in ("prob", "knn", "cluster"):
        v = score(oos["prob"], g, e, method=method, cluster_threshold=args.cluster_threshold, knn=args.knn)
        variants[method] = detection(v["flagged"][tr], v["score"][tr], errors)
    for w in (0.3, 0.5, 0.7):  # the fixed mixes of the old default (0.7, cut 0.5, confident-learning rule)
        v = score(oos["prob"], g, e, knn_weight=w, cluster_threshold=0.5, knn=args.knn, decision="cl")
        variants[f"fused_knn_weight_{w}"] = detection(v["flagged"][tr], v["score"][tr], errors)
    entry["witness_weights"] = {str(n): round(float(w), 4) for n, w in zip(s["witness_names"], s["witness_weights"])}
    entry["expected_precision"] = round(float(s["expected_precision"]), 4)
    variants["cluster_outlier"] = detection(s["cluster_outlier"][tr], s["cluster_outlier"][tr].astype(float), errors)
    variants["cl_issue_prob"] = detection(s["cl_issue"][tr], 1 - s["self_confidence"][tr], errors)
    entry["variants"] = variants
    entry["suggested_accuracy_on_flagged_errors"] = round(float(
        (s["suggested"][tr] == true[pos][tr])[s["flagged"][tr] & errors].mean()), 4)

    issues = cleanlab.filter.find_label_issues(g[tr], oos["prob"][tr])
    quality = cleanlab.rank.get_label_quality_scores(g[tr], oos["prob"][tr])
    entry["cleanlab"] = detection(np.asarray(issues, dtype=bool), 1 - quality, errors)
    print(f"{name} seed {seed}: fused {entry['fused']} cleanlab {entry['cleanlab']}", flush=True)

    # retrains after the flagged images are worked: every suggestion taken unreviewed ("retrained"),
    # or only where a reviewer agrees with it: one who errs as the labellers did (an independent draw
    # of the same noise, "reviewed_crowd"), or one who knows the true label ("reviewed")
    flagged_rows = pos[tr][s["flagged"][tr]]
    suggested = s["suggested"][tr][s["flagged"][tr]]
    crowd = inject(true, name, 1000 + seed, len(labels)) if ds["given"] is None else true
    for kind, take in (("retrained", np.ones(len(flagged_rows), dtype=bool)),
                       ("reviewed_crowd", suggested == crowd[flagged_rows]),
                       ("reviewed", suggested == true[flagged_rows])):
        fixed = given.copy()
        fixed[flagged_rows[take]] = suggested[take]
        m2 = write_manifest(str(sdir / kind / "manifest.csv"), ds["uris"], ds["splits"],
                            [labels[v] if v >= 0 else "" for v in fixed])
        train_once(base_config(args, m2, sdir / kind, labels, seed), log)
        entry["test_accuracy"][kind] = test_accuracy(sdir / kind)
        entry[f"label_errors_after_{kind}"] = int((fixed != true)[train].sum())

    if args.autoclean_rounds:
        ac = autoclean(base_config(args, manifest, sdir / "autoclean", labels, seed), rounds=args.autoclean_rounds,
                       threshold=args.cluster_threshold, start_run=str(sdir / "main"), progress=log)
        excluded = np.array([uri_pos[u] for u in ac["excluded"]], dtype=np.int64)
        entry["autoclean_test_accuracy"] = round(ac["rounds"][-1]["test_accuracy"], 4)
        entry["autoclean"] = {"rounds": [{k: r[k] for k in ("round", "excluded", "test_accuracy", "test_macro_f1")}
                                         for r in ac["rounds"]], "stopped": ac["stopped"],
                              "excluded_that_were_errors": int((given[excluded] != true[excluded]).sum())}
    clean_manifest = write_manifest(str(work / "clean" / "manifest.csv"), ds["uris"], ds["splits"],
                                    [labels[v] for v in true])
    train_once(base_config(args, clean_manifest, work / "clean" / f"seed{seed}", labels, seed), log)
    entry["test_accuracy"]["clean"] = test_accuracy(work / "clean" / f"seed{seed}")
    entry["wall_s"] = round(time.time() - t0, 1)
    return entry


def mean_std(entries: list[dict]) -> dict:
    """Means over seeds of every number in ``entries`` (nested dicts alike), with ``std`` beside each dict's numbers."""
    first = entries[0]
    out, std = {}, {}
    for k, v in first.items():
        if isinstance(v, dict):
            out[k] = mean_std([e[k] for e in entries])
        elif isinstance(v, (int, float)) and not isinstance(v, bool) and k != "seed":
            vals = [float(e[k]) for e in entries]
            out[k], std[k] = round(float(np.mean(vals)), 4), round(float(np.std(vals)), 4)
        elif k != "seed":
            out[k] = v
    if std and len(entries) > 1:
        out["std"] = std
    return out


# --------------------------------------------------------------------------- quick measurements

def structured_unit_vectors(n: int, d: int, centres: int, seed: int, dtype=np.float16,
                            spread: float = 0.6) -> tuple[np.ndarray, np.ndarray]:
    """``n`` unit vectors around ``centres`` random directions (like class/style clusters); and their centre."""
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((centres, d)).astype(np.float32)
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    which = rng.integers(0, centres, n)
    out = np.empty((n, d), dtype=dtype)
    for s in range(0, n, 65536):
        w = which[s:s + 65536]
        x = c[w] + spread * rng.standard_normal((len(w), d)).astype(np.float32) / np.sqrt(d)
        out[s:s + 65536] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out, which


def quick(args, result: dict) -> None:
    # clustering: 60,000 embeddings, 6,000 per class
    if args.real_embeddings_from:
        z = load_npz(storage.read_bytes(storage.join(storage.to_uri(args.real_embeddings_from), "embeddings.npz")))
        p = load_npz(storage.read_bytes(storage.join(storage.to_uri(args.real_embeddings_from), "predictions.npz")))
        emb, lab, src = z["emb"].astype(np.float32), p["label"], f"embeddings of {args.real_embeddings_from}"
    else:
        emb, which = structured_unit_vectors(60_000, 512, 200, args.seed, np.float32)
        lab = which % 10  # 10 classes of 6,000, each a mixture of 20 sub-clusters
        src = "synthetic: 60,000 unit vectors, 512-d, 10 classes x 20 sub-clusters"
    t0 = time.perf_counter()
    cid, core = cluster_per_class(emb, lab, threshold=args.cluster_threshold or 0.5)
    result["clustering_60k_s"] = round(time.perf_counter() - t0, 2)
    result["clustering_60k"] = {"load_average_1m": round(os.getloadavg()[0], 2), "source": src, "images": int(len(lab)), "threshold": args.cluster_threshold,
                                "clusters": int(cid.max() + 1), "core_fraction": round(float(core.mean()), 4)}
    print(f"clustering {len(lab)}: {result['clustering_60k_s']} s", flush=True)
    del emb

    n = args.similar_n
    emb, _ = structured_unit_vectors(n, 512, 5000, args.seed + 1)
    t0 = time.perf_counter()
    index = SimilarIndex(emb, np.arange(n))
    build = time.perf_counter() - t0
    rng = np.random.default_rng(args.seed)
    times, exact_ok = [], 0
    qs = rng.integers(0, n, args.queries)
    for j, q in enumerate(qs):
        vec = emb[q].astype(np.float32) + 0.05 * rng.standard_normal(512).astype(np.float32) / np.sqrt(512)
        t = time.perf_counter()
        ids, sims = index.query(vec, 10)
        times.append((time.perf_counter() - t) * 1000)
        if j < 5:  # exactness against a float32 brute force over the same stored vectors
            v = vec / np.linalg.norm(vec)
            full = np.concatenate([emb[s:s + 65536].astype(np.float32) @ v for s in range(0, n, 65536)])
            exact_ok += int(np.array_equal(np.sort(ids), np.sort(np.argsort(-full)[:10])))
    result["similar_query_p95_ms"] = round(float(np.percentile(times, 95)), 1)
    result["similar"] = {"embeddings": n, "dim": 512, "queries": len(times), "k": 10,
                         "p50_ms": round(float(np.percentile(times, 50)), 1), "build_s": round(build, 1),
                         "storage": "float16 scored in float32 (numpy); an inverted file from 50,000 vectors, "
                                    f"{index.nprobe} of {0 if index.centroids is None else len(index.centroids)} "
                                    f"lists probed (recall@12 {index.recall:.3f} measured at build)",
                         "top10_matches_bruteforce": f"{exact_ok}/5",
                         "data": "synthetic: unit vectors around 5,000 random directions",
                         "load_average_1m": round(os.getloadavg()[0], 2)}
    print(f"similar p95 {result['similar_query_p95_ms']} ms at {n}", flush=True)


# --------------------------------------------------------------------------- main

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=shared_data() / "fashion-mnist")
    ap.add_argument("--manifest", help="any manifest with a given-label and a true-label column")
    ap.add_argument("--given-col", default="given")
    ap.add_argument("--true-col", default="label")
    ap.add_argument("--settings", default="sym20,classcond20,sym10")
    ap.add_argument("--train-size", type=int, default=1200)
    ap.add_argument("--test-size", type=int, default=2000, help="stratified; 0: the full 10,000")
    ap.add_argument("--val-size", type=int, default=200, help="clean-label val split (per-epoch curves)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--fold-epochs", type=int, default=2)
    ap.add_argument("--folds", type=int, default=4)
    ap.add_argument("--autoclean-rounds", type=int, default=1)
    ap.add_argument("--cluster-threshold", type=float, default=None,
                    help="fixed cut; default: per class from the estimated error rate")
    ap.add_argument("--knn", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--image-size", type=int, default=28)
    ap.add_argument("--seed", type=int, default=0, help="the stratified subset (the same for every --seeds)")
    ap.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1: the noise drawn, the folds, the weights")
    ap.add_argument("--backbone", choices=("resnet18", "frozen"), default="frozen")
    ap.add_argument("--work", type=Path, default=Path("/tmp/retag_suspects_bench"))
    ap.add_argument("--out", default=OUT_NAME)
    ap.add_argument("--quick", action="store_true", help="only clustering_60k_s and similar_query_p95_ms")
    ap.add_argument("--real-embeddings-from", help="a run whose embeddings to cluster in --quick")
    ap.add_argument("--similar-n", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=200)
    args = ap.parse_args(argv)

    import torch
    torch.set_num_threads(min(2, torch.get_num_threads()))
    path = RESULTS / args.out
    result = json.loads(path.read_text()) if path.exists() else {}
    result.setdefault("settings", [])
    cmd = "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv if argv is not None else sys.argv[1:])])

    def save():
        result["machine"] = machine_info("cpu")
        RESULTS.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=1, default=float) + "\n")

    if args.quick:
        result["quick_command"] = cmd
        quick(args, result)
        save()
        return
    t0 = time.time()
    result["command"] = cmd
    result["budget"] = {"train_images": args.train_size, "test_images": args.test_size or "all",
                        "epochs": args.epochs, "fold_epochs": args.fold_epochs, "folds": args.folds,
                        "seeds": args.seeds, "autoclean_rounds": args.autoclean_rounds,
                        "cluster_threshold": args.cluster_threshold, "knn": args.knn,
                        "model": ("ImageNet MobileNetV2 (shared weights) frozen, features cached, linear head; "
                                  if args.backbone == "frozen" else
                                  "resnet18 small_input (3x3 stride-1 stem + max-pool), ")
                        + f"{args.image_size} px, SGD lr {args.lr or 'default'} bs {args.batch_size}, "
                          "label smoothing 0.1, bf16 autocast, 2 CPU threads",
                        "val_images": args.val_size}
    result.pop("notes", None)  # an earlier run's
    result["protocol"] = PROTOCOL
    work = args.work
    ds = manifest_dataset(args) if args.manifest else fashion_dataset(args, work)
    result["data"] = ds["source"]
    names = [s for s in args.settings.split(",") if s]
    per_seed: dict[str, list] = {n: [] for n in names}
    result["settings"] = []
    save()
    for seed in range(args.seeds):
        for name in names:
            per_seed[name].append(run_setting(name, ds, args, work, seed, save))
            result["settings"] = [{"name": n, "seeds": len(v), **mean_std(v), "per_seed": v}
                                  for n, v in per_seed.items() if v]
            result["budget"]["wall_s"] = round(time.time() - t0, 1)
            save()
    for s in result["settings"]:
        s["default_beats_cleanlab_beyond_seed_spread"] = {
            k: bool(s["fused"][k] - s["cleanlab"][k] > s["fused"].get("std", {}).get(k, 0)
                    + s["cleanlab"].get("std", {}).get(k, 0)) for k in ("f1", "precision_at_k")}
    save()
    print(json.dumps([{k: s[k] for k in ("name", "fused", "cleanlab", "test_accuracy")} for s in result["settings"]],
                     indent=1, default=float))


if __name__ == "__main__":
    main()
