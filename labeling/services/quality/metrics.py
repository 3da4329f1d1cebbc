"""Per-class metrics with deltas against the previous run (the dashboard), the confusion
matrix and F1 over runs: from the metrics JSON and ClassMetric rows, never a scan of predictions."""
from __future__ import annotations


from ...models import ClassMetric, Label, Split, Task, TrainingRun
from .common import FLAT, METRIC_KEYS, SERIES_RUNS, SPLITS, check_split, run_labels
from .progress import previous_finished_run, run_summary

# --- the dashboard: per-class metrics with deltas -----------------------------------------

def split_metrics(run: TrainingRun, split: str) -> dict:
    """The run's metrics JSON for one split ({} when it has none)."""
    metrics = run.metrics or {}
    doc = metrics.get(split)
    if doc is None and isinstance(metrics.get("splits"), dict):
        doc = metrics["splits"].get(split)
    return doc if isinstance(doc, dict) else {}


def _delta(now: dict | None, before: dict | None, keys=METRIC_KEYS) -> dict | None:
    if not now or not before:
        return None
    return {k: (now[k] - before[k]) if now.get(k) is not None and before.get(k) is not None else None
            for k in keys}


def _averages(doc: dict) -> dict:
    out = {}
    for kind in ("macro", "micro"):
        avg = doc.get(kind) or {}
        out[kind] = {k: avg.get(k) for k in METRIC_KEYS} if avg else None
    out["accuracy"] = doc.get("accuracy")
    out["support"] = doc.get("support")
    return out


def class_metrics(run: TrainingRun, previous: TrainingRun | None = None) -> dict:
    """Per split: each class's precision, recall, F1 and support in the run's label order,
    with the change against ``previous`` (same label); macro/micro averages and accuracy
    with their changes. Two queries (the two runs' ClassMetric rows), whatever the size."""
    labels = run_labels(run)
    rows = {(m.split, m.label_id): m for m in ClassMetric.objects.filter(run=run)}
    before = {}
    if previous is not None:
        before = {(m.split, m.label_id): m for m in ClassMetric.objects.filter(run=previous)}
    out = {}
    for split in SPLITS:
        classes = []
        for lb in labels:
            m = rows.get((split, lb.id))
            if m is None:
                continue
            now = {"precision": m.precision, "recall": m.recall, "f1": m.f1, "support": m.support}
            b = before.get((split, lb.id))
            prev = {"precision": b.precision, "recall": b.recall, "f1": b.f1, "support": b.support} if b else None
            delta = _delta(now, prev)
            if delta is not None:
                delta["support"] = now["support"] - prev["support"]
            classes.append({"label": lb.id, "name": lb.name, **now, "delta": delta})
        doc = split_metrics(run, split)
        avg = _averages(doc)
        prev_avg = _averages(split_metrics(previous, split)) if previous is not None else {}
        out[split] = {
            "classes": classes,
            "macro": avg["macro"],
            "micro": avg["micro"],
            "accuracy": avg["accuracy"],
            "support": avg["support"] if avg["support"] is not None else sum(c["support"] for c in classes),
            "macro_delta": _delta(avg["macro"], prev_avg.get("macro")),
            "micro_delta": _delta(avg["micro"], prev_avg.get("micro")),
            "accuracy_delta": (avg["accuracy"] - prev_avg["accuracy"]
                               if avg["accuracy"] is not None and prev_avg.get("accuracy") is not None else None),
        }
    return out


# The figures the dashboard's sentence speaks of, in this order: (split, average, name).
HEADLINE = ((Split.TEST, "macro", "test macro-F1"), (Split.TEST, "micro", "test micro-F1"),
            (Split.TRAIN, "macro", "train macro-F1"))


def movement(name: str, before: float | None, now: float | None) -> dict | None:
    """One figure's move between two runs: direction rose / fell / did not move, and the sentence
    part that says it ("test macro-F1 fell from 0.766 to 0.755")."""
    if before is None or now is None:
        return None
    change = now - before
    direction = "rose" if change > FLAT else "fell" if change < -FLAT else "flat"
    text = (f"{name} did not move ({now:.3f})" if direction == "flat"
            else f"{name} {direction} from {before:.3f} to {now:.3f}")
    return {"name": name, "before": before, "now": now, "change": change, "direction": direction, "text": text}


