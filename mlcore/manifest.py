"""Manifests: the CSV a run trains on, and the one vocabulary of splits.

A manifest is a CSV with ``uri,split`` and one label column per task: ``label``
for a single task, or any other column names for a multi-facet manifest
(``uri,split,neckline,sleeve``). Relative URIs are resolved against the
manifest's folder. An empty label cell means "no label for this task": the
image is predicted and embedded, but not trained on or scored for that task.

Splits are ``train``, ``val`` and ``test``, case and surrounding blanks aside; ``validation``,
``valid`` and ``dev`` are read as ``val``. :func:`canonical_split` is the one place that
says so: the app's importer reads a split through it too (and keeps only train and test),
and reads the CSV itself through :func:`manifest_rows`, as :func:`read_manifest` does.
"""
from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import numpy as np

from . import storage

SPLITS = ("train", "val", "test")
SPLIT_ALIASES = {"validation": "val", "valid": "val", "dev": "val"}


def canonical_split(value: str) -> str:
    """``train``, ``val`` or ``test`` for a split as written (``" Validation"`` -> ``val``);
    ValueError naming the vocabulary for anything else."""
    split = (value or "").strip().lower()
    split = SPLIT_ALIASES.get(split, split)
    if split not in SPLITS:
        aliases = ", ".join(f"{a} = {c}" for a, c in SPLIT_ALIASES.items())
        raise ValueError(f"split {value!r} is not one of {', '.join(SPLITS)} (also read: {aliases})")
    return split


@dataclass
class ManifestRows:
    """A manifest's CSV as read, before either reader judges it: the header (each name
    stripped), the task columns (the header less ``uri`` and ``split``) and the rows."""

    header: list[str]
    tasks: list[str]
    rows: Iterator[tuple[int, dict[str, str]]]  # (line number, column -> stripped value)


def manifest_rows(raw: bytes, name: str = "the manifest") -> ManifestRows:
    """The one reading of a manifest's bytes, shared by :func:`read_manifest` and the app's
    importer: UTF-8 (a BOM aside; ValueError naming ``name`` otherwise), a stripped header,
    blank rows skipped, every header column in every row ("" where a row is short). What a
    bad row means (the whole manifest fails, or only that row) is each reader's to say."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ValueError(f"{name} is not UTF-8 text") from None
    reader = csv.reader(io.StringIO(text))
    header = [h.strip() for h in next(reader, [])]
    tasks = [h for h in header if h and h not in ("uri", "split")]

    def rows():
        for line, values in enumerate(reader, start=2):
            if any(v.strip() for v in values):
                cells = dict(zip(header, (v.strip() for v in values)))
                yield line, {h: cells.get(h, "") for h in header}

    return ManifestRows(header, tasks, rows())


@dataclass
class Manifest:
    """Rows of a manifest, with each task's labels in their fixed order."""

    uri: str
    sha256: str
    uris: list[str]
    splits: list[str]
    tasks: dict[str, list[str]]       # task name -> ordered labels
    targets: np.ndarray               # int64 [N, T], -1 where a row has no label for a task
    notes: list[str] = field(default_factory=list)

    @property
    def task_names(self) -> list[str]:
        return list(self.tasks)

    def __len__(self) -> int:
        return len(self.uris)

    def indices(self, split: str) -> np.ndarray:
        return np.flatnonzero(np.asarray(self.splits) == split)


def _resolve(base_uri: str, uri: str) -> str:
    if uri.startswith("s3://") or uri.startswith("file://") or os.path.isabs(uri):
        return storage.to_uri(uri)
    base = base_uri.rsplit("/", 1)[0]
    return storage.to_uri(storage.join(base, uri)) if not storage.is_s3(base) else storage.join(base, uri)


