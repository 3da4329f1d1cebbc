"""Which source a job names: checked against the allowed roots, then listed by the lister
for its kind (folder, zip, CSV manifest, S3 prefix)."""
from __future__ import annotations

import zipfile

from mlcore import storage

from ...models import ImportJob
from ..storage_roots import Root, SourceRefused, check_allowed
from .archives import zip_source
from .csv_manifest import manifest_source
from .entries import ImportRefused, Source
from .folders import folder_source, s3_source

Kind = ImportJob.Kind


def check_source(kind: str, source_uri: str, roots: list[Root] | None = None) -> str:
    """The canonical source URI, or :class:`ImportRefused` with the reason."""
    if kind not in Kind.values:
        raise ImportRefused(f"unknown import kind {kind!r}; choose one of {', '.join(Kind.values)}")
    try:
        uri = check_allowed(source_uri, roots)
    except SourceRefused as e:
        raise ImportRefused(e.reason) from None
    if kind == Kind.S3_PREFIX:
        if not storage.is_s3(uri):
            raise ImportRefused(f"an S3 prefix import needs an s3:// URI, not {source_uri!r}")
        return uri.rstrip("/")
    if kind == Kind.FOLDER:
        if storage.is_s3(uri):
            raise ImportRefused("a folder import reads a local folder or .zip; use kind 's3' for an S3 prefix")
        path = storage.local_path(uri)
        if not (path.is_dir() or (path.is_file() and zipfile.is_zipfile(path))):
            raise ImportRefused(f"{path} is neither a folder nor a zip archive")
    if kind == Kind.MANIFEST and not storage.is_s3(uri) and not storage.local_path(uri).is_file():
        raise ImportRefused(f"manifest {storage.local_path(uri)} does not exist")
    return uri


def guess_kind(source_uri: str) -> str:
    """folder / manifest / s3 from the look of the URI (for the command line)."""
    if source_uri.lower().endswith(".csv"):
        return Kind.MANIFEST
    return Kind.S3_PREFIX if storage.is_s3(source_uri) else Kind.FOLDER


def open_source(job: ImportJob, roots: list[Root]) -> Source:
    """List what the job's source holds (entries, not bytes: those are read later, in threads)."""
    uri = check_source(job.kind, job.source_uri, roots)
    task = (job.options.get("task") or "label").strip()
    if job.kind == Kind.MANIFEST:
        return manifest_source(uri, roots)
    if job.kind == Kind.S3_PREFIX:
        return s3_source(uri, roots, task)
    path = storage.local_path(uri)
    if path.is_file():
        return zip_source(job.project, uri, path, task)
    return folder_source(uri, path, roots, task)

