"""Loading a finished run's files into the database, fast.

mlcore writes ``metrics.json``, ``predictions.npz`` and ``run.json`` under the run's
``output_uri``; the quality pages must never read storage, so :func:`load_run_results`
turns them into :class:`~labeling.models.Prediction` rows (probabilities as float16
bytes in ``run.label_ids`` order), :class:`~labeling.models.ClassMetric` rows per split
and label, and ``run.metrics`` (per split: accuracy, macro/micro P/R/F1, support and
the confusion matrix in label order).

Predictions go in with PostgreSQL's binary ``COPY`` (psycopg 3 ``cursor.copy``): a
million rows load in well under a minute (bench/load_predictions_bench.py), where
``bulk_create`` would take many. SQLite (the embedded default) gets ``bulk_create``.
Loading is idempotent: the run's earlier rows are replaced, in one transaction.
"""
from __future__ import annotations

import json
import time
from collections import defaultdict, deque

import numpy as np
from django.db import connection, transaction

from mlcore import storage

from ..models import ClassMetric, Image, Prediction, TrainingRun

COPY_COLUMNS = ("run_id", "image_id", "split", "given_label_id", "predicted_label_id", "confidence",
                "correct", "probs")
COPY_TYPES = ("int8", "int8", "varchar", "int8", "int8", "float8", "bool", "bytea")
BULK_BATCH = 2000
MAX_SKIPPED = 200  # unreadable images listed on the run (all are in run.json)


class ResultsMismatch(ValueError):
    """The run's files do not fit the run (other labels, unknown images)."""


def run_file_uri(run: TrainingRun, name: str) -> str:
    """``model.pt``, ``run.json``, ``metrics.json``, ``predictions.npz``, ``embeddings.npz``..."""
    return storage.join(run.output_uri, name)


def read_json(uri: str) -> dict:
    return json.loads(storage.read_bytes(uri))


def read_predictions(run: TrainingRun) -> dict[str, np.ndarray]:
    """The arrays of the run's ``predictions.npz`` (see mlcore/README.md)."""
    from mlcore.storage import load_npz

    return load_npz(storage.read_bytes(run_file_uri(run, "predictions.npz")))


@transaction.atomic
def load_run_results(run: TrainingRun, *, predictions: dict[str, np.ndarray] | None = None,
                     metrics: dict | None = None, run_json: dict | None = None) -> dict:
    """Load the run's predictions, class metrics and metrics into the database; return counts and seconds.

    Reads the files under ``run.output_uri`` unless they are passed in. Replaces what the
    run had (a retried load never duplicates). Sets ``run.metrics``, ``run.test_macro_f1``,
    ``run.weights_uri``, ``run.device`` (from run.json) and ``run.timings["load_s"]``; the
    run's state is left to the caller (services.runs.execute_run marks it done in the same
    transaction). Used by the worker, by benchmarks and by tests.

    ``run.metrics``: ``{"train": M, "test": M, "skipped": [...], "skipped_total": n,
    "best_epoch": e}`` where M is metrics.json's split document without ``per_class``
    (``accuracy``, ``support``, ``macro``/``micro`` P/R/F1, ``labels``, ``confusion`` with
    rows = given label, columns = predicted, in ``label_ids`` order) plus ``label_ids``.
    """
    t0 = time.perf_counter()
    metrics = metrics if metrics is not None else read_json(run_file_uri(run, "metrics.json"))
    if run_json is None and storage.exists(run_file_uri(run, "run.json")):
        run_json = read_json(run_file_uri(run, "run.json"))
    arrays = predictions if predictions is not None else read_predictions(run)
    check_labels(run, arrays, metrics)
    if not len(arrays["uri"]):
        skipped = (run_json or {}).get("skipped") or [{}]
        raise ResultsMismatch(f"no prediction at all: every image of the snapshot was unreadable "
                              f"({len((run_json or {}).get('skipped', []))} skipped; first: "
                              f"{skipped[0].get('uri', '?')}: {skipped[0].get('reason', '?')})")

    n = load_predictions(run, arrays)
    ClassMetric.objects.filter(run=run).delete()
    ClassMetric.objects.bulk_create(class_metric_rows(run, metrics))
    run.metrics = metrics_summary(run, metrics)
    run.test_macro_f1 = (metrics.get("test") or {}).get("macro", {}).get("f1")
    run.weights_uri = run_file_uri(run, "model.pt")
    if run_json:
        env = run_json.get("environment") or {}
        run.device = (env.get("device_name") or env.get("device") or run.device)[:100]
        run.timings = {**run.timings, "train_s": (run_json.get("timing") or {}).get("train_s"),
                       "mlcore_wall_s": (run_json.get("timing") or {}).get("wall_s"),
                       "images_per_s": (run_json.get("timing") or {}).get("images_per_s")}
        run.metrics["skipped"] = run_json.get("skipped", [])[:MAX_SKIPPED]
        run.metrics["skipped_total"] = len(run_json.get("skipped", []))
        run.metrics["best_epoch"] = run_json.get("best_epoch")
        # Which images the per-epoch "validation" curves were measured on (the test split when the
        # manifest has no val split and nothing was held out): the loss chart says so.
        run.metrics["validation"] = run_json.get("validation")
    load_s = time.perf_counter() - t0
    run.timings = {**run.timings, "load_s": round(load_s, 3)}
    run.save(update_fields=["metrics", "test_macro_f1", "weights_uri", "device", "timings"])
    return {"predictions": n, "class_metrics": ClassMetric.objects.filter(run=run).count(), "load_s": load_s}


