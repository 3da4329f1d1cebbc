"""Storage URIs: local paths, ``file://`` and ``s3://``, behind one small API.

Everything in Retag that reads or writes an image, a manifest or a model goes
through here, so that a run reads the same from a laptop folder as from S3.
boto3 is imported lazily: a GPU box that only reads local files needs only torch.

S3 settings come from the environment: ``S3_ENDPOINT_URL`` (S3-compatible stores,
moto in tests), ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` /
``AWS_DEFAULT_REGION`` as boto3 reads them.
"""
from __future__ import annotations

import hashlib
import os
import posixpath
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator
from urllib.parse import quote, unquote, urlparse


@dataclass(frozen=True)
class StoredFile:
    uri: str
    size: int
    etag: str  # S3 ETag, or "<mtime_ns>-<size>" for local files


def to_uri(path_or_uri: str | os.PathLike) -> str:
    """Canonical URI: ``s3://bucket/key`` stays, a plain path becomes absolute ``file://``."""
    s = os.fspath(path_or_uri)
    if s.startswith("s3://"):
        return s
    if s.startswith("file://"):
        return "file://" + quote(str(Path(unquote(urlparse(s).path)).resolve()))
    if "://" in s:
        raise ValueError(f"unsupported URI scheme: {s.split('://', 1)[0]!r} (use a path, file:// or s3://)")
    return "file://" + quote(str(Path(s).resolve()))


def is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


def split_s3(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` -> (bucket, key)."""
    p = urlparse(uri)
    if p.scheme != "s3" or not p.netloc:
        raise ValueError(f"not an s3:// URI: {uri!r}")
    return p.netloc, p.path.lstrip("/")


def local_path(uri: str) -> Path:
    """The filesystem path of a ``file://`` URI or a plain path."""
    if is_s3(uri):
        raise ValueError(f"{uri!r} is on S3, not on the local filesystem")
    if uri.startswith("file://"):
        return Path(unquote(urlparse(uri).path))
    if "://" in uri:
        raise ValueError(f"unsupported URI scheme in {uri!r}")
    return Path(uri)


def join(base: str, *parts: str) -> str:
    """Join path parts onto a URI (no normalisation of ``..``: callers validate keys)."""
    if is_s3(base) or base.startswith("file://"):
        return posixpath.join(base.rstrip("/"), *[p.strip("/") for p in parts])
    return os.path.join(base, *parts)


_local = threading.local()


def s3_client():
    """A boto3 S3 client per thread (clients are thread-safe, sessions are not)."""
    client = getattr(_local, "s3", None)
    if client is None:
        import boto3
        from botocore.config import Config

        client = boto3.session.Session().client(
            "s3",
            endpoint_url=os.environ.get("S3_ENDPOINT_URL") or None,
            region_name=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
            config=Config(retries={"max_attempts": 5, "mode": "standard"}, max_pool_connections=32),
        )
        _local.s3 = client
    return client


def read_bytes(uri: str) -> bytes:
    if is_s3(uri):
        bucket, key = split_s3(uri)
        return s3_client().get_object(Bucket=bucket, Key=key)["Body"].read()
    return local_path(uri).read_bytes()


def write_bytes(uri: str, data: bytes, content_type: str | None = None) -> None:
    """Write atomically: a reader never sees half a file."""
    if is_s3(uri):
        bucket, key = split_s3(uri)
        extra = {"ContentType": content_type} if content_type else {}
        s3_client().put_object(Bucket=bucket, Key=key, Body=data, **extra)
        return
    path = local_path(uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def exists(uri: str) -> bool:
    if is_s3(uri):
        from botocore.exceptions import ClientError

        bucket, key = split_s3(uri)
        try:
            s3_client().head_object(Bucket=bucket, Key=key)
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
        pages = s3_client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key)
        for page in pages:
            for obj in page.get("Contents", []):
                if obj["Key"].endswith("/"):
                    continue
                yield StoredFile(f"s3://{bucket}/{obj['Key']}", obj["Size"], obj["ETag"].strip('"'))
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
