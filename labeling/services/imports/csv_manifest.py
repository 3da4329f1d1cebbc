"""CSV manifests (:data:`MANIFEST_COLUMNS`), one image a row; a row's identity is its URI as written."""
from __future__ import annotations

import os
import posixpath

from mlcore import storage
from mlcore.manifest import manifest_rows

from ..storage_roots import Root, SourceRefused, check_allowed
from ..manifests import image_split
from .entries import Entry, ImportRefused, Source, label_refused

# The columns a manifest import reads, as the pages and errors show them: ``uri`` (relative to
# the manifest's folder, absolute, file:// or s3://), ``split`` (may be empty), one column per task.
MANIFEST_COLUMNS = "uri,split,<task>[,<task>...]"

def manifest_source(uri: str, roots: list[Root]) -> Source:
    """:data:`MANIFEST_COLUMNS`; a row outside the roots is refused, the others go on."""
    try:
        read = manifest_rows(storage.read_bytes(uri))
    except ValueError as e:
        raise ImportRefused(str(e)) from None
    header, tasks = read.header, read.tasks
    if "uri" not in header:
        raise ImportRefused(f"the manifest has no 'uri' column (header: {','.join(header) or 'empty'})")
    if not tasks:
        raise ImportRefused(f"the manifest has no label column: expected {MANIFEST_COLUMNS}")
    base = uri.rsplit("/", 1)[0]
    entries = [_manifest_entry(line, row, tasks, base, roots) for line, row in read.rows]
    return Source(uri, tasks, entries)


def _manifest_entry(line: int, row: dict, tasks: list[str], base: str, roots: list[Root]) -> Entry:
    """One row; whatever is wrong with it (a NUL byte, a URI that does not parse) is this
    row's problem only."""
    written = row.get("uri", "")
    entry = Entry(row=line, key="", shown=written.replace("\x00", "\\x00"))
    try:
        nul = next((h for h, v in row.items() if "\x00" in v), None)
        if nul is not None:
            entry.refused = f"a NUL byte in column {nul!r}"
            return entry
        entry.key = manifest_key(written)
        entry.labels = {t: row.get(t, "") for t in tasks if row.get(t)}
        if not written:
            entry.refused = "empty uri"
        elif refused := label_refused(entry.labels):
            entry.refused = refused
        else:
            try:
                entry.split = image_split(row.get("split", ""))
            except ValueError as e:
                entry.refused = str(e)
                return entry
            entry.uri = check_allowed(_resolve(base, written), roots)
            entry.read = lambda u=entry.uri: storage.read_bytes(u)
    except SourceRefused as e:
        entry.refused = e.reason
    except (ValueError, OSError) as e:
        entry.refused = f"bad uri: {e}"
    return entry


def manifest_key(written: str) -> str:
    """A manifest row's identity: the URI as written, with ``./``, ``//`` and ``a/../`` folded."""
    w = written.strip().replace("\\", "/") if "://" not in written else written.strip()
    if not w:
        return ""
    if w.startswith("s3://"):
        bucket, key = storage.split_s3(w)
        return f"s3://{bucket}/{posixpath.normpath(key)}"
    if w.startswith("file://"):
        return "file://" + posixpath.normpath(str(storage.local_path(w)))
    if "://" in w:
        return w
    return posixpath.normpath(w)


def _resolve(base: str, written: str) -> str:
    """Where a manifest row points: relative paths are relative to the manifest's folder."""
    if "://" in written or os.path.isabs(written):
        return written
    if storage.is_s3(base):
        bucket, key = storage.split_s3(base + "/")
        return f"s3://{bucket}/{posixpath.normpath(posixpath.join(key, written))}"
    return os.path.join(storage.local_path(base), written)

