"""One place where the services' exceptions become HTTP answers (REST_FRAMEWORK's
EXCEPTION_HANDLER), so no API view repeats a try/except for them.

    RetagConflict            409  {"detail", "current": the annotation as it is now}
    RunConfigError           400  {"detail", "errors": {field: message}}
    state errors             409  {"detail"}  (RunStateError, SuspectResolved)
    other service errors     400  {"detail"}  (the services say "bad input" with ValueError;
                                               their own errors subclass it)
    ObjectDoesNotExist       404  {"detail"}
    MTurk unreachable/refused 502 {"detail": what MTurk said}

Anything else is DRF's own handling (its APIExceptions, Http404, PermissionDenied), so
every error body keeps DRF's shape: ``{"detail": ...}`` or field errors.
"""
from __future__ import annotations

from botocore.exceptions import BotoCoreError, ClientError
from django.core.exceptions import ObjectDoesNotExist
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import exception_handler

from ..services.mturk.client import MTurkError, error_message
from ..services.retag import RetagConflict
from ..services.runs import RunConfigError, RunStateError
from ..services.suspects import SuspectResolved


def _conflict_body(conflict: RetagConflict) -> dict:
    from .serializers import RetagConflictSerializer

    return RetagConflictSerializer.from_conflict(conflict)


def answer(exc: Exception) -> Response | None:
    """The response for a service exception, or None when DRF should handle ``exc``."""
    if isinstance(exc, RetagConflict):
        return Response(_conflict_body(exc), status=status.HTTP_409_CONFLICT)
    if isinstance(exc, RunConfigError):
        return Response({"detail": str(exc), "errors": exc.errors}, status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, (RunStateError, SuspectResolved)):
        return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
    if isinstance(exc, ValueError):
        return Response({"detail": str(exc)}, status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, ObjectDoesNotExist):
        return Response({"detail": str(exc) or "Not found."}, status=status.HTTP_404_NOT_FOUND)
    if isinstance(exc, (MTurkError, BotoCoreError, ClientError)):
        return Response({"detail": error_message(exc)}, status=status.HTTP_502_BAD_GATEWAY)
    return None


def handle(exc, context):
    response = answer(exc)
    return response if response is not None else exception_handler(exc, context)