def read_manifest(uri: str, labels: Sequence[str] | dict[str, Sequence[str]] | None = None) -> Manifest:
    """Read and validate a manifest; ``labels`` fixes the label order (per task for multi-facet).

    Without ``labels``, each task's labels are its distinct values, sorted (noted in
    ``Manifest.notes``). A value not in a given label list is an error, not a silent drop.
    """
    uri = storage.to_uri(uri)
    raw = storage.read_bytes(uri)
    read = manifest_rows(raw, f"manifest {uri}")
    rows = list(read.rows)
    if not rows:
        raise ValueError(f"manifest {uri} has no rows")
    columns = read.header
    missing = {"uri", "split"} - set(columns)
    if missing:
        raise ValueError(f"manifest {uri} lacks column(s) {sorted(missing)}; it has {columns}")
    task_cols = read.tasks
    if not task_cols:
        raise ValueError(f"manifest {uri} has no label column (expected 'label' or one column per task)")

    if labels is None:
        given: dict[str, list[str]] = {}
    elif isinstance(labels, dict):
        given = {k: list(v) for k, v in labels.items()}
    else:
        if len(task_cols) != 1:
            raise ValueError(f"a plain label list needs a single-task manifest; tasks are {task_cols}")
        given = {task_cols[0]: list(labels)}
    unknown_tasks = set(given) - set(task_cols)
    if unknown_tasks:
        raise ValueError(f"labels given for task(s) {sorted(unknown_tasks)} not in manifest columns {task_cols}")

    notes = []
    tasks: dict[str, list[str]] = {}
    for t in task_cols:
        if t in given:
            if len(set(given[t])) != len(given[t]):
                raise ValueError(f"task {t!r}: duplicate labels in {given[t]}")
            tasks[t] = given[t]
        else:
            tasks[t] = sorted({r[t] for _, r in rows if r[t]})
            notes.append(f"task {t!r}: no label order given, using sorted values")

    uris, splits, errors = [], [], []
    targets = np.full((len(rows), len(task_cols)), -1, dtype=np.int64)
    index = {t: {lab: i for i, lab in enumerate(labs)} for t, labs in tasks.items()}
    seen = set()
    for n, (line, r) in enumerate(rows):
        if not r["uri"]:
            errors.append(f"line {line}: empty uri")
            continue
        try:
            split = canonical_split(r["split"])
        except ValueError as e:
            errors.append(f"line {line}: {e}")
            split = r["split"]
        u = _resolve(uri, r["uri"])
        if u in seen:
            errors.append(f"line {line}: duplicate uri {u}")
        seen.add(u)
        uris.append(u)
        splits.append(split)
        for j, t in enumerate(task_cols):
            v = r[t]
            if v:
                if v not in index[t]:
                    errors.append(f"line {line}: label {v!r} of task {t!r} is not in {tasks[t]}")
                else:
                    targets[n, j] = index[t][v]
    if errors:
        more = f" (and {len(errors) - 20} more)" if len(errors) > 20 else ""
        raise ValueError(f"manifest {uri} is invalid:\n  " + "\n  ".join(errors[:20]) + more)
    return Manifest(uri, storage.sha256(raw), uris, splits, tasks, targets, notes)


def write_manifest(path_or_uri: str, uris: Sequence[str], splits: Sequence[str],
                   labels: dict[str, Sequence[str]] | Sequence[str]) -> str:
    """Write a manifest CSV (``labels``: one column of label names, or task -> column)."""
    cols = labels if isinstance(labels, dict) else {"label": labels}
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["uri", "split", *cols])
    for i, (u, s) in enumerate(zip(uris, splits)):
        w.writerow([u, s, *[c[i] or "" for c in cols.values()]])
    uri = storage.to_uri(path_or_uri)
    storage.write_bytes(uri, out.getvalue().encode(), "text/csv")
    return uri


def load_labels_file(uri: str) -> list[str] | dict[str, list[str]]:
    """A JSON list (single task) or object (task -> list) of labels, or a text file, one per line."""
    raw = storage.read_bytes(storage.to_uri(uri)).decode("utf-8")
    if raw.lstrip().startswith(("[", "{")):
        return json.loads(raw)
    return [line.strip() for line in raw.splitlines() if line.strip()]
