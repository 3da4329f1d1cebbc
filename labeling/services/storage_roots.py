"""Where imports may read from.

An import reads URIs that users wrote (a source, manifest rows). Without a fence a
manifest row could read ``/etc/passwd``, escape a folder with ``..`` or a symlink, or
make the worker fetch ``http://169.254.169.254/`` (cloud credentials). So every URI an
import touches is first resolved to its canonical form and must lie inside one of the
allowed roots: the :class:`~labeling.models.StorageRoot` rows an admin added, plus
``settings.IMPORT_ROOTS``.
"""
from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass
from urllib.parse import quote

from django.conf import settings

from mlcore import storage

from ..models import StorageRoot

ALLOWED_SCHEMES = ("file", "s3")


class SourceRefused(ValueError):
    """The URI lies outside every allowed root (or is not a URI we read at all)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Root:
    """A canonical root: a resolved local folder, or an S3 bucket and key prefix."""

    scheme: str  # "file" or "s3"
    bucket: str  # "" for file roots
    path: str    # resolved folder (file) or key prefix ending in "/" or "" (s3)

    @property
    def uri(self) -> str:
        if self.scheme == "s3":
            return f"s3://{self.bucket}/{self.path}"
        return "file://" + quote(self.path.rstrip("/") + "/")

    def contains(self, scheme: str, bucket: str, path: str) -> bool:
        if scheme != self.scheme or bucket != self.bucket:
            return False
        if scheme == "s3":  # the root's own prefix, with or without its slash, is inside it
            return path.startswith(self.path) or path == self.path.rstrip("/")
        return path == self.path or path.startswith(self.path.rstrip("/") + "/")


def _parse(uri: str) -> tuple[str, str, str]:
    """(scheme, bucket, path) with ``..``, symlinks (local) and duplicate slashes resolved.

    Raises :class:`SourceRefused` for schemes other than file/s3, for NUL bytes, for
    ``file://`` URIs that :func:`mlcore.storage.local_path` refuses (a host, a raw query or
    fragment) and for S3 keys that try to climb with ``..`` (S3 keys are literal, so a
    ``..`` there is never innocent).
    """
    uri = (uri or "").strip()
    if not uri:
        raise SourceRefused("empty URI")
    if "\x00" in uri:
        raise SourceRefused(f"a NUL byte in the URI {uri!r}")
    if "://" not in uri:
        return "file", "", os.path.realpath(uri)
    scheme = uri.split("://", 1)[0].lower()
    if scheme not in ALLOWED_SCHEMES:
        raise SourceRefused(f"scheme {scheme or '?'}:// is not allowed: imports read only file:// and s3:// URIs")
    if scheme == "file":
        try:
            return "file", "", os.path.realpath(storage.local_path("file://" + uri.split("://", 1)[1]))
        except ValueError as e:
            raise SourceRefused(str(e)) from None
    bucket, _, key = uri.split("://", 1)[1].partition("/")
    if not bucket:
        raise SourceRefused(f"S3 URI without a bucket: {uri!r}")
    key = key.lstrip("/")
    if ".." in key.split("/"):
        raise SourceRefused(f"S3 key {key!r} contains '..'")
    return "s3", bucket, key


def canonical(uri: str) -> str:
    """The one spelling of a URI that roots and image sources are compared in."""
    scheme, bucket, path = _parse(uri)
    if scheme == "s3":
        return f"s3://{bucket}/{path}"
    return "file://" + quote(path)


def _root(uri: str) -> Root:
    """A root from a URI; the filesystem's root is refused: a bare ``file://`` (or ``/``) would
    let imports read the whole disk, ``/etc`` and the app's own secrets included."""
    scheme, bucket, path = _parse(uri)
    if scheme == "file" and path.rstrip("/") == "":
        raise SourceRefused(f"{uri!r} would make the whole disk a storage root; name a folder")
    if scheme == "s3":
        path = posixpath.normpath(path) + "/" if path.strip("/") else ""
        return Root("s3", bucket, path.lstrip("/"))
    return Root("file", "", path)


