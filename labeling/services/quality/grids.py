"""False negatives, false positives and one confusion cell: keyset pages over the
prediction indexes (pred_fn_idx / pred_fp_idx), so page 5,000 costs what page 1 costs."""
from __future__ import annotations

from dataclasses import dataclass


from ...models import Annotation, Image, Label, Prediction, Split, TrainingRun
from .. import keyset
from .common import CELL, FN, FP, GRID_KINDS, PAGE_SIZE, QualityError, check_split, run_labels
from .metrics import confusion

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
