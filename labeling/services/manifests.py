"""Training manifests: a frozen snapshot of a task's labels for one training run.

mlcore reads a ``uri,label,split`` CSV and knows nothing of the database, so a run
trains on exactly the labels of the moment it started, even while annotators keep
retagging. The file name carries the CSV's sha256, and a JSON sidecar holds the
ordered label list (the model's output order), counts and the checksum. Corrupt and
missing images are left out: they cannot be decoded, or are gone.

The split vocabulary is mlcore's (:mod:`mlcore.manifest`): :func:`image_split` is how the
importer reads a split cell or folder name through it. An image is ``train`` or ``test``
for life, so of mlcore's splits the app keeps those two (any case, blanks around them
ignored) and refuses ``val`` and its spellings with a reason that says so.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import tempfile
from collections import Counter
from dataclasses import dataclass
from typing import BinaryIO, Iterable, Iterator

from django.utils import timezone

from mlcore import storage
from mlcore.manifest import SPLIT_ALIASES, canonical_split

from ..models import Annotation, Image, ImageStatus, Split, Task
from .labels import ordered_labels
from .projects import project_storage_uri


def image_split(written: str) -> str | None:
    """The app's split for a split as a source writes it; None for a blank (assigned from the key).

    ValueError with the reason for anything else: mlcore's ``val`` (the app has no such
    split: a run holds out ``val_fraction`` of train) or a word outside mlcore's vocabulary.
    """
    if not (written or "").strip():
        return None
    try:
        split = canonical_split(written)
    except ValueError:
        raise ValueError(f"split {written.strip()!r} is neither train nor test") from None
    if split not in Split.values:
        spellings = ", ".join(["val", *SPLIT_ALIASES])
        raise ValueError(f"split {written.strip()!r} is neither train nor test: it is mlcore's validation split "
                         f"({spellings}), and an image here is in train or test for life "
                         f"(a run holds out val_fraction of train instead)")
    return split


@dataclass
class TrainingManifest:
    uri: str           # the CSV
    sidecar_uri: str   # JSON: labels in order, counts, sha256
    labels_uri: str    # JSON list of the labels in order (mlcore's --labels file)
    sha256: str
    rows: int
    labels: list[str]
    counts: dict


ROWS_PER_FETCH = 2000  # rows the export's server-side cursor fetches at a time


def training_rows(task: Task) -> list[tuple[str, str, str]]:
    """(uri, label, split) of every usable labelled image, in a stable order (by key)."""
    return list(iter_training_rows(task))


def iter_training_rows(task: Task) -> Iterator[tuple[str, str, str]]:
    """:func:`training_rows` as they come from a server-side cursor (PostgreSQL), so that
    memory does not grow with the project.

    Train-split images with an active TrainingExclusion (automatic cleaning, reversible) are left out.
    """
    from ..models import TrainingExclusion

    excluded = TrainingExclusion.objects.filter(task=task, active=True).values("image_id")
    return Annotation.objects.filter(
        task=task, label__isnull=False, image__project_id=task.project_id, image__status=ImageStatus.OK,
    ).exclude(image__split=Split.TRAIN, image_id__in=excluded).order_by("image__key", "image_id").values_list(
        "image__uri", "label__name", "image__split").iterator(chunk_size=ROWS_PER_FETCH)


def build_training_manifest(task: Task) -> TrainingManifest:
    """Write the CSV, its sidecar and its label list to the project's storage.

    Rows are written as they are read, to a temporary file (the name holds the sha256 of
    the whole CSV, known only at the end), then copied to storage in pieces.
    """
    labels = [lb.name for lb in ordered_labels(task)]
    with tempfile.TemporaryFile() as spool:
        text = io.TextIOWrapper(spool, encoding="utf-8", newline="")
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(["uri", "label", "split"])
        counts = _counts(task, _written(writer, iter_training_rows(task)), labels)
        text.flush()
        sha = _sha256(spool)
        stamp = timezone.now().strftime("%Y%m%dT%H%M%S%fZ")
        uri = project_storage_uri(task.project, "manifests", f"{task.id}-{stamp}-{sha[:12]}.csv")
        spool.seek(0)
        storage.write_bytes(uri, spool, "text/csv")
        text.detach()  # the spool is closed by its own ``with``
    sidecar = {"csv": uri, "sha256": sha, "task": task.name, "task_id": task.id,
               "project": task.project.slug, "created_at": timezone.now().isoformat(),
               "labels": labels, "counts": counts}
    sidecar_uri, labels_uri = uri[:-4] + ".json", uri[:-4] + ".labels.json"
    storage.write_bytes(sidecar_uri, json.dumps(sidecar, indent=1).encode(), "application/json")
    storage.write_bytes(labels_uri, json.dumps(labels).encode(), "application/json")
    return TrainingManifest(uri, sidecar_uri, labels_uri, sha, counts["rows"], labels, counts)


def _written(writer, rows: Iterable[tuple[str, str, str]]) -> Iterator[tuple[str, str, str]]:
    """Each row, once it is written."""
    for row in rows:
        writer.writerow(row)
        yield row


def _sha256(f: BinaryIO) -> str:
    """The sha256 of a whole open file, read in pieces."""
    f.seek(0)
    digest = hashlib.sha256()
    while piece := f.read(64 << 10):
        digest.update(piece)
    return digest.hexdigest()


def write_training_manifest(task: Task) -> str:
    """The URI of a fresh training manifest for ``task`` (see :func:`build_training_manifest`)."""
    return build_training_manifest(task).uri


def _counts(task: Task, rows: Iterable[tuple[str, str, str]], labels: list[str]) -> dict:
    """Rows per split and per label and split, and what was left out and why (``rows`` is read once)."""
    by_label = {name: {s: 0 for s in Split.values} for name in labels}
    n_rows = 0
    for _, label, split in rows:
        by_label[label][split] += 1
        n_rows += 1
    excluded = Counter(Image.objects.filter(project_id=task.project_id).exclude(
        status=ImageStatus.OK).values_list("status", flat=True))
    return {"rows": n_rows, **{s: sum(v[s] for v in by_label.values()) for s in Split.values},
            "by_label": by_label,
            "excluded": {"corrupt": excluded.get(ImageStatus.CORRUPT, 0),
                         "missing": excluded.get(ImageStatus.MISSING, 0)}}
