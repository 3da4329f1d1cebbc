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
every error body keeps DRF's shape: ``{"detail": ...}`` or field errors. What fails before
DRF runs (a body over Django's limits, a path no route matches, a 500) gets the same shape
from this module's handler400/404/500 (labeling/urls.py).
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


# --------------------------------------------------------------------------- before DRF
# What fails before a view of DRF runs (the URL resolver's 404, Django's request limits: a
# body over DATA_UPLOAD_MAX_MEMORY_SIZE, too many fields) or outside its handling (a bug: a
# 500) is answered by Django's handler400/404/500 (labeling/urls.py). Under /api/ they answer
# JSON in DRF's shape, ``{"detail": ...}``, saying what is wrong; elsewhere Django's pages.

def _is_api(request) -> bool:
    return request.path.startswith("/api/")


def _mb(n: int) -> str:
    return f"{n / (1024 * 1024):.1f}".rstrip("0").rstrip(".")


def bad_request_detail(exception) -> str:
    from django.conf import settings
    from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent

    if isinstance(exception, RequestDataTooBig):
        return (f"the body is larger than {_mb(settings.DATA_UPLOAD_MAX_MEMORY_SIZE)} MB "
                "(DATA_UPLOAD_MAX_MEMORY_SIZE); send fewer items per request")
    if isinstance(exception, TooManyFieldsSent):
        return f"too many fields: at most {settings.DATA_UPLOAD_MAX_NUMBER_FIELDS}"
    if isinstance(exception, TooManyFilesSent):
        return f"too many files: at most {settings.DATA_UPLOAD_MAX_NUMBER_FILES}"
    return "bad request: " + (str(exception) or type(exception).__name__)


def bad_request(request, exception=None):
    """``handler400``: Django's SuspiciousOperation and its request limits."""
    from django.http import JsonResponse
    from django.views import defaults

    if _is_api(request):
        return JsonResponse({"detail": bad_request_detail(exception)}, status=400)
    return defaults.bad_request(request, exception)


def not_found(request, exception=None):
    """``handler404``: a path that no route matches (an id too long to be one, a typo)."""
    from django.http import JsonResponse
    from django.views import defaults

    if _is_api(request):
        return JsonResponse({"detail": f"not found: no API route or object at {request.path}; "
                                       "the routes are listed at /api/"}, status=404)
    return defaults.page_not_found(request, exception)


def server_error(request):
    """``handler500``: a bug (Django has logged it with its traceback)."""
    from django.http import JsonResponse
    from django.views import defaults

    if _is_api(request):
        return JsonResponse({"detail": "internal error: the server failed on this request "
                                       "(a bug; it is logged)"}, status=500)
    return defaults.server_error(request)
