"""What a source yields: one :class:`Entry` per image it names, before any byte is read,
and the rules that turn a path into (split, label)."""
from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from typing import Callable

from ...models import Label
from ..manifests import image_split

LABEL_MAX = Label._meta.get_field("name").max_length
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".tif", ".tiff", ".webp"}


class ImportRefused(ValueError):
    """The import cannot start (source outside the allowed roots, wrong kind, unreadable)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass
class Entry:
    """One image the source names, before it is read."""

    row: int                           # line in a manifest, ordinal in a listing
    key: str
    shown: str                         # what the user wrote or sees: used in problems
    uri: str = ""                      # becomes Image.uri
    read: Callable[[], bytes] | None = None
    split: str | None = None
    labels: dict[str, str] = field(default_factory=dict)  # task name -> label name
    copy: bool = False                 # archive member: store the bytes at ``uri`` when (re)validated
    store: str = ""                    # ... and only inside this folder (checked at the write)
    refused: str = ""                  # why the row cannot be taken at all


@dataclass
class Source:
    uri: str
    tasks: list[str]
    entries: list[Entry]
    close: Callable[[], None] = lambda: None


def _layout(key: str) -> tuple[str | None, str]:
    """(split or None, label) of a ``split/label/image`` or ``label/image`` key, else ValueError."""
    parts = key.split("/")
    ext = posixpath.splitext(parts[-1])[1].lower()
    if ext not in IMAGE_EXTENSIONS:
        raise ValueError(f"not an image file (extension {ext or 'none'!r}); skipped")
    if len(parts) == 3:
        return image_split(parts[0]), parts[1]
    if len(parts) == 2:
        return None, parts[0]
    raise ValueError("not in split/label/image (or label/image) layout")


def layout_entry(row: int, key: str, shown: str, task: str, **kw) -> Entry:
    entry = Entry(row=row, key=key, shown=shown, **kw)
    if entry.refused:
        return entry
    if "\x00" in key:
        entry.refused = "a NUL byte in the name"
        return entry
    try:
        entry.split, label = _layout(key)
        entry.labels = {task: label.strip()}
    except ValueError as e:
        entry.refused = str(e)
        return entry
    entry.refused = label_refused(entry.labels)
    return entry


def label_refused(labels: dict[str, str]) -> str:
    """Why a row's labels cannot be stored ("" when they can): a refused row makes no label,
    where a label that is made and then stored with no image is left empty."""
    for name in labels.values():
        if len(name) > LABEL_MAX:
            return f"label name longer than {LABEL_MAX} characters ({len(name)}: {name[:40]!r}…)"
    return ""


def is_hidden(rel: str) -> bool:
    """Dot files and macOS archive litter are skipped without a problem (``..`` is not hidden)."""
    return any((p.startswith(".") and p != "..") or p == "__MACOSX" for p in rel.split("/"))

