"""The grid's sort orders: which values an image can be sorted by and how the ``sort``
parameter names them (the sorted page itself is in :mod:`.grid`)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SortKey:
    name: str  # the ``sort`` parameter, without the leading "-" of descending
    title: str
    relation: str  # the Image relation that holds the value (one row per image once narrowed)
    field: str
    high: str = "highest"  # how the page says "descending" ...
    low: str = "lowest"  # ... and "ascending"


SORT_KEYS = {k.name: k for k in (
    SortKey("confidence", "confidence", "predictions", "confidence"),
    SortKey("suspect", "suspect score", "suspects", "score"),
    SortKey("changed", "last change", "annotations", "updated_at", "newest", "oldest"),
)}


@dataclass(frozen=True)
class GridSort:
    key: SortKey
    descending: bool

    @property
    def param(self) -> str:
        return ("-" if self.descending else "") + self.key.name

    @property
    def title(self) -> str:
        return f"{self.key.title}, {self.key.high if self.descending else self.key.low} first"


SORT_CHOICES = [(s.param, s.title) for k in SORT_KEYS.values() for s in (GridSort(k, True), GridSort(k, False))]


def parse_sort(raw: str) -> GridSort | None:
    """``confidence``, ``-suspect``, ``changed`` ...; anything else is id order."""
    key = SORT_KEYS.get(raw.lstrip("-"))
    return GridSort(key, raw.startswith("-")) if key else None


class SortUnavailable(Exception):
    """The sort has nothing to sort by (no task, no finished run): the grid says so."""
