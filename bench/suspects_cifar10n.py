"""Bench: mislabel detection under real human label noise (CIFAR-10N dev set), mlcore vs cleanlab.

Data: ``../shared/data/cifar10n-dev/`` (25,000 CIFAR-10 train images, their clean label
and the CIFAR-10N human label sets aggre 9%, random1-3 ~17%, worst 40%). The pipeline as
the app runs it, on a frozen backbone:

1. manifest (``uri, split, label``) -> ``mlcore.data`` images -> features of the shared
   ImageNet MobileNetV2 (``mlcore.models.build_model`` + ``mlcore.evaluate.infer``, the
   embedding code), computed once per image size and cached under ``var/bench_cache/``
   (also the horizontally flipped images: test-time flips);
2. out-of-sample probabilities from a K-fold linear probe (multinomial logistic regression
   on the cached features, ``mlcore.folds.fold_of`` folds; each image predicted by the probe
   that did not see it, averaged over the flip);
3. ``mlcore.suspects.score`` (the default, and each witness alone) and cleanlab's
   ``find_label_issues`` / ``get_label_quality_scores`` on the same probabilities;
   precision, recall, F1, precision at k (k = true errors), AUROC against ``clean``;
4. retrains (the probe) after the flagged suspects are worked: reviewed (a suggestion is
   accepted where an independent CIFAR-10N worker, or the clean label, agrees with it),
   blind (every flag accepted) and excluded (flagged images left out), against probes on the
   noisy and on the clean labels (test: the other half's clean labels).

Never tuned on what it reports: the images are split in two halves by a hash of the URI.
Choices (the witness embeddings, k of kNN) are made on half A with random2 and random3
(``--tune``); the figures are on half B with aggre, random1 and worst. The JSON says so
(``protocol``). Seeds change the fold assignment of the probe (and so every probability).

Scale (``--scale``): kNN over 1,000,000 x 512 clustered synthetic embeddings (``knn_1m_s``,
recall@10 and an exact baseline on a sample) and the similar-image index at 1,000,000
(``similar_query_p95_ms`` in a fresh web-like process, its memory and first query, recall@12
against the exact search of the same index); only those keys are merged into the JSON.

    .venv/bin/python bench/suspects_cifar10n.py --features-only   # minutes, once
    .venv/bin/python bench/suspects_cifar10n.py                   # tune, report, retrain
    .venv/bin/python bench/suspects_cifar10n.py --scale           # the 1M figures only
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import shlex
import sys
import time
import zipfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import REPO, RESULTS, auroc, clustered_unit_vectors, detection, machine_info, shared_data  # noqa: E402

OUT_NAME = "suspects_cifar10n.json"
CACHE = REPO / "var" / "bench_cache"
WEIGHTS = "weights/mobilenet_v2_imagenet_features_torchvision_keys.pth"
REPORT_SETS = ("aggre", "random1", "worst")
TUNE_SETS = ("random2", "random3")


# --------------------------------------------------------------------------- data and features

def dataset(data: Path) -> dict:
    """Unpack the dev set once into the cache; ``uri`` (absolute paths), ``names``, label arrays."""
    root = CACHE / "cifar10n-dev"
    if not (root / "labels.csv").exists():
        with zipfile.ZipFile(data / "cifar10n-dev" / "cifar10n_dev.zip") as z:
            z.extractall(root)
    rows = list(csv.DictReader((root / "labels.csv").open()))
    names = sorted({r["clean"] for r in rows})
    idx = {n: i for i, n in enumerate(names)}
    cols = ("clean", "aggre", "random1", "random2", "random3", "worst")
    return {"uri": [str(root / r["uri"]) for r in rows], "names": names,
            **{c: np.array([idx[r[c]] for r in rows], dtype=np.int64) for c in cols}}


def features(ds: dict, data: Path, size: int) -> dict:
    """``emb`` and ``emb_flip`` (N, 1280) L2-normalised MobileNetV2 features at ``size`` px, cached."""
    import torch

    from mlcore.data import ImageDataset, eval_transform
    from mlcore.evaluate import infer
    from mlcore.models import build_model

    path = CACHE / f"cifar10n_mobilenet_v2_{size}px.npz"
    have = dict(np.load(path)) if path.exists() else {}
    model = None
    for key, flip in (("emb", False), ("emb_flip", True)):
        if key in have:
            continue
        if model is None:
            model = build_model("mobilenet_v2", 10, weights=str(data / WEIGHTS)).eval()
        tf = eval_transform(size)
        if flip:
            from torchvision import transforms as T
            tf = T.Compose([T.RandomHorizontalFlip(p=1.0), tf])
        images = ImageDataset(ds["uri"], np.full(len(ds["uri"]), -1), tf)
        t0 = time.time()
        last = {"t": 0.0}

        def log(p):
            if time.time() - last["t"] > 60:
                last["t"] = time.time()
                print(f"  {key} {size}px: step {p['step']}/{p['steps']} {p['images_per_s']:.0f} img/s", flush=True)
        r = infer(model, images, list(range(len(images))), device=torch.device("cpu"), batch_size=128, progress=log)
        if len(r["index"]) != len(images):
            raise RuntimeError(f"{len(images) - len(r['index'])} unreadable images: {r['skipped'][:3]}")
        have[key] = r["features"].astype(np.float16)
        have[f"{key}_s"] = np.float64(time.time() - t0)
        np.savez(path, **have)
        print(f"  {key} {size}px: {len(images)} images in {time.time() - t0:.0f} s", flush=True)
    return have


def half_of(uris: list[str]) -> np.ndarray:
    """(N,) 0 (tuning half A) or 1 (report half B) by a hash of the file name: order-free, stable."""
    return np.asarray([int(hashlib.sha1(f"half:{os.path.basename(u)}".encode()).hexdigest()[:8], 16) % 2
                       for u in uris])


def pca(x: np.ndarray, dim: int) -> np.ndarray:
    """Projection (D, dim) on the top principal axes of ``x`` (no labels involved), whitened."""
    x = x - x.mean(0)
    _, sv, vt = np.linalg.svd(x[:: max(1, len(x) // 20000)], full_matrices=False)
    return (vt[:dim].T / np.maximum(sv[:dim], 1e-6) * np.sqrt(len(x[:: max(1, len(x) // 20000)])))


# --------------------------------------------------------------------------- probabilities

def probe_fit(x: np.ndarray, y: np.ndarray, c: int, args):
    from sklearn.linear_model import LogisticRegression
    m = LogisticRegression(C=args.probe_c, max_iter=args.probe_iters, tol=1e-3)
    m.fit(x, y)
    if len(m.classes_) != c:
        raise RuntimeError("a fold lacks a class")
    return m


def probe_prob(m, xs: list[np.ndarray]) -> np.ndarray:
    """Mean of the probe's probabilities over the views (the image and its flip)."""
    return np.mean([m.predict_proba(x) for x in xs], 0).astype(np.float32)