def dashboard(run: TrainingRun) -> dict:
    """Everything the run dashboard shows: the per-class table of both splits, the run it is
    compared with and why (the run it retrains, else the previous training run of the task),
    how many retags of this task happened between the two, and which way each headline
    figure moved."""
    previous = previous_finished_run(run)
    retags = None
    moves = []
    if previous is not None:
        from ..runs import retags_between

        retags = retags_between(previous, run)
        for split, avg, name in HEADLINE:
            m = movement(name, (split_metrics(previous, split).get(avg) or {}).get("f1"),
                         (split_metrics(run, split).get(avg) or {}).get("f1"))
            if m is not None:
                moves.append(m)
    return {
        "run": run_summary(run),
        "previous": run_summary(previous) if previous is not None else None,
        "compared_because": (None if previous is None else
                             "retrains" if previous.pk == run.parent_id else "previous"),
        "retags_since_previous": retags,
        "moves": moves,
        "sentence": "; ".join(m["text"] for m in moves),
        "labels": [{"id": lb.id, "name": lb.name} for lb in run_labels(run)],
        "splits": class_metrics(run, previous),
    }


# --- the confusion matrix ------------------------------------------------------------------


def confusion(run: TrainingRun, split: str = Split.TEST) -> dict:
    """The confusion matrix of a split: rows are the given label, columns the predicted
    one, both in the run's label order; with row totals and row shares (recall on the
    diagonal), for the heat map. Read from the run's metrics JSON: O(classes^2)."""
    split = check_split(split)
    labels = run_labels(run)
    doc = split_metrics(run, split)
    matrix = doc.get("confusion") or []
    n = len(run.label_ids) if run.label_ids else len(labels)
    if len(matrix) != n or any(len(row) != n for row in matrix):
        matrix = [[0] * n for _ in range(n)]
    by_id = {lb.id: lb for lb in labels}
    ids = run.label_ids or [lb.id for lb in labels]
    keep = [i for i, label_id in enumerate(ids) if label_id in by_id]  # labels deleted since are dropped
    matrix = [[int(matrix[i][j]) for j in keep] for i in keep]
    row_totals = [sum(row) for row in matrix]
    col_totals = [sum(matrix[i][j] for i in range(len(keep))) for j in range(len(keep))]
    shares = [[(c / row_totals[i]) if row_totals[i] else 0.0 for c in row] for i, row in enumerate(matrix)]
    return {
        "run": run.id,
        "split": split,
        "labels": [{"id": by_id[ids[i]].id, "name": by_id[ids[i]].name} for i in keep],
        "matrix": matrix,
        "row_totals": row_totals,
        "col_totals": col_totals,
        "shares": shares,
        "total": sum(row_totals),
        "correct": sum(matrix[i][i] for i in range(len(keep))),
    }


# --- F1 over runs ------------------------------------------------------------------------------

def f1_series(task: Task, split: str = Split.TEST, limit: int = SERIES_RUNS) -> dict:
    """F1 of every class of ``task`` over its finished training runs (oldest first; no suspects
    fold models), and macro-F1.

    One query for the runs, one for their ClassMetric rows. A class a run did not know
    (added later) has ``None`` for that run.
    """
    split = check_split(split)
    runs = list(TrainingRun.objects.main().filter(task=task, state=TrainingRun.State.DONE)
                .order_by("-created_at", "-id")[:limit])[::-1]
    values = {(m["run_id"], m["label_id"]): m["f1"] for m in ClassMetric.objects.filter(
        run__in=[r.id for r in runs], split=split).values("run_id", "label_id", "f1")}
    labels = list(Label.objects.filter(task=task).order_by("position", "id"))
    return {
        "task": task.id,
        "split": split,
        "runs": [{"id": r.id, "created_at": r.created_at.isoformat(), "parent": r.parent_id,
                  "macro_f1": (split_metrics(r, split).get("macro") or {}).get("f1")} for r in runs],
        "labels": [{"id": lb.id, "name": lb.name, "f1": [values.get((r.id, lb.id)) for r in runs]}
                   for lb in labels],
    }
