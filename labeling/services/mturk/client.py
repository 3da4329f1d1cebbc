"""The MTurk requester client: which endpoint, and calls that survive throttling.

Sandbox is the default; production needs ``MTURK_PRODUCTION=true`` (a setting read from
the environment). A batch remembers which one it was built for, so that sync and apply
never cross environments.

Retries: the client is built with botocore's own retries off, and every call goes
through :func:`call`, which retries throttling and service faults with exponential
back-off and jitter. One retry policy, ours, visible and tested. A retried
CreateHITWithHITType is safe because it carries a UniqueRequestToken.
"""
from __future__ import annotations

import logging
import os
import random
import time

from django.conf import settings

log = logging.getLogger(__name__)

REGION = "us-east-1"  # the only region MTurk's requester API lives in
SANDBOX_ENDPOINT = "https://mturk-requester-sandbox.us-east-1.amazonaws.com"
PRODUCTION_ENDPOINT = "https://mturk-requester.us-east-1.amazonaws.com"
SANDBOX_SUBMIT_URL = "https://workersandbox.mturk.com/mturk/externalSubmit"
PRODUCTION_SUBMIT_URL = "https://www.mturk.com/mturk/externalSubmit"
SANDBOX_WORKER_SITE = "https://workersandbox.mturk.com"
PRODUCTION_WORKER_SITE = "https://worker.mturk.com"

RETRYABLE_CODES = {
    "ThrottlingException", "Throttling", "TooManyRequestsException", "RequestLimitExceeded",
    "ServiceUnavailable", "ServiceUnavailableException", "ServiceFault", "InternalFailure",
}
MAX_ATTEMPTS = 6
BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 20.0


class MTurkError(Exception):
    """An MTurk call failed for good (after retries, or a request MTurk refuses)."""


def production_allowed() -> bool:
    value = getattr(settings, "MTURK_PRODUCTION", None)
    if value is None:
        value = os.environ.get("MTURK_PRODUCTION", "false").lower() in ("1", "true", "yes", "on")
    return bool(value)


def endpoint(production: bool) -> str:
    return PRODUCTION_ENDPOINT if production else SANDBOX_ENDPOINT


def submit_url(production: bool) -> str:
    return PRODUCTION_SUBMIT_URL if production else SANDBOX_SUBMIT_URL


def make_client(production: bool = False):
    """A boto3 ``mturk`` client for the sandbox, or production when allowed."""
    if production and not production_allowed():
        raise MTurkError("production MTurk needs MTURK_PRODUCTION=true in the environment")
    import boto3
    from botocore.config import Config

    return boto3.session.Session().client(
        "mturk", region_name=REGION, endpoint_url=endpoint(production),
        # total_max_attempts=1: botocore does not retry; call() does (see module doc).
        config=Config(retries={"total_max_attempts": 1, "mode": "standard"}, connect_timeout=10,
                      read_timeout=60))


def error_code(exc) -> str:
    return (getattr(exc, "response", None) or {}).get("Error", {}).get("Code", "")


def error_message(exc) -> str:
    response = getattr(exc, "response", None) or {}
    return response.get("Error", {}).get("Message", "") or str(exc)


def turk_error_code(exc) -> str:
    """MTurk's own error name (``AWS.MechanicalTurk.HitAlreadyExists``...) when it gave one."""
    response = getattr(exc, "response", None) or {}
    return response.get("TurkErrorCode") or response.get("Error", {}).get("TurkErrorCode", "")


def _sleep(seconds: float) -> None:  # tests replace this to run without waiting
    time.sleep(seconds)


def call(client, operation: str, **params):
    """``client.<operation>(**params)``, retrying throttling and faults with back-off."""
    from botocore.exceptions import ClientError, ConnectionError as BotoConnectionError

    method = getattr(client, operation)
    for attempt in range(1, MAX_ATTEMPTS + 1):
        try:
            return method(**params)
        except ClientError as exc:
            if error_code(exc) not in RETRYABLE_CODES or attempt == MAX_ATTEMPTS:
                raise
            why = error_code(exc)
        except BotoConnectionError as exc:
            if attempt == MAX_ATTEMPTS:
                raise
            why = type(exc).__name__
        delay = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** (attempt - 1)) * (0.5 + random.random() / 2)
        log.warning("mturk %s: %s, retry %d in %.1fs", operation, why, attempt, delay)
        _sleep(delay)
    raise AssertionError("unreachable")


def paginate(client, operation: str, result_key: str, **params):
    """Every item of a NextToken-paginated MTurk list call, each page through :func:`call`."""
    token = None
    while True:
        page = call(client, operation, **params, **({"NextToken": token} if token else {}))
        yield from page.get(result_key, [])
        token = page.get("NextToken")
        if not token or not page.get(result_key):
            return


def account_balance(client) -> dict:
    """{"available": Decimal, "on_hold": Decimal | None} from GetAccountBalance."""
    from decimal import Decimal

    r = call(client, "get_account_balance")
    on_hold = r.get("OnHoldBalance")
    return {"available": Decimal(r["AvailableBalance"]), "on_hold": Decimal(on_hold) if on_hold else None}
