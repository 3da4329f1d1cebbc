"""Zip archives: which members are safe to read, extracting the safe ones, and listing an
archive as an import source."""
from __future__ import annotations

import hashlib
import os
import posixpath
import shutil
import stat
import zipfile
from pathlib import Path

from django.conf import settings

from mlcore import storage

from ...models import Project
from ..projects import project_storage_uri
from .entries import ImportRefused, Source, is_hidden, layout_entry


def unsafe_member(info: zipfile.ZipInfo) -> str:
    """Why an archive member must not be read or extracted ("" when it is fine).

    Sizes come from the archive's directory; :mod:`zipfile` never returns more bytes than
    that says (a member that lies fails its CRC), so these limits bound what is read.
    """
    name = info.filename.replace("\\", "/")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return f"absolute path {info.filename!r} in archive refused"
    if ".." in name.split("/"):
        return f"path {info.filename!r} climbs out of the archive with '..'; refused"
    if stat.S_ISLNK(info.external_attr >> 16):
        return f"symbolic link {info.filename!r} in archive refused"
    limit = settings.IMPORT_ZIP_MAX_MEMBER_BYTES
    if info.file_size > limit:
        return f"member {info.filename!r} is {info.file_size:,} bytes uncompressed (limit {limit:,})"
    ratio = info.file_size / max(info.compress_size, 1)
    if info.file_size > 64 << 10 and ratio > settings.IMPORT_ZIP_MAX_RATIO:
        return (f"member {info.filename!r} has a compression ratio of {ratio:,.0f}:1 "
                f"(limit {settings.IMPORT_ZIP_MAX_RATIO:g}:1, IMPORT_ZIP_MAX_RATIO): images do not "
                "compress like that; refused")
    return ""


def safe_extract(zip_path: str | os.PathLike, dest_dir: str | os.PathLike) -> tuple[list[Path], list[tuple[str, str]]]:
    """Extract what is safe: (written files, [(member, reason) refused]).

    Refuses absolute paths, ``..``, symlinks and oversized members; each target is
    checked to resolve inside ``dest_dir`` before it is written.
    """
    dest = Path(dest_dir).resolve()
    dest.mkdir(parents=True, exist_ok=True)
    written, refused = [], []
    with zipfile.ZipFile(zip_path) as zf:
        for info in zf.infolist():
            if info.is_dir():
                continue
            reason = unsafe_member(info)
            target = (dest / info.filename).resolve()
            if not reason and not target.is_relative_to(dest):
                reason = f"member {info.filename!r} would be written outside {dest}"
            if reason:
                refused.append((info.filename, reason))
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
            written.append(target)
    return written, refused


def path_too_long(path: str) -> str:
    """Why the file system could not hold ``path`` ("" when it can): a name over NAME_MAX bytes
    or a path over PATH_MAX (what ``open`` would refuse with "[Errno 36] File name too long")."""
    where = os.path.dirname(path)
    while where and not os.path.isdir(where):
        where = os.path.dirname(where) if os.path.dirname(where) != where else ""
    try:
        name_max, path_max = os.pathconf(where or "/", "PC_NAME_MAX"), os.pathconf(where or "/", "PC_PATH_MAX")
    except (OSError, ValueError):
        name_max, path_max = 255, 4096
    longest = max(path.split("/"), key=lambda p: len(os.fsencode(p)))
    if len(os.fsencode(longest)) > name_max:
        return (f"path too long: the name {longest[:40]!r}… is {len(os.fsencode(longest))} bytes, "
                f"the file system holds at most {name_max}")
    if len(os.fsencode(path)) >= path_max:
        return f"path too long: {len(os.fsencode(path))} bytes, the file system holds at most {path_max - 1}"
    return ""


def zip_source(project: Project, uri: str, path: Path, task: str) -> Source:
    """Members are read straight from the archive; their bytes are kept in project storage
    (``originals/<archive>/<key>``) because training needs a URI to read them from.

    A member's name is data: it is quoted into the URI (:func:`mlcore.storage.join`), so a
    ``%2e%2e%2f`` or a ``?`` stays part of a file name inside the store, and the write itself
    is fenced to the store. The archive is refused as a whole when what it would expand to
    passes ``IMPORT_ZIP_MAX_EXPANDED_BYTES``: nothing is read then.
    """
    zf = zipfile.ZipFile(path)
    digest = hashlib.sha256(uri.encode()).hexdigest()[:8]
    store = storage.to_uri(project_storage_uri(project, "originals", f"{path.stem}-{digest}"))
    entries, expanded = [], 0
    for info in zf.infolist():
        if info.is_dir() or is_hidden(info.filename):
            continue
        key = posixpath.normpath(info.filename.replace("\\", "/"))
        reason, member_uri = unsafe_member(info), ""
        if not reason:
            try:
                member_uri = storage.to_uri(storage.join(store, key))
            except (OSError, ValueError) as e:
                reason = f"member name {info.filename!r} cannot be stored: {e}"
        entry = layout_entry(len(entries) + 1, key, f"{uri}!{info.filename}", task, refused=reason, copy=True,
                              uri=member_uri, store=store, read=lambda i=info: zf.read(i))
        if not entry.refused and member_uri.startswith("file:"):  # its bytes are kept in the store
            entry.refused = path_too_long(str(storage.local_path(member_uri)))
        entries.append(entry)
        expanded += 0 if entry.refused else info.file_size
    limit = settings.IMPORT_ZIP_MAX_EXPANDED_BYTES
    if expanded > limit:
        zf.close()
        raise ImportRefused(f"the archive would expand to {expanded:,} bytes of images, more than the limit "
                            f"of {limit:,} (IMPORT_ZIP_MAX_EXPANDED_BYTES); nothing was imported")
    return Source(uri, [task], entries, close=zf.close)

