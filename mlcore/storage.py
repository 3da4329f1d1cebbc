"""Storage URIs: local paths, ``file://`` and ``s3://``, behind one small API.

Everything in Retag that reads or writes an image, a manifest or a model goes
through here, so that a run reads the same from a laptop folder as from S3.
The typed helpers at the end (npz, JSON, torch files) are the one way mlcore and the app
read and write those formats; numpy and torch are imported when they are called.

S3 settings come from the environment (see :mod:`mlcore.s3`, the client); a transient S3
failure is retried with back-off for ``MLCORE_S3_RETRY_S`` seconds (default 60) before the
call fails with the reason.

Keys and file names are data, never URI syntax: :func:`join` quotes them, :func:`local_path`
decodes exactly once, and writes and reads can be fenced to roots (``within``) checked on
the resolved path of the file actually opened.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import posixpath
import random
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator, Sequence
from urllib.parse import quote, unquote

from . import s3
from .s3 import s3_client


@dataclass(frozen=True)
class StoredFile:
    uri: str
    size: int
    etag: str  # S3 ETag, or "<mtime_ns>-<size>" for local files


class OutsideRoot(ValueError):
    """A file resolves (symlinks followed) to a place outside the roots it may be read from
    or written to: refused before a byte moves."""


class StorageUnavailable(OSError):
    """S3 kept failing (connection refused, 5xx, throttling) for the whole retry budget."""


def to_uri(path_or_uri: str | os.PathLike) -> str:
    """Canonical URI: ``s3://bucket/key`` stays, a plain path becomes absolute ``file://``.

    A ``file://`` URI is percent-encoded: a file name is data, so its ``%``, ``?`` and ``#``
    are quoted and come back unchanged from :func:`local_path`.
    """
    s = os.fspath(path_or_uri)
    if s.startswith("s3://"):
        return s
    if s.startswith("file://"):
        return "file://" + quote(str(local_path(s).resolve()))
    if "://" in s:
        raise ValueError(f"unsupported URI scheme: {s.split('://', 1)[0]!r} (use a path, file:// or s3://)")
    _no_nul(s)
    return "file://" + quote(str(Path(s).resolve()))


def _no_nul(s: str) -> None:
    if "\x00" in s:
        raise ValueError(f"a NUL byte in {s!r}")


def is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


def split_s3(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` -> (bucket, key). Keys are literal: a ``?``, ``#`` or ``%`` in a key
    is part of it (``urlparse`` would cut a query or a fragment off)."""
    if not uri.startswith("s3://"):
        raise ValueError(f"not an s3:// URI: {uri!r}")
    bucket, _, key = uri[len("s3://"):].partition("/")
    if not bucket:
        raise ValueError(f"not an s3:// URI (no bucket): {uri!r}")
    return bucket, key.lstrip("/")


def local_path(uri: str) -> Path:
    """The filesystem path of a ``file://`` URI or a plain path.

    A ``file://`` URI is percent-decoded exactly once. A raw ``?`` or ``#`` (a query or a
    fragment: never in a URI that :func:`to_uri` or :func:`join` made), a host other than
    ``localhost`` and a NUL byte are refused rather than silently cut or sent somewhere else.
    """
    if is_s3(uri):
        raise ValueError(f"{uri!r} is on S3, not on the local filesystem")
    if uri.startswith("file://"):
        host, slash, rest = uri[len("file://"):].partition("/")
        if host not in ("", "localhost"):
            raise ValueError(f"file URI with a host ({host!r}) is not a local file: {uri!r}")
        if "?" in rest or "#" in rest:
            raise ValueError(f"file URI with a raw '?' or '#' (quote file names as %3F, %23): {uri!r}")
        path = unquote(slash + rest) or "/"
        _no_nul(path)
        return Path(path)
    if "://" in uri:
        raise ValueError(f"unsupported URI scheme in {uri!r}")
    _no_nul(uri)
    return Path(uri)


def join(base: str, *parts: str) -> str:
    """Join path parts onto a URI. Parts are data, never URI syntax: onto a ``file://`` base
    they are percent-encoded (a ``%2e%2e%2f`` or a ``?`` in a name stays a literal name).
    No normalisation of ``..``: writes check containment with ``within``."""
    if base.startswith("file://"):
        return posixpath.join(base.rstrip("/"), *[quote(p.strip("/")) for p in parts])
    if is_s3(base):
        return posixpath.join(base.rstrip("/"), *[p.strip("/") for p in parts])
    return os.path.join(base, *parts)


# --------------------------------------------------------------------------- containment