def out_of_sample(views: list[np.ndarray], y: np.ndarray, uris: list[str], c: int, args, seed: int) -> np.ndarray:
    """K-fold probe: each row predicted by the probe fit on the other folds (mlcore.folds.fold_of folds)."""
    from mlcore.folds import fold_of
    fold = fold_of(uris, args.folds, seed)
    prob = np.zeros((len(y), c), dtype=np.float32)
    for f in range(args.folds):
        held = fold == f
        m = probe_fit(np.concatenate([v[~held] for v in views]), np.tile(y[~held], len(views)), c, args)
        prob[held] = probe_prob(m, [v[held] for v in views])
    return prob


# --------------------------------------------------------------------------- metrics

KEYS = ("precision", "recall", "f1", "precision_at_k", "auroc")


def summarise(runs: list[dict]) -> dict:
    """Means over seeds (rounded), ``std`` with the same keys, and any extra keys' means."""
    out = {k: round(float(np.mean([r[k] for r in runs])), 4) for k in runs[0] if k not in ("std",)}
    out["std"] = {k: round(float(np.std([r[k] for r in runs])), 4) for k in KEYS}
    return out


# --------------------------------------------------------------------------- one label set

def witness_space(kind: str, feats: np.ndarray, views, y, uris, c, args):
    """Embeddings for the kNN and cluster witnesses: the backbone's (never saw a label), or
    those of a model trained on all the given labels (``run``: the full probe's log-probabilities,
    as a run's own embeddings would be)."""
    if kind == "backbone":
        return feats
    m = probe_fit(np.concatenate(views), np.tile(y, len(views)), c, args)
    z = np.log(np.clip(probe_prob(m, views), 1e-6, 1))
    z -= z.mean(1, keepdims=True)
    return (z / np.linalg.norm(z, axis=1, keepdims=True)).astype(np.float32)


