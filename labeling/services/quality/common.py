"""What every quality module shares: the splits, the metric keys, the grid kinds, the
error, a run's labels and the split check."""
from __future__ import annotations


from ...models import Label, Split, TrainingRun

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


def run_labels(run: TrainingRun) -> list[Label]:
    """The run's labels in the order of its model outputs (``run.label_ids``).

    A run without ``label_ids`` (not snapshotted yet) falls back to the task's order.
    """
    if not run.label_ids:
        return list(Label.objects.filter(task_id=run.task_id).order_by("position", "id"))
    found = Label.objects.in_bulk(run.label_ids)
    return [found[i] for i in run.label_ids if i in found]


def check_split(split: str | None, default: str = Split.TEST) -> str:
    split = split or default
    if split not in Split.values:
        raise QualityError(f"unknown split {split!r}; use one of {', '.join(Split.values)}")
    return split