def check_labels(run: TrainingRun, arrays: dict, metrics: dict) -> None:
    if "tasks" in metrics or "tasks" in arrays:
        raise ResultsMismatch("multi-facet results: a Retag run trains one task")
    names = [str(x) for x in arrays.get("labels", [])]
    if run.label_names and names != list(run.label_names):
        raise ResultsMismatch(f"predictions are for labels {names}, the run snapshot has {run.label_names}")
    if len(names) != len(run.label_ids):
        raise ResultsMismatch(f"predictions have {len(names)} labels, the run has {len(run.label_ids)}")


def image_ids_for(run: TrainingRun, uris: np.ndarray) -> np.ndarray:
    """Image ids of the prediction rows, matched by URI within the run's project.

    Two images of a project with one URI (rare) each get one of that URI's rows, in key
    order, as the training manifest listed them.
    """
    by_uri: dict[str, deque] = defaultdict(deque)
    for image_id, uri in Image.objects.filter(project_id=run.project_id).order_by("key", "id").values_list(
            "id", "uri").iterator(chunk_size=20000):
        by_uri[uri].append(image_id)
    ids = np.empty(len(uris), dtype=np.int64)
    for i, uri in enumerate(uris.tolist()):
        found = by_uri.get(uri)
        if not found:
            raise ResultsMismatch(f"prediction for {uri!r}, which is no image of project {run.project_id}")
        ids[i] = found.popleft() if len(found) > 1 else found[0]
    return ids


def prediction_columns(run: TrainingRun, arrays: dict) -> dict[str, np.ndarray | list]:
    """Columns of the Prediction rows (label indices turned into label ids)."""
    label_ids = np.asarray(run.label_ids, dtype=np.int64)
    label = np.asarray(arrays["label"], dtype=np.int64)
    pred = np.asarray(arrays["pred"], dtype=np.int64)
    prob = np.ascontiguousarray(np.asarray(arrays["prob"]).astype(np.float16))
    width = prob.shape[1] * 2 if prob.ndim == 2 else 0
    blob = prob.tobytes()
    return {
        "image_id": image_ids_for(run, np.asarray(arrays["uri"])),
        "split": np.asarray(arrays["split"]).astype(str),
        "given": np.where(label >= 0, label_ids[np.clip(label, 0, None)], -1) if len(label_ids) else label,
        "pred": label_ids[pred] if len(pred) else pred,
        "confidence": np.asarray(arrays["confidence"], dtype=np.float64),
        "correct": np.asarray(arrays["correct"], dtype=bool),
        "probs": [blob[i:i + width] for i in range(0, len(blob), width)] if width else [],
    }


def load_predictions(run: TrainingRun, arrays: dict) -> int:
    """Replace the run's Prediction rows with ``arrays`` (predictions.npz); return the row count."""
    cols = prediction_columns(run, arrays)
    Prediction.objects.filter(run=run)._raw_delete(Prediction.objects.db)
    given = [None if g < 0 else g for g in cols["given"].tolist()]
    rows = zip(cols["image_id"].tolist(), cols["split"].tolist(), given, cols["pred"].tolist(),
               cols["confidence"].tolist(), cols["correct"].tolist(), cols["probs"])
    if connection.vendor == "postgresql":
        return _copy_predictions(run.id, rows)
    n = 0
    batch = []
    for image_id, split, g, p, conf, ok, probs in rows:
        batch.append(Prediction(run_id=run.id, image_id=image_id, split=split, given_label_id=g,
                                predicted_label_id=p, confidence=conf, correct=ok, probs=probs))
        if len(batch) >= BULK_BATCH:
            Prediction.objects.bulk_create(batch)
            n += len(batch)
            batch = []
    Prediction.objects.bulk_create(batch)
    return n + len(batch)


def _copy_predictions(run_id: int, rows) -> int:
    table = Prediction._meta.db_table
    n = 0
    with connection.cursor() as cursor:
        raw = cursor.cursor  # the psycopg 3 cursor under Django's wrapper
        with raw.copy(f"COPY {table} ({', '.join(COPY_COLUMNS)}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(COPY_TYPES)
            write = copy.write_row
            for image_id, split, g, p, conf, ok, probs in rows:
                write((run_id, image_id, split, g, p, conf, ok, probs))
                n += 1
    return n


def class_metric_rows(run: TrainingRun, metrics: dict) -> list[ClassMetric]:
    """One ClassMetric per split and label, from metrics.json's ``per_class`` (by label name)."""
    out = []
    names = list(run.label_names) or None
    for split, m in metrics.items():
        if split not in ("train", "test"):
            continue
        per_class = m.get("per_class", {})
        order = names or m.get("labels", [])
        for label_id, name in zip(run.label_ids, order):
            c = per_class.get(name)
            if c is None:
                continue
            out.append(ClassMetric(run=run, split=split, label_id=label_id, precision=c["precision"],
                                   recall=c["recall"], f1=c["f1"], support=c["support"]))
    return out


def metrics_summary(run: TrainingRun, metrics: dict) -> dict:
    """``run.metrics``: per split what metrics.json says, but ``per_class`` (in ClassMetric),
    with ``label_ids`` giving the confusion matrix's row and column order."""
    out = {}
    for split, m in metrics.items():
        out[split] = {k: v for k, v in m.items() if k != "per_class"}
        out[split]["label_ids"] = list(run.label_ids)
    return out
