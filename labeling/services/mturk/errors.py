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


NO_CREDENTIALS_FIX = (
    "Retag has no AWS credentials for Mechanical Turk. Set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
    "(an IAM user of the AWS account linked to your MTurk requester account, with the "
    "AmazonMechanicalTurkFullAccess policy) in the environment of the web server and the worker, and restart "
    "them.")
# Only while the batch can still be exported (a draft): once HITs exist, a CSV would make them twice.
NO_CREDENTIALS = NO_CREDENTIALS_FIX + " Without credentials, use “Export CSV” and upload the batch on the requester website."
REFUSED_CREDENTIALS = (
    "AWS refused the credentials ({code}): check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, and that this "
    "AWS account is linked to an MTurk requester account ({site}).")
UNREACHABLE_FIX = (
    "Retag could not reach Mechanical Turk at {endpoint}: this machine has no connection to it (offline, a "
    "firewall or a proxy). Try again when it is online")
UNREACHABLE = UNREACHABLE_FIX + ", or use “Export CSV” and upload the batch on the requester website."
REFUSED_CODES = {"UnrecognizedClientException", "InvalidClientTokenId", "InvalidAccessKeyId",
                 "SignatureDoesNotMatch", "AccessDeniedException", "AccessDenied", "ExpiredTokenException"}
REQUESTER_SITE = {False: "https://requestersandbox.mturk.com", True: "https://requester.mturk.com"}


def explain(exc: BaseException, *, production: bool = False, exportable: bool = True) -> str:
    """One paragraph: what failed and what to do about it. ``exportable``: the batch is still a
    draft, so the CSV export is offered as the way around (not once HITs exist on MTurk)."""
    from botocore.exceptions import (ClientError, ConnectionError as BotoConnectionError, NoCredentialsError,
                                     PartialCredentialsError)

    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return NO_CREDENTIALS if exportable else NO_CREDENTIALS_FIX
    if isinstance(exc, BotoConnectionError):
        return (UNREACHABLE if exportable else UNREACHABLE_FIX + ".").format(endpoint=mt.endpoint(production))
    if isinstance(exc, ClientError):
        code = mt.error_code(exc)
        if code in REFUSED_CODES:
            return REFUSED_CREDENTIALS.format(code=code, site=REQUESTER_SITE[production])
        return f"MTurk refused the request ({code}): {mt.error_message(exc)}"
    if isinstance(exc, ValueError):  # BatchError and friends already speak to the user
        return str(exc)
    return f"{type(exc).__name__}: {exc}"