def evaluate(prob, given, true, emb, options: dict, *, extra_rows: bool) -> dict:
    """Detection figures of the default (``options``), cleanlab, and (``extra_rows``) each witness alone."""
    import cleanlab.filter
    import cleanlab.rank

    from mlcore.suspects import score
    errors = given != true
    t0 = time.perf_counter()
    s = score(prob, given, emb, **options)
    rows = {"default": {**detection(s["flagged"], s["score"], errors), "seconds": time.perf_counter() - t0,
                        "expected_precision": float(s["expected_precision"]),
                        "expected_errors": float(s["expected_errors"]),
                        "posterior_auroc": auroc(s["error_posterior"], errors),
                        "posterior_precision_at_k": detection(s["flagged"], s["error_posterior"],
                                                              errors)["precision_at_k"],
                        "suggested_right_on_flagged_errors": float(
                            (s["suggested"] == true)[s["flagged"] & errors].mean()),
                        **{f"weight_{n}": float(w) for n, w in zip(s["witness_names"], s["witness_weights"])}}}
    issues = cleanlab.filter.find_label_issues(given, prob, n_jobs=1)
    quality = cleanlab.rank.get_label_quality_scores(given, prob)
    rows["cleanlab"] = detection(np.asarray(issues, dtype=bool), 1 - quality, errors)
    if extra_rows:
        for method in ("prob", "knn", "cluster"):
            v = score(prob, given, emb, **{**options, "method": method})
            rows[f"{method}_alone"] = detection(v["flagged"], v["score"], errors)
        rows["cluster_outlier_flag"] = {**detection(s["cluster_outlier"], s["cluster_outlier"].astype(float), errors),
                                        "outlier_share": float(s["cluster_outlier"].mean()),
                                        "median_cut": float(np.nanmedian(s["cluster_cut"]))}
        old = score(prob, given, emb, knn_weight=0.7, cluster_threshold=0.5, decision="cl", knn=10)
        rows["old_default_knn_weight_0.7"] = detection(old["flagged"], old["score"], errors)
        rows["old_default_knn_weight_0.7"]["cluster_outlier_share_at_0.5"] = float(old["cluster_outlier"].mean())
    return {"rows": rows, "scores": s}


def manifest_labels(ds: dict, rows: np.ndarray, column: str, work: Path) -> tuple[list[str], np.ndarray]:
    """Write the label set as an mlcore manifest and read it back, as the app hands it over."""
    from mlcore.manifest import read_manifest, write_manifest
    path = write_manifest(str(work / f"{column}.csv"), [ds["uri"][i] for i in rows], ["train"] * len(rows),
                          [ds["names"][v] for v in ds[column][rows]])
    m = read_manifest(path, ds["names"])
    return m.uris, m.targets[:, 0].astype(np.int64)


# --------------------------------------------------------------------------- scale

SCALE_KEYS = ("knn_1m_s", "knn_1m", "similar_query_p95_ms", "similar", "scale_command", "scale_machine")


