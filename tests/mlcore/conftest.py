"""Fixtures for mlcore's tests: tiny image sets written by the tests, and a bucket on the
moto S3 server of tests/conftest.py (``moto_server``).

Nothing here needs Django; nothing downloads anything.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.mlcore.helpers import write_colour_set


@pytest.fixture
def colour_set(tmp_path) -> Path:
    return write_colour_set(tmp_path / "data", corrupt=2)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Each test gets its own S3 cache dir."""
    monkeypatch.setenv("MLCORE_CACHE_DIR", str(tmp_path / "mlcore-cache"))


@pytest.fixture
def s3(moto_server, monkeypatch):
    """A fresh bucket on the moto server; returns a boto3 client (storage's client cache reset)."""
    import uuid

    from mlcore import storage

    monkeypatch.setenv("S3_ENDPOINT_URL", moto_server)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    storage._local.__dict__.clear()
    client = storage.s3_client()
    bucket = f"b-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket)
    client.bucket = bucket
    yield client
    storage._local.__dict__.clear()