def _real_fd_path(fd: int, fallback: str) -> str:
    """Where an open file or folder really is (Linux: the kernel's answer, no race)."""
    link = f"/proc/self/fd/{fd}"
    try:
        return os.readlink(link)
    except OSError:
        return os.path.realpath(fallback)


def _inside(real: str, root: str) -> bool:
    return real == root or real.startswith(root.rstrip("/") + "/")


def _s3_inside(uri: str, roots: Sequence[str]) -> bool:
    bucket, key = split_s3(uri)
    for r in roots:
        if is_s3(r):
            rb, rk = split_s3(r)
            if rb == bucket and (not rk or key == rk.rstrip("/") or key.startswith(rk.rstrip("/") + "/")):
                return True
    return False


def _local_roots(roots: Sequence[str]) -> list[str]:
    """Resolved local folders of ``roots`` (S3 roots are skipped); the filesystem root is never one."""
    out = []
    for r in roots:
        if is_s3(r):
            continue
        real = os.path.realpath(local_path(r))
        if real != "/":
            out.append(real)
    return out


def _refuse(path, real: str, roots: Sequence[str]) -> OutsideRoot:
    return OutsideRoot(f"{path} resolves to {real}, outside {', '.join(roots) or 'every allowed root'}")


# --------------------------------------------------------------------------- S3 with retries

logger = logging.getLogger(__name__)
_local = s3.clients  # the per-thread clients, which tests reset


def _retrying(what: str, fn):
    """``fn()``, tried again with exponential back-off (0.2 s doubling to 5 s, with jitter) while
    S3 fails transiently, for at most ``MLCORE_S3_RETRY_S`` seconds; then
    :class:`StorageUnavailable` with the reason. Other errors (NoSuchKey, AccessDenied) at once.
    Every call retried is idempotent (a whole GET, PUT, HEAD or one listing page)."""
    deadline = time.monotonic() + s3.retry_budget_s()
    delay, tries = 0.2, 0
    while True:
        tries += 1
        try:
            return fn()
        except Exception as e:  # noqa: BLE001 - sorted into transient or not just below
            if not s3.transient(e):
                raise
            left = deadline - time.monotonic()
            if left <= 0:
                raise StorageUnavailable(
                    f"S3 ({os.environ.get('S3_ENDPOINT_URL') or 'AWS'}) failed for {what} {tries} times over "
                    f"{s3.retry_budget_s():.0f} s: {type(e).__name__}: {e}") from e
            wait = min(left, delay * (0.5 + random.random() / 2))
            logger.warning("S3 failed for %s (try %d: %s: %s); again in %.1f s", what, tries, type(e).__name__, e, wait)
            time.sleep(wait)
            delay = min(5.0, delay * 2)


# --------------------------------------------------------------------------- reading and writing

def read_bytes(uri: str, *, within: Sequence[str] | None = None, exact: bool = False) -> bytes:
    """The bytes at ``uri``.

    Containment is checked where the bytes are read, on the file actually opened (symlinks
    followed by the kernel, then asked where they led): with ``within`` the file must lie in
    one of those root URIs; with ``exact`` it must be exactly where ``uri`` says (a file
    checked earlier and since swapped for a symlink is refused). :class:`OutsideRoot` else.
    """
    if is_s3(uri):
        if within is not None and not _s3_inside(uri, within):
            raise OutsideRoot(f"{uri} is outside {', '.join(within) or 'every allowed root'}")
        bucket, key = split_s3(uri)
        return _retrying(f"reading {uri}", lambda: s3_client().get_object(Bucket=bucket, Key=key)["Body"].read())
    path = local_path(uri)
    if within is None and not exact:
        return path.read_bytes()
    fd = os.open(path, os.O_RDONLY)
    try:
        real = _real_fd_path(fd, str(path))
        if exact and real != os.path.abspath(path):
            raise OutsideRoot(f"{path} resolves to {real}: refused (a file swapped for a link since it was checked)")
        if within is not None:
            roots = _local_roots(within)
            if not any(_inside(real, r) for r in roots):
                raise _refuse(path, real, within)
        with os.fdopen(os.dup(fd), "rb") as f:
            return f.read()
    finally:
        os.close(fd)