WEB_PROCESS = r"""
import json, os, sys, time
t_start = time.perf_counter()
def mem():
    st = dict(l.split(":", 1) for l in open("/proc/self/status") if ":" in l)
    pss = [l for l in open("/proc/self/smaps_rollup") if l.startswith("Pss:")]
    mb = lambda v: round(int(v.split()[0]) / 1024, 1)
    return {"rss_mb": mb(st["VmRSS"]), "rss_anon_mb": mb(st["RssAnon"]), "rss_file_mb": mb(st["RssFile"]),
            "pss_mb": mb(pss[0].split(":", 1)[1]) if pss else None}
import django
django.setup()
from labeling.services.similar import load_index
import numpy as np
out = {"after_django_setup": mem()}
path, n, queries = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = np.random.default_rng(1)
t = time.perf_counter()
index = load_index(path)
out["load_ms"] = (time.perf_counter() - t) * 1000
t = time.perf_counter()
index.query(int(rng.integers(0, n)), 13)  # what the image page asks: k + 1, itself left out
out["first_query_ms"] = (time.perf_counter() - t) * 1000
out["after_first_query"] = mem()
times = []
for j in rng.integers(0, n, queries):
    t = time.perf_counter()
    index.query(int(j), 13)
    times.append((time.perf_counter() - t) * 1000)
out["query_ms"] = times
out["after_queries"] = mem()
print(json.dumps(out))
"""


def web_process(path: Path, n: int, queries: int) -> dict:
    """A fresh process that imports the app as a web process does (django.setup), opens the
    index through labeling.services.similar and queries it by id as the image page does."""
    import subprocess

    env = {**os.environ, "DJANGO_SETTINGS_MODULE": os.environ.get("DJANGO_SETTINGS_MODULE", "labeling.settings"),
           "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", WEB_PROCESS, str(path), str(n), str(queries)], env=env,
                          capture_output=True, text=True, check=True, cwd=REPO)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def scale(args, result: dict) -> None:
    """kNN over ``--scale-n`` x 512 and the similar-image index at that size, each against an
    exact baseline in the same run (the machine is shared: ratios hold better than seconds)."""
    import faiss

    from mlcore.cluster import knn
    from mlcore.similar import SimilarIndex

    n, k = args.scale_n, 10
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    emb, _ = clustered_unit_vectors(n, 512, 0)
    data_s = time.perf_counter() - t0
    data = ("synthetic, float16 unit vectors: 100 topic directions x 50 sub-clusters each (noise 0.7), "
            "points around a sub-cluster with noise 1.0 (in-cluster cosine ~0.5: neighbourhoods cross clusters)")
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    idx, _ = knn(emb, k)
    knn_s = time.perf_counter() - t0
    q = np.sort(rng.choice(n, args.exact_queries, replace=False))
    t0 = time.perf_counter()
    exact, _ = knn(emb, k, rows=q, exact=True)
    exact_s = time.perf_counter() - t0
    e32 = np.ascontiguousarray(emb, dtype=np.float32)
    t0 = time.perf_counter()
    faiss.knn(np.ascontiguousarray(e32[q]), e32, k + 1, metric=faiss.METRIC_INNER_PRODUCT)  # exact, BLAS + heap
    flat_s = time.perf_counter() - t0
    del e32
    recall = float(np.mean([len(set(a) & set(b)) / k for a, b in zip(idx[q], exact)]))
    del idx
    result["knn_1m_s"] = round(knn_s, 1)
    result["knn_1m"] = {
        "embeddings": n, "dim": 512, "k": k,
        "method": "mlcore.cluster.knn: inverted file (sqrt(N) spherical k-means lists), scanned list by list "
                  "with BLAS products (faiss.knn per list), nprobe chosen for recall@k >= 0.95 on 256 sampled "
                  "queries (that check is inside the time); knn_label_distribution adds one bincount",
        "recall_at_10_vs_exact": round(recall, 4), "exact_queries": len(q),
        "exact_numpy_blockwise_s_extrapolated": round(exact_s * n / len(q), 1),
        "exact_faiss_knn_s_extrapolated": round(flat_s * n / len(q), 1),
        "speedup_vs_exact_numpy": round(exact_s * n / len(q) / knn_s, 1),
        "speedup_vs_exact_faiss_knn": round(flat_s * n / len(q) / knn_s, 1),
        "data": data, "data_s": round(data_s, 1),
        "load_average_1m_before_after": [round(load0, 2), round(os.getloadavg()[0], 2)]}
    print(f"knn {n}: {knn_s:.1f} s, recall@10 {recall:.3f}; exact extrapolated: numpy "
          f"{exact_s * n / len(q):.0f} s, faiss.knn {flat_s * n / len(q):.0f} s", flush=True)

    t0 = time.perf_counter()
    index = SimilarIndex(emb, np.arange(n))
    build_s = time.perf_counter() - t0
    path = CACHE / f"similar_{n}.npz"
    CACHE.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    index.save(str(path))
    save_s = time.perf_counter() - t0
    del index
    web = web_process(path, n, args.queries)
    mapped = SimilarIndex.load(str(path))
    sample = rng.integers(0, n, args.queries)
    fast, slow, hits = [], [], []
    nlist = len(mapped.centroids)
    for j in sample:  # by id, as the page asks; exact = every list probed, in the same process
        t = time.perf_counter()
        got = mapped.query(int(j), 12)[0]
        fast.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        want = mapped.query(int(j), 12, nprobe=nlist)[0]
        slow.append((time.perf_counter() - t) * 1000)
        hits.append(len(set(got.tolist()) & set(want.tolist())) / 12)
    vec_times = []
    for j in rng.integers(0, n, 50):
        vec = emb[j].astype(np.float32) + 0.05 * rng.standard_normal(512).astype(np.float32) / np.sqrt(512)
        t = time.perf_counter()
        mapped.query(vec, 12)
        vec_times.append((time.perf_counter() - t) * 1000)
    p95 = lambda v: round(float(np.percentile(v, 95)), 1)  # noqa: E731
    p50 = lambda v: round(float(np.percentile(v, 50)), 1)  # noqa: E731
    result["similar_query_p95_ms"] = p95(web["query_ms"])
    result["similar"] = {
        "embeddings": n, "dim": 512, "k": 12, "lists": nlist, "nprobe": mapped.nprobe,
        "recall_at_12_measured_at_build": round(mapped.recall, 4),
        "recall_at_12_vs_exact": round(float(np.mean(hits)), 4), "recall_queries": len(hits),
        "web_process": {"what": "fresh python: django.setup(), labeling.services.similar.load_index, "
                                "query by image id (k 13) as the image page",
                        "load_ms": round(web["load_ms"], 1), "first_query_ms": round(web["first_query_ms"], 1),
                        "queries": len(web["query_ms"]), "p50_ms": p50(web["query_ms"]),
                        "p95_ms": p95(web["query_ms"]), "memory_after_django_setup": web["after_django_setup"],
                        "memory_after_first_query": web["after_first_query"],
                        "memory_after_queries": web["after_queries"]},
        "by_id_p95_ms": p95(fast), "by_vector_p95_ms": p95(vec_times),
        "exact_same_index_p95_ms": p95(slow), "speedup_p95_vs_exact": round(p95(slow) / max(p95(fast), 1e-9), 1),
        "build_s": round(build_s, 1), "save_s": round(save_s, 1), "file_mb": round(path.stat().st_size / 2**20),
        "storage": "one uncompressed .npz: float16 vectors grouped by inverted list, centroids, offsets, ids "
                   "and the id lookup; memory-mapped, the probed lists read with pread (page cache shared "
                   "by processes; warm: the file had just been written)",
        "data": data, "load_average_1m": round(os.getloadavg()[0], 2)}
    del mapped
    path.unlink()
    print(f"similar: p95 {result['similar_query_p95_ms']} ms (web process), first query "
          f"{web['first_query_ms']:.1f} ms, recall@12 {np.mean(hits):.3f}, exact p95 {p95(slow)} ms, "
          f"RSS after first {web['after_first_query']['rss_mb']} MB", flush=True)


