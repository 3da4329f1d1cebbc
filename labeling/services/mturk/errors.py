"""What went wrong with Mechanical Turk, in words an admin can act on.

boto3's own words ("NoCredentialsError: Unable to locate credentials") say what failed, not
what to do; these say both, and name the way that needs no credentials (the CSV export for
the requester website). Shown on the batch page (``MTurkBatch.error``, the balance line, the
send and sync messages).
"""
from __future__ import annotations

from . import client as mt


class BatchError(ValueError):
    """The batch asks for something that cannot be sent."""


NO_CREDENTIALS = (
    "Retag has no AWS credentials for Mechanical Turk. Set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
    "(an IAM user of the AWS account linked to your MTurk requester account, with the "
    "AmazonMechanicalTurkFullAccess policy) in the environment of the web server and the worker, and restart "
    "them. Without credentials, use “Export CSV” and upload the batch on the requester website.")
REFUSED_CREDENTIALS = (
    "AWS refused the credentials ({code}): check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, and that this "
    "AWS account is linked to an MTurk requester account ({site}).")
UNREACHABLE = (
    "Retag could not reach Mechanical Turk at {endpoint}: this machine has no connection to it (offline, a "
    "firewall or a proxy). Try again when it is online, or use “Export CSV” and upload the batch on the "
    "requester website.")
REFUSED_CODES = {"UnrecognizedClientException", "InvalidClientTokenId", "InvalidAccessKeyId",
                 "SignatureDoesNotMatch", "AccessDeniedException", "AccessDenied", "ExpiredTokenException"}
REQUESTER_SITE = {False: "https://requestersandbox.mturk.com", True: "https://requester.mturk.com"}


def explain(exc: BaseException, *, production: bool = False) -> str:
    """One paragraph: what failed and what to do about it."""
    from botocore.exceptions import (ClientError, ConnectionError as BotoConnectionError, NoCredentialsError,
                                     PartialCredentialsError)

    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return NO_CREDENTIALS
    if isinstance(exc, BotoConnectionError):
        return UNREACHABLE.format(endpoint=mt.endpoint(production))
    if isinstance(exc, ClientError):
        code = mt.error_code(exc)
        if code in REFUSED_CODES:
            return REFUSED_CREDENTIALS.format(code=code, site=REQUESTER_SITE[production])
        return f"MTurk refused the request ({code}): {mt.error_message(exc)}"
    if isinstance(exc, ValueError):  # BatchError and friends already speak to the user
        return str(exc)
    return f"{type(exc).__name__}: {exc}"
