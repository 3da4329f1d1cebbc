"""Listing a local folder or an S3 prefix laid out as ``split/label/image`` (or ``label/image``)."""
from __future__ import annotations

import os
from pathlib import Path

from mlcore import storage

from ..storage_roots import Root, SourceRefused, check_allowed
from .entries import Source, is_hidden, layout_entry


def folder_source(uri: str, root: Path, roots: list[Root], task: str) -> Source:
    """``split/label/image`` under a local folder; a symlink that leads outside the roots is refused."""
    entries = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            full = os.path.join(dirpath, name)
            key = Path(full).relative_to(root).as_posix()
            if is_hidden(key):
                continue
            try:
                canonical, refused = check_allowed(full, roots), ""
            except SourceRefused as e:
                canonical, refused = "", e.reason
            entries.append(layout_entry(
                len(entries) + 1, key, full, task, uri=canonical, refused=refused,
                read=lambda u=canonical: storage.read_bytes(u)))
    return Source(uri, [task], entries)


def s3_source(uri: str, roots: list[Root], task: str) -> Source:
    entries = []
    for f in storage.list_files(uri):
        key = storage.relative_key(uri, f.uri)
        if is_hidden(key):
            continue
        try:
            canonical, refused = check_allowed(f.uri, roots), ""
        except SourceRefused as e:
            canonical, refused = "", e.reason
        entries.append(layout_entry(len(entries) + 1, key, f.uri, task, uri=canonical, refused=refused,
                                     read=lambda u=f.uri: storage.read_bytes(u)))
    return Source(uri, [task], entries)