# --------------------------------------------------------------------------- main

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=shared_data())
    ap.add_argument("--image-size", type=int, default=96)
    ap.add_argument("--features-only", action="store_true")
    ap.add_argument("--scale", action="store_true", help="only knn_1m_s and similar_query_p95_ms")
    ap.add_argument("--scale-n", type=int, default=1_000_000)
    ap.add_argument("--exact-queries", type=int, default=1024)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--pca", type=int, default=256, help="probe input: top principal axes of the features")
    ap.add_argument("--probe-c", type=float, default=0.05)
    ap.add_argument("--probe-iters", type=int, default=200)
    ap.add_argument("--no-flip", action="store_true", help="without test-time flips")
    ap.add_argument("--tune-only", action="store_true")
    ap.add_argument("--retune", action="store_true", help="tune again even if the JSON has a choice")
    ap.add_argument("--out", default=OUT_NAME)
    args = ap.parse_args(argv)

    import torch
    torch.set_num_threads(min(2, torch.get_num_threads()))
    path = RESULTS / args.out
    result = json.loads(path.read_text()) if path.exists() else {}
    cmd = "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv if argv is not None else sys.argv[1:])])

    def save():
        result["machine"] = machine_info("cpu")
        RESULTS.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=1, default=float) + "\n")

    if args.scale:  # its own keys only, merged into the file as it is now
        found = {"scale_command": cmd, "scale_machine": machine_info("cpu")}
        scale(args, found)
        now = json.loads(path.read_text()) if path.exists() else {}
        path.write_text(json.dumps({**now, **{k: found[k] for k in SCALE_KEYS}}, indent=1, default=float) + "\n")
        return
    ds = dataset(args.data)
    feats = features(ds, args.data, args.image_size)
    if args.features_only:
        return
    t_start = time.time()
    emb = feats["emb"].astype(np.float32)
    views_all = [emb] + ([] if args.no_flip or "emb_flip" not in feats else [feats["emb_flip"].astype(np.float32)])
    proj = pca(np.concatenate(views_all), args.pca)
    mean = np.concatenate(views_all).mean(0)
    views_all = [((v - mean) @ proj).astype(np.float32) for v in views_all]
    half = half_of(ds["uri"])
    c = len(ds["names"])
    work = CACHE / "cifar10n_manifests"
    result.update(command=cmd, images=len(ds["uri"]), data="../shared/data/cifar10n-dev (25,000 CIFAR-10 train "
                  "images, CIFAR-10N human labels)", protocol={
                      "tune": {"half": "A", "images": int((half == 0).sum()), "label_sets": list(TUNE_SETS)},
                      "report": {"half": "B", "images": int((half == 1).sum()), "label_sets": list(REPORT_SETS)},
                      "halves": "sha1('half:' + file name) mod 2",
                      "never_tuned_on": "half B, and the aggre/random1/worst labels of either half"},
                  probabilities={"features": f"ImageNet MobileNetV2 (shared weights), {args.image_size} px, "
                                 f"{feats['emb'].shape[1]}-d pooled, L2-normalised; extraction "
                                 f"{float(feats.get('emb_s', 0)):.0f} s (+{float(feats.get('emb_flip_s', 0)):.0f} s "
                                 "the flipped images) on this machine, cached",
                                 "probe": f"{args.folds}-fold multinomial logistic regression (sklearn, C={args.probe_c}) "
                                 f"on the top {args.pca} principal axes (whitened), "
                                 f"{'flip-averaged (train on both views)' if len(views_all) > 1 else 'no flips'}",
                                 "seeds": "fold assignment (mlcore.folds.fold_of seed)"})
    save()

    # ---- tune on half A, random2 / random3: the witness embeddings, k, the decision rule
    rows_a = np.flatnonzero(half == 0)
    if "tuning" in result and not args.retune:
        chosen = result["tuning"]["chosen"]
        print(f"chosen earlier (--retune to tune again): {chosen}", flush=True)
    else:
        chosen = tune_half_a(ds, rows_a, views_all, emb, c, args, work, result, save)
    if args.tune_only:
        return
    report(ds, half, views_all, emb, c, args, work, result, save, chosen, t_start)