def allowed_roots() -> list[Root]:
    """StorageRoot rows plus settings.IMPORT_ROOTS, canonical (roots that cannot be parsed, and
    the whole disk, are skipped)."""
    roots = []
    for uri in [*StorageRoot.objects.values_list("uri", flat=True), *settings.IMPORT_ROOTS]:
        try:
            roots.append(_root(uri))
        except SourceRefused:
            continue
    return roots


def check_allowed(uri: str, roots: list[Root] | None = None) -> str:
    """The canonical URI of ``uri`` when it lies inside an allowed root, else :class:`SourceRefused`.

    Pass ``roots`` (from :func:`allowed_roots`) when checking many URIs, to read them once.
    """
    scheme, bucket, path = _parse(uri)
    roots = allowed_roots() if roots is None else roots
    if not any(r.contains(scheme, bucket, path) for r in roots):
        where = f"s3://{bucket}/{path}" if scheme == "s3" else path
        if not roots:
            raise SourceRefused(f"{where} is outside every allowed storage root (none is configured)")
        raise SourceRefused(f"{where} is outside every allowed storage root "
                            f"({', '.join(r.uri for r in roots)})")
    return canonical(uri)


def _written_segments(uri: str) -> list[str]:
    """The path segments of ``uri`` as the admin wrote them (percent-decoded, not resolved)."""
    uri = (uri or "").strip()
    if uri.lower().startswith("s3://"):
        return uri[len("s3://"):].split("/")[1:]
    try:
        return str(storage.local_path(uri) if uri.lower().startswith("file://") else uri).split("/")
    except ValueError as e:
        raise SourceRefused(str(e)) from None


def _inside(path: str, folder) -> bool:
    """Whether ``folder`` (resolved) is ``path`` or lies under it: a root at ``path`` reaches it."""
    folder = os.path.realpath(folder)
    return folder == path.rstrip("/") or folder.startswith(path.rstrip("/") + "/")


def new_root(uri: str) -> Root:
    """The root an admin asks for, or :class:`SourceRefused` with why not: written with ``..``
    (``/data/demo/../../..`` silently meant ``/``; a root is named as the folder it is), or
    reaching Retag's own var folder (its secret key and database) or its code."""
    if ".." in _written_segments(uri):
        try:
            meant = f" (it resolves to {_root(uri).uri})"
        except SourceRefused:
            meant = ""
        raise SourceRefused(f"{uri.strip()!r} has '..' segments{meant}: write the folder itself, without '..'")
    root = _root(uri)
    if root.scheme == "file":
        if _inside(root.path, settings.VAR_DIR):
            raise SourceRefused(f"{root.uri} contains Retag's own var folder ({settings.VAR_DIR}: its secret key "
                                f"and database), which imports must not read; name a folder that does not hold it")
        if _inside(root.path, settings.BASE_DIR):
            raise SourceRefused(f"{root.uri} contains Retag's own code ({settings.BASE_DIR}), which imports must "
                                f"not read; name a folder that does not hold it")
    return root


def add_root(uri: str, note: str = "") -> StorageRoot:
    """Allow imports from ``uri`` (an admin's decision, e.g. ``import_dataset --allow-root``),
    when :func:`new_root` accepts it."""
    root = new_root(uri)
    obj, _ = StorageRoot.objects.get_or_create(uri=root.uri, defaults={"note": note})
    return obj


def readable_roots() -> list[str]:
    """Root URIs that stored images may be read from: the allowed roots (where folder and
    manifest imports found them) and Retag's own storage (archive members, thumbnails).
    Pages pass these to :func:`mlcore.storage.read_bytes` so that a file swapped for a symlink
    after its import is refused where its bytes are read."""
    return [r.uri for r in allowed_roots()] + [settings.STORAGE_URI]
