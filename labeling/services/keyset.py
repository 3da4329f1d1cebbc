"""Keyset pages: the one paginator of the grids (the image grid, the problems list, the
false negative / false positive / confusion-cell grids).

A page starts after (or ends before) the key of a row, never at an OFFSET, so page 10,000
costs what page 1 costs. For an ordering ``("-confidence", "id")`` the page after the
key ``(c, i)`` is

    confidence <= c AND (confidence < c OR id > i)

The first, non-strict part is an index condition PostgreSQL can start its range scan
at; the rest decides ties. One more row than the page is read to know whether another
page follows.
"""
from __future__ import annotations

from dataclasses import dataclass

from django.db.models import Q


@dataclass
class KeysetPage:
    rows: list
    next: tuple | None  # the key to pass as ``after`` for the next page; None on the last page
    prev: tuple | None  # the key to pass as ``before`` for the page before; None on the first page


def _beyond(ordering: tuple[str, ...], key: tuple) -> Q:
    """Rows past ``key`` in ``ordering`` (each field ``name`` ascending or ``-name`` descending)."""
    name = ordering[0].lstrip("-")
    op = "lt" if ordering[0].startswith("-") else "gt"
    if len(ordering) == 1:
        return Q(**{f"{name}__{op}": key[0]})
    return Q(**{f"{name}__{op}e": key[0]}) & (Q(**{f"{name}__{op}": key[0]}) | _beyond(ordering[1:], key[1:]))


def _reverse(ordering: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(f[1:] if f.startswith("-") else f"-{f}" for f in ordering)


def key_of(row, ordering: tuple[str, ...]) -> tuple:
    return tuple(getattr(row, f.lstrip("-")) for f in ordering)


def page(qs, *, ordering: tuple[str, ...], size: int, after: tuple | None = None,
         before: tuple | None = None) -> KeysetPage:
    """One page of ``qs`` in ``ordering`` (the last field unique, e.g. ``id``): the rows
    after the key ``after``, or before the key ``before``, or the first page."""
    if before is not None:
        rows = list(qs.filter(_beyond(_reverse(ordering), before)).order_by(*_reverse(ordering))[:size + 1])
        more_before = len(rows) > size
        rows = rows[:size][::-1]
        return KeysetPage(rows=rows, next=key_of(rows[-1], ordering) if rows else None,
                          prev=key_of(rows[0], ordering) if rows and more_before else None)
    if after is not None:
        qs = qs.filter(_beyond(ordering, after))
    rows = list(qs.order_by(*ordering)[:size + 1])
    more_after = len(rows) > size
    rows = rows[:size]
    return KeysetPage(rows=rows, next=key_of(rows[-1], ordering) if rows and more_after else None,
                      prev=key_of(rows[0], ordering) if rows and after is not None else None)