def tune_half_a(ds, rows_a, views_all, emb, c, args, work, result, save) -> dict:
    """Pick the witness embeddings, k and the decision rule on half A with random2 / random3."""
    candidates = [{"space": sp, "knn": k, "decision": d} for sp in ("backbone", "run") for k in (10, 25)
                  for d in ("cl", "cleanlab")]
    tune = {}
    for column in TUNE_SETS:
        uris, given = manifest_labels(ds, rows_a, column, work)
        true = ds["clean"][rows_a]
        views = [v[rows_a] for v in views_all]
        prob = out_of_sample(views, given, uris, c, args, seed=0)
        spaces = {sp: witness_space(sp, emb[rows_a], views, given, uris, c, args) for sp in ("backbone", "run")}
        for cand in candidates:
            opts = {"knn": cand["knn"], "decision": cand["decision"]}
            r = evaluate(prob, given, true, spaces[cand["space"]], opts, extra_rows=False)["rows"]["default"]
            key = f"{cand['space']}/knn{cand['knn']}/{cand['decision']}"
            tune.setdefault(key, []).append({k: r[k] for k in KEYS})
            print(f"tune {column} {key}: " + " ".join(f"{k} {r[k]:.4f}" for k in KEYS), flush=True)
    tune_mean = {key: {k: round(float(np.mean([r[k] for r in v])), 4) for k in KEYS} for key, v in tune.items()}
    best = max(tune_mean, key=lambda key: tune_mean[key]["f1"] + tune_mean[key]["precision_at_k"])
    space, knn_k, decision = best.split("/")
    chosen = {"space": space, "knn": int(knn_k[3:]), "decision": decision}
    result["tuning"] = {"criterion": "mean F1 + precision at k over random2, random3 on half A", "candidates": tune_mean,
                        "chosen": chosen}
    save()
    print(f"chosen: {chosen}", flush=True)
    return chosen