def write_bytes(uri: str, data: bytes | BinaryIO, content_type: str | None = None, *,
                within: str | None = None) -> None:
    """Write atomically: a reader never sees half a file.

    ``data`` is bytes, or a binary file open for reading, which is copied from where it
    stands in pieces (so a large file is never held in memory whole).

    With ``within`` (a root URI) the write happens only inside it: the folder is resolved
    and opened, the kernel is asked where it really is, and the file is created in that
    open folder (no symlink swapped in between the check and the write can redirect it).
    """
    if is_s3(uri):
        if within is not None and not _s3_inside(uri, [within]):
            raise OutsideRoot(f"{uri} is outside {within}")
        bucket, key = split_s3(uri)
        extra = {"ContentType": content_type} if content_type else {}
        start = None if isinstance(data, (bytes, bytearray)) else data.tell()

        def put():
            if start is not None:
                data.seek(start)  # a retry sends the file from where it stood, not from where the last try stopped
            return s3_client().put_object(Bucket=bucket, Key=key, Body=data, **extra)

        _retrying(f"writing {uri}", put)
        return
    path = local_path(uri)
    if path.name in ("", ".", ".."):
        raise ValueError(f"not a file name: {uri!r}")
    root = None
    if within is not None:
        roots = _local_roots([within])
        if not roots:
            raise OutsideRoot(f"{within} cannot hold files (the whole disk is no root)")
        root = roots[0]
        if not _inside(os.path.realpath(path.parent), root):  # before any folder is made
            raise _refuse(path, os.path.realpath(path.parent), [within])
    path.parent.mkdir(parents=True, exist_ok=True)
    dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if root is not None:
            real = _real_fd_path(dfd, str(path.parent))
            if not _inside(real, root):
                raise _refuse(path, real, [within])
        tmp = f".{path.name[:200]}.{os.getpid()}.{threading.get_ident()}.{random.getrandbits(32):08x}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644, dir_fd=dfd)
        try:
            with os.fdopen(fd, "wb") as f:
                if isinstance(data, (bytes, bytearray)):
                    f.write(data)
                else:
                    shutil.copyfileobj(data, f)
            os.replace(tmp, path.name, src_dir_fd=dfd, dst_dir_fd=dfd)
        except BaseException:
            try:
                os.unlink(tmp, dir_fd=dfd)
            except FileNotFoundError:
                pass
            raise
    finally:
        os.close(dfd)


def exists(uri: str) -> bool:
    if is_s3(uri):
        from botocore.exceptions import ClientError

        bucket, key = split_s3(uri)
        try:
            _retrying(f"checking {uri}", lambda: s3_client().head_object(Bucket=bucket, Key=key))
            return True
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
    return local_path(uri).exists()


def list_files(prefix: str) -> Iterator[StoredFile]:
    """Every file under a folder or S3 prefix, recursively, in a stable order."""
    if is_s3(prefix):
        bucket, key = split_s3(prefix)
        if key and not key.endswith("/"):
            key += "/"
        token = None
        while True:
            kw = {"Bucket": bucket, "Prefix": key, **({"ContinuationToken": token} if token else {})}
            page = _retrying(f"listing {prefix}", lambda kw=kw: s3_client().list_objects_v2(**kw))
            for obj in page.get("Contents", []):
                if obj["Key"].endswith("/"):
                    continue
                yield StoredFile(f"s3://{bucket}/{obj['Key']}", obj["Size"], obj["ETag"].strip('"'))
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return
    root = local_path(prefix)
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            p = Path(dirpath) / name
            st = p.stat()
            yield StoredFile(to_uri(p), st.st_size, f"{st.st_mtime_ns}-{st.st_size}")


def relative_key(prefix: str, uri: str) -> str:
    """The part of ``uri`` below ``prefix`` (both canonical URIs)."""
    base = prefix.rstrip("/") + "/"
    if not uri.startswith(base):
        raise ValueError(f"{uri!r} is not under {prefix!r}")
    return unquote(uri[len(base):]) if uri.startswith("file://") else uri[len(base):]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------- typed files

def npz_bytes(arrays: dict) -> bytes:
    """A compressed ``.npz`` of named arrays (no pickles: :func:`load_npz` refuses them)."""
    import numpy as np

    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def load_npz(data: bytes) -> dict:
    """The arrays of ``.npz`` bytes, read in full (object arrays are refused)."""
    import numpy as np

    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def read_npz(uri: str) -> dict:
    """:func:`load_npz` of the file at ``uri``."""
    return load_npz(read_bytes(uri))


def write_json(uri: str, obj) -> None:
    """Indented JSON; numpy scalars and arrays become numbers and lists."""
    write_bytes(uri, json.dumps(obj, indent=1, default=_json_default).encode(), "application/json")


def _json_default(o):
    import numpy as np

    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def save_torch(uri: str, obj) -> None:
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    write_bytes(uri, buf.getvalue())


def load_torch(uri: str):
    """A ``torch.save`` file, on the CPU, tensors and plain containers only (``weights_only``)."""
    import torch

    return torch.load(io.BytesIO(read_bytes(uri)), map_location="cpu", weights_only=True)
