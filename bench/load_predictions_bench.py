"""Loading a run's predictions into PostgreSQL: a synthetic 1,000,000-image project.

    .venv/bin/python bench/load_predictions_bench.py [--images N] [--classes C]

Creates its own database (``retag_bench_runs``, dropped and migrated here, on the server
of ``DATABASE_URL`` or var/test.env's), bulk-inserts N images with COPY, writes a
``predictions.npz`` and ``metrics.json`` as mlcore would, then times
``services.run_results.load_run_results`` (binary COPY) on it, twice (the second load
replaces the first: the idempotent retry a resumed run does). Prints a table and writes
bench/results/load_predictions.json. Target: 1M predictions in under a minute.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.common import (RESULTS, machine_info, print_table, recreate_database, server_url,  # noqa: E402
                          setup_django)

BENCH_DB = "retag_bench_runs"


def make_images(project, n: int) -> None:
    """N images with COPY (the import path is benchmarked elsewhere; here only rows matter)."""
    from django.db import connection
    from django.utils import timezone

    now = timezone.now()
    with connection.cursor() as cursor:
        with cursor.cursor.copy("COPY labeling_image (project_id, key, uri, checksum, size_bytes, split, status, "
                                "status_reason, thumbnail_uri, source_uri, created_at, updated_at) FROM STDIN") as copy:
            for i in range(n):
                copy.write_row((project.id, f"img/{i:07d}.png", f"file:///bench/img/{i:07d}.png", "", 0,
                                "test" if i % 5 == 0 else "train", "ok", "", "", "", now, now))


def synthesise(n: int, labels: list[str], seed: int = 0) -> tuple[dict, dict]:
    """predictions.npz arrays and metrics.json, as mlcore writes them (mlcore.evaluate)."""
    import numpy as np

    from mlcore.evaluate import classification_metrics

    rng = np.random.default_rng(seed)
    c = len(labels)
    given = rng.integers(0, c, n)
    logits = rng.normal(size=(n, c)).astype(np.float32)
    logits[np.arange(n), given] += 2.5
    prob = np.exp(logits - logits.max(1, keepdims=True))
    prob /= prob.sum(1, keepdims=True)
    pred = prob.argmax(1)
    split = np.where(np.arange(n) % 5 == 0, "test", "train")
    arrays = {"uri": np.asarray([f"file:///bench/img/{i:07d}.png" for i in range(n)]), "split": split,
              "label": given.astype(np.int64), "pred": pred.astype(np.int64), "confidence": prob.max(1),
              "correct": pred == given, "prob": prob.astype(np.float32), "labels": np.asarray(labels)}
    metrics = {s: classification_metrics(given[split == s], pred[split == s], labels) for s in ("train", "test")}
    return arrays, metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=1_000_000)
    parser.add_argument("--classes", type=int, default=10)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="retag-load-bench-"))
    setup_django(recreate_database(server_url(), BENCH_DB), migrate=True, STORAGE_URI=(work / "storage").as_uri(),
                 RETAG_VAR_DIR=str(work / "var"), DJANGO_SETTINGS_MODULE="labeling.settings", LOG_LEVEL="WARNING")
    import numpy as np

    from labeling.models import ClassMetric, Prediction, TrainingRun
    from labeling.services.labels import ensure_labels, get_or_create_task
    from labeling.services.projects import create_project, project_storage_uri
    from labeling.services.run_results import load_run_results
    from mlcore import storage
    from mlcore.storage import npz_bytes

    project = create_project(name="bench-runs")
    task = get_or_create_task(project, "category")
    names = [f"class-{i}" for i in range(args.classes)]
    by_name = ensure_labels(task, names)
    t = time.perf_counter()
    make_images(project, args.images)
    images_s = time.perf_counter() - t

    t = time.perf_counter()
    arrays, metrics = synthesise(args.images, names)
    run = TrainingRun.objects.create(project=project, task=task, label_ids=[by_name[n].id for n in names],
                                     label_names=names, state="running")
    run.output_uri = project_storage_uri(project, "runs", str(run.id))
    run.save()
    storage.write_bytes(storage.join(run.output_uri, "predictions.npz"), npz_bytes(arrays))
    storage.write_bytes(storage.join(run.output_uri, "metrics.json"), json.dumps(metrics).encode())
    synth_s = time.perf_counter() - t

    t = time.perf_counter()
    first = load_run_results(run)
    load_s = time.perf_counter() - t
    t = time.perf_counter()
    load_run_results(run)
    reload_s = time.perf_counter() - t

    n = Prediction.objects.filter(run=run).count()
    assert n == args.images, (n, args.images)
    sample = Prediction.objects.filter(run=run).order_by("image__key").first()
    probs = np.frombuffer(bytes(sample.probs), dtype=np.float16)
    assert probs.shape == (args.classes,) and abs(float(probs.sum()) - 1) < 0.02
    result = {
        "n_images": args.images, "classes": args.classes,
        "load_predictions_s": round(load_s, 2), "predictions_per_s": round(args.images / load_s),
        "reload_s": round(reload_s, 2), "class_metrics": ClassMetric.objects.filter(run=run).count(),
        "setup_images_copy_s": round(images_s, 2), "synthesise_npz_s": round(synth_s, 2),
        "npz_mb": round(storage.local_path(storage.join(run.output_uri, "predictions.npz")).stat().st_size / 2**20, 1),
        "loader": "psycopg3 binary COPY", "database": "postgresql", "machine": machine_info(device="cpu"),
        "detail": {k: round(v, 3) if isinstance(v, float) else v for k, v in first.items()},
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "load_predictions.json").write_text(json.dumps(result, indent=1) + "\n")
    m = result["machine"]
    print_table([("images", f"{args.images:,}"), ("classes", args.classes),
                 ("load predictions + metrics (s)", result["load_predictions_s"]),
                 ("predictions/s", f"{result['predictions_per_s']:,}"),
                 ("reload, replacing (s)", result["reload_s"]),
                 ("predictions.npz (MB)", result["npz_mb"]),
                 ("machine", f"{m.get('cpu')} x{m.get('cores')}, {m.get('memory_gb')} GB")],
                title="load_run_results into PostgreSQL")


if __name__ == "__main__":
    main()