REVIEWER = "random2"  # the crowd reviewer: an independent CIFAR-10N worker's label


def retrain_variants(given, s, true, crowd) -> dict:
    """The label sets a retrain sees after the suspects (``s``) are worked, each with the images it trains on.

    ``blind``: every flagged image takes its suggested label, unreviewed. ``reviewed_crowd``:
    each flagged image is shown to a reviewer (another CIFAR-10N worker's label for it) with the
    suggestion, which is accepted where the reviewer's label is the suggestion and refused
    (the given label kept) otherwise, as an annotator works the queue. ``reviewed_oracle``: the
    same with a reviewer who is always right (the clean label): what a careful annotator can
    reach. ``excluded``: the flagged images left out of training (their labels untouched).
    """
    flagged, suggested = s["flagged"], s["suggested"]
    keep = np.ones(len(given), dtype=bool)
    out = {"blind": (np.where(flagged, suggested, given), keep, int(flagged.sum()))}
    for name, reviewer in (("reviewed_crowd", crowd), ("reviewed_oracle", true)):
        accepted = flagged & (suggested == reviewer)
        out[name] = (np.where(accepted, suggested, given), keep, int(accepted.sum()))
    out["excluded"] = (given, ~flagged, int(flagged.sum()))
    return out


def report(ds, half, views_all, emb, c, args, work, result, save, chosen, t_start) -> None:
    """Half B, aggre / random1 / worst, ``--seeds`` fold assignments; retrains on the worked suspects."""
    rows_a = np.flatnonzero(half == 0)
    rows_b = np.flatnonzero(half == 1)
    views_b = [v[rows_b] for v in views_all]
    views_test = [v[rows_a] for v in views_all]
    true_b, true_test = ds["clean"][rows_b], ds["clean"][rows_a]
    crowd_b = ds[REVIEWER][rows_b]
    opts = {"knn": chosen["knn"], "decision": chosen["decision"]}

    def acc(labels, keep=None):
        """Test accuracy on half A (clean labels) of a probe trained on half B's ``labels`` (rows ``keep``)."""
        keep = np.ones(len(labels), dtype=bool) if keep is None else keep
        m = probe_fit(np.concatenate([v[keep] for v in views_b]), np.tile(labels[keep], len(views_b)), c, args)
        return float((probe_prob(m, views_test).argmax(1) == true_test).mean())
    clean_acc = acc(true_b)
    settings = []
    for column in REPORT_SETS:
        uris, given = manifest_labels(ds, rows_b, column, work)
        per_seed, retrain = {}, {}
        space = witness_space(chosen["space"], emb[rows_b], views_b, given, uris, c, args)
        noisy_acc = acc(given)
        for seed in range(args.seeds):
            prob = out_of_sample(views_b, given, uris, c, args, seed=seed)
            ev = evaluate(prob, given, true_b, space, opts, extra_rows=True)
            if seed == 0 and len(views_b) > 1:  # what the test-time flips bring: the same, one view
                plain = evaluate(out_of_sample(views_b[:1], given, uris, c, args, seed=seed), given, true_b,
                                 space, opts, extra_rows=False)["rows"]
                ev["rows"]["default_no_flip"] = {k: plain["default"][k] for k in (*KEYS, "flagged")}
                ev["rows"]["cleanlab_no_flip"] = plain["cleanlab"]
            for name, r in ev["rows"].items():
                per_seed.setdefault(name, []).append(r)
            for name, (labels, keep, changed) in retrain_variants(given, ev["scores"], true_b, crowd_b).items():
                a = acc(labels, keep)
                retrain.setdefault(name, []).append({
                    "accuracy": a, "gap_closed": (a - noisy_acc) / max(1e-9, clean_acc - noisy_acc),
                    "images_changed": changed, "trained_on": int(keep.sum()),
                    "label_errors_after": int((labels[keep] != true_b[keep]).sum())})
            print(f"{column} seed {seed}: default {ev['rows']['default']['f1']:.4f}/"
                  f"{ev['rows']['default']['precision_at_k']:.4f} cleanlab {ev['rows']['cleanlab']['f1']:.4f}/"
                  f"{ev['rows']['cleanlab']['precision_at_k']:.4f} retrain "
                  + " ".join(f"{n} {v[-1]['accuracy']:.4f}" for n, v in retrain.items())
                  + f" (noisy {noisy_acc:.4f}, clean {clean_acc:.4f})", flush=True)
        entry = {"name": column, "images": len(rows_b), "label_errors": int((given != true_b).sum()),
                 "noise_rate": round(float((given != true_b).mean()), 4), "seeds": args.seeds,
                 **{name: summarise(runs) for name, runs in per_seed.items()},
                 "no_flip_rows": "default_no_flip and cleanlab_no_flip: seed 0 only, one view (no test-time flip)",
                 "retrain": {"test": "half A, clean labels", "noisy": round(noisy_acc, 4), "clean": round(clean_acc, 4),
                             "label_errors_before": int((given != true_b).sum()), "reviewer": REVIEWER,
                             **{name: {**{k: round(float(np.mean([r[k] for r in runs])), 4) for k in runs[0]},
                                       "std": {k: round(float(np.std([r[k] for r in runs])), 4)
                                               for k in ("accuracy", "gap_closed")}}
                                for name, runs in retrain.items()}}}
        d, cl = entry["default"], entry["cleanlab"]
        entry["default_beats_cleanlab_beyond_seed_spread"] = {
            k: bool(d[k] - cl[k] > d["std"][k] + cl["std"][k]) for k in ("f1", "precision_at_k")}
        # Both read the same probabilities at each seed: the paired difference is what the seeds move.
        diff = {k: np.array([a[k] - b[k] for a, b in zip(per_seed["default"], per_seed["cleanlab"])])
                for k in ("f1", "precision_at_k", "auroc")}
        entry["default_minus_cleanlab"] = {k: {"mean": round(float(v.mean()), 4), "std": round(float(v.std()), 4),
                                               "min": round(float(v.min()), 4)} for k, v in diff.items()}
        entry["default_beats_cleanlab_at_every_seed"] = {
            k: bool(diff[k].min() > 0 and diff[k].mean() > diff[k].std()) for k in ("f1", "precision_at_k")}
        rc = entry["retrain"]["reviewed_crowd"]
        entry["reviewed_retrain_closes_gap_beyond_seed_spread"] = bool(
            rc["accuracy"] - entry["retrain"]["noisy"] > rc["std"]["accuracy"])
        settings.append(entry)
        result["settings"] = settings
        result["retrain_protocol"] = (
            "probe retrained on half B after the flagged suspects are worked (retrain_variants), tested on half A's "
            f"clean labels; reviewed_crowd: accepted where the {REVIEWER} worker's label is the suggestion; "
            "reviewed_oracle: where the clean label is; blind: every flag accepted; excluded: flagged left out")
        result["wall_s"] = round(time.time() - t_start, 1)
        save()
    print(json.dumps({s["name"]: {"default": {k: s["default"][k] for k in KEYS},
                                  "cleanlab": {k: s["cleanlab"][k] for k in KEYS},
                                  "retrain": {k: v for k, v in s["retrain"].items()}} for s in settings}, indent=1))


if __name__ == "__main__":
    main()
