"""Reading training runs the way the quality pages and their API show them.

Everything here reads what a finished run left in the database (services.runs loads
it): the run's ``metrics`` JSON (per split: macro/micro averages and the confusion
matrix in the order of ``run.label_ids``), its ClassMetric rows (run x split x label)
and its Prediction rows (run x image).

Costs, at a million predictions per run:
- the dashboard, the confusion matrix and the F1-over-runs series read the metrics
  JSON and ClassMetric only: O(classes) (x runs), never a scan of predictions;
- a false-negative / false-positive / confusion-cell grid is a keyset page over the
  prediction indexes (``pred_fn_idx`` / ``pred_fp_idx``: run, split, label, correct,
  -confidence, id), so page 5,000 costs what page 1 costs: no OFFSET, no COUNT (the
  number of rows comes from the confusion matrix).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from django.utils import timezone

from ..models import Annotation, ClassMetric, Image, Label, Prediction, Split, Task, TrainingRun
from . import keyset

SPLITS = (Split.TEST, Split.TRAIN)  # test first: it is what a run is judged by
METRIC_KEYS = ("precision", "recall", "f1")
PAGE_SIZE = 60
TOP_PROBS = 5
SERIES_RUNS = 50  # the F1-over-runs chart shows at most the latest 50 finished runs
FLAT = 0.0005  # a change smaller than this (F1/precision/recall units) did not move (shown as ±0)

# The kinds of prediction grid: false negatives of a class (given X, predicted other),
# false positives (predicted X, given other), and one confusion cell (given X, predicted Y).
FN, FP, CELL = "fn", "fp", "cell"
GRID_KINDS = (FN, FP, CELL)


class QualityError(ValueError):
    """A request the quality views cannot answer (unknown split, label of another run...)."""


# --- runs --------------------------------------------------------------------------------

def run_labels(run: TrainingRun) -> list[Label]:
    """The run's labels in the order of its model outputs (``run.label_ids``).

    A run without ``label_ids`` (not snapshotted yet) falls back to the task's order.
    """
    if not run.label_ids:
        return list(Label.objects.filter(task_id=run.task_id).order_by("position", "id"))
    found = Label.objects.in_bulk(run.label_ids)
    return [found[i] for i in run.label_ids if i in found]


def previous_finished_run(run: TrainingRun) -> TrainingRun | None:
    """The run the dashboard compares ``run`` with: the run it retrains, else the previous
    finished training run of the task; never a suspects fold model (services.runs.baseline_run)."""
    from .runs import baseline_run

    return baseline_run(run)


def duration_s(run: TrainingRun) -> float | None:
    """Seconds from start to finish (to now while it runs); None before it starts."""
    if run.started_at is None:
        return None
    end = run.finished_at or timezone.now()
    return max(0.0, (end - run.started_at).total_seconds())


def run_summary(run: TrainingRun) -> dict:
    """One run as a row of the run list (and the API's run objects)."""
    return {
        "id": run.id,
        "task": run.task_id,
        "state": run.state,
        "state_reason": run.state_reason,
        "test_macro_f1": run.test_macro_f1,
        "created_by": run.created_by.get_username() if run.created_by_id else None,
        "created_at": run.created_at.isoformat() if run.created_at else None,
        "started_at": run.started_at.isoformat() if run.started_at else None,
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
        "duration_s": duration_s(run),
        "n_train": run.n_train,
        "n_test": run.n_test,
        "snapshot_size": run.n_train + run.n_test,
        "device": run.device,
        "parent": run.parent_id,
        "fold_of": run.fold_of_id,
        "config": run.config,
    }


def task_runs(task: Task, limit: int = 200) -> list[TrainingRun]:
    """The task's training runs, newest first, with who started them (fold models are listed
    with their suspects run, not here)."""
    return list(TrainingRun.objects.main().filter(task=task).select_related("created_by")
                .order_by("-created_at", "-id")[:limit])


FINISHED_STATES = (TrainingRun.State.DONE, TrainingRun.State.FAILED, TrainingRun.State.CANCELLED)


def run_status(run: TrainingRun) -> dict:
    """What the live progress page polls: state, progress, the whole run's share done and ETA,
    the loss curve (and which images its validation loss is on), the reason of a failure.
    Small: the history is per epoch / sampled steps, not every step."""
    progress = dict(run.progress or {})
    history = run.history if isinstance(run.history, list) else []
    return {
        "id": run.id,
        "state": run.state,
        "state_reason": run.state_reason,
        "finished": run.state in FINISHED_STATES,
        "cancel_requested": run.cancel_requested,
        "progress": progress,
        "overall": overall_progress(run),
        "loss_curve": loss_curve(history),
        "validation": validation_source(run),
        # The latest training sample: epoch, step, loss and speed stay on the page during
        # evaluation and after the run ends, when ``progress`` holds only the phase.
        "last_train": next((row for row in reversed(history)
                            if isinstance(row, dict) and row.get("phase") == "train"), None),
        "history": history,
        "device": run.device,
        "test_macro_f1": run.test_macro_f1,
        "started_at": run.started_at.isoformat() if run.started_at else None,
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
        "duration_s": duration_s(run),
        "heartbeat_at": run.heartbeat_at.isoformat() if run.heartbeat_at else None,
    }


# Relative cost of one image in each phase: a training step (forward + backward) costs about
# three forward passes; validation and the final prediction pass are one forward pass each.
TRAIN_COST, FORWARD_COST = 3.0, 1.0


def _plan(run: TrainingRun) -> dict:
    """The run's work in forward-pass units: per epoch training and validation, and the final
    prediction pass over every image (mlcore predicts train and test to write predictions.npz)."""
    cfg = run.config or {}
    epochs = max(1, int(cfg.get("epochs") or 1))
    held = float(cfg.get("val_fraction") or 0.0)
    n_train, n_test = max(0, run.n_train), max(0, run.n_test)
    n_val = round(n_train * held) if held > 0 else n_test
    train_units = TRAIN_COST * (n_train - (n_val if held > 0 else 0))
    if train_units <= 0:  # no snapshot counts (yet): epochs alone
        return {"epochs": epochs, "train": 1.0, "val": 0.0, "final": 0.0}
    return {"epochs": epochs, "train": train_units, "val": FORWARD_COST * n_val,
            "final": FORWARD_COST * (n_train + n_test)}


def overall_progress(run: TrainingRun) -> dict:
    """The whole run's share done (0..1) and its ETA in seconds, across phases.

    mlcore's ``eta_s`` is the ETA of the phase it is in: during an epoch's validation it said
    "5 s", then minutes again when the next epoch started. Here every phase is weighed by its
    images (a training image ~3 forward passes), so the share only grows and the ETA is the
    elapsed time scaled by what is left. A finished run is at 100 %, a failed or cancelled one
    keeps its share and has no ETA.
    """
    p = run.progress or {}
    plan = _plan(run)
    per_epoch = plan["train"] + plan["val"]
    total = plan["epochs"] * per_epoch + plan["final"]
    phase = p.get("phase")
    epoch = max(1, int(p.get("epoch") or 1))
    within = (p.get("step") or 0) / p["steps"] if p.get("steps") else 0.0
    if run.state == TrainingRun.State.DONE:
        share = 1.0
    elif phase == "train":
        share = ((epoch - 1) * per_epoch + within * plan["train"]) / total
    elif phase == "eval":  # the validation pass after an epoch
        share = ((epoch - 1) * per_epoch + plan["train"] + within * plan["val"]) / total
    elif phase == "embed":
        share = (plan["epochs"] * per_epoch + within * plan["final"]) / total
    elif phase == "load":
        share = 0.99
    else:  # queued, starting, or a final state: the last figure of the history
        share = _last_share(run, plan, total)
    share = max(0.0, min(1.0, share))
    eta = None
    if run.state == TrainingRun.State.RUNNING:
        elapsed = p.get("t") or duration_s(run) or 0.0
        if share >= 0.02 and elapsed:
            eta = elapsed * (1 - share) / share
        elif p.get("eta_s") is not None and phase == "train":
            eta = float(p["eta_s"])  # too early to scale: mlcore's own estimate of the training
    return {"share": round(share, 4), "eta_s": round(eta, 1) if eta is not None else None, "phase": phase}


def _last_share(run: TrainingRun, plan: dict, total: float) -> float:
    last = next((row for row in reversed(run.history if isinstance(run.history, list) else [])
                 if isinstance(row, dict) and row.get("phase") == "train" and row.get("steps")), None)
    if last is None:
        return 0.0
    per_epoch = plan["train"] + plan["val"]
    return ((max(1, last.get("epoch") or 1) - 1) * per_epoch + last["step"] / last["steps"] * plan["train"]) / total


def validation_source(run: TrainingRun) -> dict:
    """Which images the per-epoch validation loss is on: ``{"source", "is_test"}``. From run.json
    once the run is loaded, else from the config (Retag's manifests have no val split, so it is
    the test split unless ``val_fraction`` holds part of train out)."""
    found = (run.metrics or {}).get("validation") if isinstance(run.metrics, dict) else None
    if isinstance(found, dict) and found.get("source"):
        source = str(found["source"])
    elif float((run.config or {}).get("val_fraction") or 0) > 0:
        source = f"{float(run.config['val_fraction']):.0%} of train held out by URI hash"
    else:
        source = "test split (no val split, val_fraction=0)"
    return {"source": source, "is_test": source.startswith("test split")}


def loss_curve(history) -> dict:
    """The loss chart's points on an epoch axis, from the run's history:
    ``{"train": [{"x", "loss"}], "val": [{"x", "loss"}]}``.

    Training loss comes from the progress samples (``{"kind": "progress", "phase": "train",
    "epoch", "step", "steps", "loss"}``; step k of epoch e lies at e - 1 + k/steps),
    validation loss from the per-epoch rows (``{"kind": "epoch", "epoch", "val_loss"}``).
    """
    train, val = [], []
    for row in history if isinstance(history, list) else []:
        if not isinstance(row, dict):
            continue
        kind = row.get("kind", "progress")
        epoch, step, steps = row.get("epoch"), row.get("step"), row.get("steps")
        if kind == "progress" and row.get("loss") is not None and epoch and step is not None and steps:
            train.append({"x": round((epoch - 1) + step / steps, 4), "loss": float(row["loss"])})
        elif kind == "epoch" and row.get("val_loss") is not None and epoch:
            val.append({"x": float(epoch), "loss": float(row["val_loss"])})
    return {"train": train, "val": val, **loss_axis([c["loss"] for c in train + val],
                                                     [c["loss"] for c in train + val if c["x"] > 1.0])}


def loss_axis(losses: list[float], after_first_epoch: list[float]) -> dict:
    """``{"y_max", "clipped"}``: the loss axis's top. A first-epoch loss of 20 beside later
    values near 0.3 flattens the curve, so the axis is clipped at 1.5 x the highest loss after
    the first epoch when the first epoch goes above twice that; points above are drawn on the
    top edge and the page says so. None when nothing needs clipping."""
    if not losses or not after_first_epoch:
        return {"y_max": None, "clipped": False}
    later = max(after_first_epoch)
    if max(losses) <= 2 * later:
        return {"y_max": None, "clipped": False}
    return {"y_max": round(1.5 * later, 4), "clipped": True, "max_loss": round(max(losses), 4)}


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
        from .runs import retags_between

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

def check_split(split: str | None, default: str = Split.TEST) -> str:
    split = split or default
    if split not in Split.values:
        raise QualityError(f"unknown split {split!r}; use one of {', '.join(Split.values)}")
    return split


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


# --- false negatives / false positives / a confusion cell: keyset pages -----------------------

@dataclass(frozen=True)
class Cursor:
    """A position in a grid ordered by confidence (high first), then id."""

    confidence: float
    id: int

    def __str__(self) -> str:
        return f"{self.confidence!r}_{self.id}"

    @classmethod
    def parse(cls, text: str | None) -> "Cursor | None":
        if not text:
            return None
        try:
            conf, _, pk = str(text).rpartition("_")
            return cls(float(conf), int(pk))
        except ValueError:
            raise QualityError(f"bad cursor {text!r}") from None

    @classmethod
    def of(cls, prediction) -> "Cursor":
        return cls(prediction.confidence, prediction.id)


@dataclass(frozen=True)
class GridQuery:
    """Which predictions a grid shows: ``kind`` fn (given ``label``, predicted other), fp
    (predicted ``label``, given other) or cell (given ``label``, predicted ``predicted``)."""

    run: TrainingRun
    kind: str
    label: Label
    split: str = Split.TEST
    predicted: Label | None = None

    def predictions(self):
        qs = Prediction.objects.filter(run=self.run, split=self.split)
        if self.kind == FN:
            return qs.filter(given_label=self.label, correct=False)
        if self.kind == FP:
            return qs.filter(predicted_label=self.label, correct=False)
        same = self.predicted.id == self.label.id
        qs = qs.filter(given_label=self.label, correct=same)
        return qs if same else qs.filter(predicted_label=self.predicted)

    def count(self) -> int:
        """How many rows the grid has, from the confusion matrix (no COUNT over predictions)."""
        cm = confusion(self.run, self.split)
        if self.kind in (FN, FP):
            fn, fp = class_errors(cm).get(self.label.id, (0, 0))
            return fn if self.kind == FN else fp
        index = {lb["id"]: i for i, lb in enumerate(cm["labels"])}
        i, j = index.get(self.label.id), index.get(self.predicted.id)
        return 0 if i is None or j is None else cm["matrix"][i][j]


    def params(self) -> dict:
        out = {"kind": self.kind, "label": str(self.label.id), "split": self.split}
        if self.kind == CELL:
            out = {"kind": CELL, "given": str(self.label.id), "predicted": str(self.predicted.id),
                   "split": self.split}
        return out

    def title(self) -> str:
        if self.kind == FN:
            return f"False negatives of {self.label.name}"
        if self.kind == FP:
            return f"False positives of {self.label.name}"
        return f"Given {self.label.name}, predicted {self.predicted.name}"


def class_errors(cm: dict) -> dict[int, tuple[int, int]]:
    """label id -> (false negatives, false positives), read off a :func:`confusion` matrix."""
    return {lb["id"]: (cm["row_totals"][i] - cm["matrix"][i][i], cm["col_totals"][i] - cm["matrix"][i][i])
            for i, lb in enumerate(cm["labels"])}


def grid_query(run: TrainingRun, *, kind: str, label_id, predicted_id=None, split: str | None = None) -> GridQuery:
    """A GridQuery from request parameters; labels must be labels of the run."""
    if kind not in GRID_KINDS:
        raise QualityError(f"unknown grid kind {kind!r}; use one of {', '.join(GRID_KINDS)}")
    split = check_split(split)
    labels = {lb.id: lb for lb in run_labels(run)}

    def label_of(value, what):
        try:
            return labels[int(value)]
        except (TypeError, ValueError, KeyError):
            raise QualityError(f"{what} must be the id of one of the run's labels") from None

    label = label_of(label_id, "given" if kind == CELL else "label")
    predicted = label_of(predicted_id, "predicted") if kind == CELL else None
    return GridQuery(run=run, kind=kind, label=label, split=split, predicted=predicted)


@dataclass
class GridPage:
    items: list[dict]
    next: str | None  # cursor for the page after (None on the last page)
    prev: str | None  # cursor for the page before (None on the first page)
    count: int


def grid_page(q: GridQuery, *, after: str | None = None, before: str | None = None,
              size: int | None = None, with_current: bool = True) -> GridPage:
    """One page of ``q``, most confident first, by keyset.

    ``after``/``before`` are cursors (``"<confidence>_<id>"``). The condition
    ``confidence <= c AND (confidence < c OR id > i)`` lets PostgreSQL start the index
    range scan at ``c`` (the first part is an index condition on -confidence), so a deep
    page reads ``size`` + a few rows, never the rows before it.
    """
    size = max(1, min(int(size or PAGE_SIZE), 500))
    a, b = Cursor.parse(after), Cursor.parse(before)
    p = keyset.page(q.predictions(), ordering=("-confidence", "id"), size=size,
                    after=(a.confidence, a.id) if a else None, before=(b.confidence, b.id) if b else None)
    return GridPage(items=_grid_items(q, p.rows, with_current), next=str(Cursor(*p.next)) if p.next else None,
                    prev=str(Cursor(*p.prev)) if p.prev else None, count=q.count())


def _grid_items(q: GridQuery, rows: list[Prediction], with_current: bool) -> list[dict]:
    names = {lb.id: lb.name for lb in run_labels(q.run)}
    images = Image.objects.in_bulk([p.image_id for p in rows])
    current = {}
    if with_current and rows:
        current = {a.image_id: a for a in Annotation.objects.filter(
            task_id=q.run.task_id, image_id__in=[p.image_id for p in rows])}
    out = []
    for p in rows:
        im = images.get(p.image_id)
        a = current.get(p.image_id)
        item = {
            "prediction": p.id,
            "cursor": str(Cursor.of(p)),
            "image": p.image_id,
            "key": im.key if im else "",
            "status": im.status if im else "",
            "checksum": im.checksum if im else "",
            "split": p.split,
            "given_label": p.given_label_id,
            "given_name": names.get(p.given_label_id),
            "predicted_label": p.predicted_label_id,
            "predicted_name": names.get(p.predicted_label_id),
            "confidence": p.confidence,
        }
        if with_current:
            item["current_label"] = a.label_id if a else None
            item["current_name"] = (names.get(a.label_id) or (a.label.name if a.label_id else None)) if a else None
            item["version"] = a.version if a else 0
        out.append(item)
    return out


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


# --- one image: what the latest run of every task said -------------------------------------------

def decode_probs(data) -> np.ndarray:
    """The float16 probability bytes of a Prediction as a float32 vector."""
    return np.frombuffer(bytes(data or b""), dtype=np.float16).astype(np.float32)


def image_predictions(image: Image, top: int = TOP_PROBS) -> list[dict]:
    """For each task of the image's project: the latest finished run and what it predicted
    for the image (predicted label, confidence, the label it was given then, the top
    probabilities). Tasks without a finished run, or whose run did not see the image, say so.
    """
    from .runs import latest_finished_run

    out = []
    tasks = list(Task.objects.filter(project_id=image.project_id).order_by("name", "id"))
    current = {a.task_id: a.label_id for a in Annotation.objects.filter(image=image)}
    for task in tasks:
        run = latest_finished_run(task)
        entry = {"task": task.id, "task_name": task.name, "run": run.id if run else None, "prediction": None}
        if run is not None:
            p = Prediction.objects.filter(run=run, image=image).first()
            if p is not None:
                names = {lb.id: lb.name for lb in run_labels(run)}
                probs = decode_probs(p.probs)
                order = np.argsort(-probs, kind="stable")[:top]
                entry["prediction"] = {
                    "split": p.split,
                    "predicted_label": p.predicted_label_id,
                    "predicted_name": names.get(p.predicted_label_id),
                    "given_label": p.given_label_id,
                    "given_name": names.get(p.given_label_id),
                    "current_label": current.get(task.id),
                    "confidence": p.confidence,
                    "correct": p.correct,
                    "top": [{"label": run.label_ids[i], "name": names.get(run.label_ids[i]),
                             "prob": round(float(probs[i]), 4)}
                            for i in order if i < len(run.label_ids)],
                }
        out.append(entry)
    return out
