"""The boto3 S3 client :mod:`mlcore.storage` calls, and which of S3's failures are worth another try.

Settings come from the environment: ``S3_ENDPOINT_URL`` (S3-compatible stores, moto in
tests), ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` / ``AWS_DEFAULT_REGION`` as boto3
reads them; ``MLCORE_S3_RETRY_S`` (default 60) is how long storage retries a transient
failure with back-off before the call fails with the reason. boto3 is imported when a client
is first made: a GPU box that only reads local files needs only torch.
"""
from __future__ import annotations

import os
import threading

#: One client per thread (clients are thread-safe, sessions are not); clear its ``__dict__``
#: to make new ones, as tests do after pointing ``S3_ENDPOINT_URL`` elsewhere.
clients = threading.local()

#: S3 error codes worth another try (the service is there but busy or briefly broken).
TRANSIENT_CODES = {"500", "502", "503", "504", "InternalError", "ServiceUnavailable", "SlowDown",
                   "Throttling", "ThrottlingException", "RequestTimeout", "RequestTimeTooSkewed"}


def s3_client():
    """A boto3 S3 client per thread (clients are thread-safe, sessions are not).

    botocore does not retry (one attempt); storage's ``_retrying`` owns the back-off, so that an
    outage is bridged for ``MLCORE_S3_RETRY_S`` seconds whatever the error's kind.
    """
    client = getattr(clients, "s3", None)
    if client is None:
        import boto3
        from botocore.config import Config

        client = boto3.session.Session().client(
            "s3",
            endpoint_url=os.environ.get("S3_ENDPOINT_URL") or None,
            region_name=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
            config=Config(retries={"max_attempts": 1, "mode": "standard"}, max_pool_connections=32,
                          connect_timeout=5, read_timeout=60),
        )
        clients.s3 = client
    return client


def transient(e: Exception) -> bool:
    """Whether ``e`` is S3 busy or briefly broken (5xx, throttling, a dropped connection), not a
    refusal (NoSuchKey, AccessDenied) that another try would only repeat."""
    from botocore.exceptions import ClientError, ConnectionError as BotoConnectionError, HTTPClientError
    from botocore.exceptions import IncompleteReadError, ResponseStreamingError

    if isinstance(e, ClientError):
        err = e.response.get("Error", {})
        status = str(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
        return str(err.get("Code", "")) in TRANSIENT_CODES or status.startswith("5")
    return isinstance(e, (BotoConnectionError, HTTPClientError, IncompleteReadError, ResponseStreamingError,
                          ConnectionError, TimeoutError))


def retry_budget_s() -> float:
    """How long a transient failure is retried (``MLCORE_S3_RETRY_S``, seconds)."""
    return float(os.environ.get("MLCORE_S3_RETRY_S", "60"))
